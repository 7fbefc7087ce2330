"""The plan: what a migration of one StatefulSet will do, built once by the read-only phase.

`gather` reads the StatefulSet and every object it involves (one snapshot); `build_plan` turns
that snapshot into a frozen `Plan`, which `preflight` prints, `sts` executes and saves in the
working directory, and `-o json` serialises. A resumed run loads the plan from there, because by
then the live objects are half migrated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from kubectl_csi_migrate.errors import NotFoundError
from kubectl_csi_migrate.kube.client import Kube
from kubectl_csi_migrate.migration import translate

Obj = dict[str, Any]

MIGRATE = "migrate"
SKIP_CSI = "skip (already CSI)"
SKIP_OTHER = "skip (not vSphere)"


@dataclass(frozen=True)
class VolumePlan:
    """One PVC of one replica."""

    template: str
    """The volumeClaimTemplate it comes from."""
    ordinal: int
    """The replica (pod `<sts>-<ordinal>`)."""
    pvc: str
    """PVC name, `<template>-<sts>-<ordinal>`; unchanged by the migration."""
    pv: str
    """PV name; the CSI PV gets the same name."""
    action: str
    """MIGRATE, SKIP_CSI or SKIP_OTHER."""
    vmdk: str = ""
    """In-tree `[datastore] path.vmdk`; the disk the CSI PV will point at."""
    fcd_id: str = ""
    """The First Class Disk id when known before the run (already CSI, or already an FCD)."""
    reclaim_policy: str = "Delete"
    """The PV's original reclaim policy, restored at the end."""
    capacity: str = ""
    storage_class: str = ""
    """The PVC's class before the migration."""
    datacenter: str = ""
    """The vCenter datacenter holding the disk, as preflight found it; the run registers the
    disk there (not in the configuration's first datacenter)."""


@dataclass(frozen=True)
class Plan:
    """A whole migration."""

    context: str
    server: str
    namespace: str
    statefulset: str
    uid: str
    """The StatefulSet's uid when planned: a resumed run checks it is the same one."""
    replicas: int
    strategy: str
    """"rolling" (one replica at a time, no downtime) or "offline" (scale to zero)."""
    csi_class: str
    migrate_templates: tuple[str, ...]
    volumes: tuple[VolumePlan, ...] = field(default_factory=tuple)
    topology_keys: tuple[str, ...] = ()
    """The zone/region keys the CSI driver reports (CSINode); the new PVs' node affinity uses them."""

    def with_datacenters(self, found: dict[str, str]) -> Plan:
        """This plan with each disk's datacenter (by VMDK path) recorded."""
        volumes = tuple(replace(v, datacenter=found.get(v.vmdk, v.datacenter)) for v in self.volumes)
        return replace(self, volumes=volumes)

    def to_migrate(self, ordinal: int | None = None) -> list[VolumePlan]:
        return [v for v in self.volumes if v.action == MIGRATE and (ordinal is None or v.ordinal == ordinal)]

    def ordinals_descending(self) -> list[int]:
        return sorted({v.ordinal for v in self.to_migrate()}, reverse=True)

    def pod_name(self, ordinal: int) -> str:
        return f"{self.statefulset}-{ordinal}"

    def to_dict(self) -> Obj:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Obj) -> Plan:
        volumes = tuple(VolumePlan(**v) for v in data.get("volumes", []))
        fields = {k: v for k, v in data.items() if k != "volumes"}
        fields["migrate_templates"] = tuple(fields.get("migrate_templates", ()))
        fields["topology_keys"] = tuple(fields.get("topology_keys", ()))
        return cls(**fields, volumes=volumes)


@dataclass
class Snapshot:
    """The live objects of one StatefulSet, read once."""

    namespace: str
    name: str
    statefulset: Obj
    pods: dict[str, Obj]
    pvcs: dict[str, Obj]
    pvs: dict[str, Obj]
    missing_pvcs: list[str]

    @property
    def replicas(self) -> int:
        return int(self.statefulset["spec"].get("replicas", 1))

    def templates(self) -> list[Obj]:
        return list(self.statefulset["spec"].get("volumeClaimTemplates") or [])


def gather(kube: Kube, namespace: str, name: str) -> Snapshot:
    """Read the StatefulSet, its pods, its PVCs (by template and ordinal) and their PVs."""
    sts = kube.get("StatefulSet", name, namespace)
    if sts is None:
        raise NotFoundError(f'statefulsets.apps "{name}" not found in namespace "{namespace}"')
    replicas = int(sts["spec"].get("replicas", 1))
    pods = {
        p["metadata"]["name"]: p
        for p in kube.items("Pod", namespace)
        if _ordinal(p["metadata"]["name"], name) is not None
    }
    all_pvcs = {p["metadata"]["name"]: p for p in kube.items("PersistentVolumeClaim", namespace)}
    pvcs: dict[str, Obj] = {}
    missing: list[str] = []
    for template in sts["spec"].get("volumeClaimTemplates") or []:
        for ordinal in range(replicas):
            pvc_name = translate.pvc_name(template["metadata"]["name"], name, ordinal)
            if pvc_name in all_pvcs:
                pvcs[pvc_name] = all_pvcs[pvc_name]
            else:
                missing.append(pvc_name)
    pvs: dict[str, Obj] = {}
    for pvc in pvcs.values():
        volume = pvc["spec"].get("volumeName")
        if volume:
            pv = kube.get("PersistentVolume", volume)
            if pv is not None:
                pvs[volume] = pv
    return Snapshot(namespace, name, sts, pods, pvcs, pvs, missing)


def _ordinal(pod_name: str, sts_name: str) -> int | None:
    prefix = f"{sts_name}-"
    rest = pod_name[len(prefix) :] if pod_name.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None


def build_plan(
    snapshot: Snapshot,
    context: str,
    server: str,
    csi_class: str,
    intree_class: str | None,
    strategy: str,
    topology_keys: tuple[str, ...] = (),
) -> Plan:
    """Decide, per PVC, whether it is migrated or left alone."""
    volumes: list[VolumePlan] = []
    migrate_templates: list[str] = []
    for template in snapshot.templates():
        tname = template["metadata"]["name"]
        template_class = translate.storage_class_of_template(template) or ""
        template_migrates = False
        for ordinal in range(snapshot.replicas):
            pvc_name = translate.pvc_name(tname, snapshot.name, ordinal)
            pvc = snapshot.pvcs.get(pvc_name)
            if pvc is None:
                continue
            pv_name = pvc["spec"].get("volumeName", "")
            pv = snapshot.pvs.get(pv_name)
            pvc_class = pvc["spec"].get("storageClassName") or template_class
            common: Obj = {
                "template": tname,
                "ordinal": ordinal,
                "pvc": pvc_name,
                "pv": pv_name,
                "storage_class": pvc_class,
            }
            if pv is None:
                volumes.append(VolumePlan(**common, action=SKIP_OTHER))
                continue
            common["reclaim_policy"] = translate.reclaim_policy_of(pv)
            common["capacity"] = pv["spec"].get("capacity", {}).get("storage", "")
            if translate.is_csi_vsphere_pv(pv):
                volumes.append(VolumePlan(**common, action=SKIP_CSI, fcd_id=pv["spec"]["csi"]["volumeHandle"]))
            elif translate.is_intree_vsphere_pv(pv) and (intree_class is None or pvc_class == intree_class):
                template_migrates = True
                vmdk = pv["spec"]["vsphereVolume"]["volumePath"]
                volumes.append(VolumePlan(**common, action=MIGRATE, vmdk=vmdk))
            else:
                volumes.append(VolumePlan(**common, action=SKIP_OTHER))
        if template_migrates:
            migrate_templates.append(tname)
    return Plan(
        context=context,
        server=server,
        namespace=snapshot.namespace,
        statefulset=snapshot.name,
        uid=snapshot.statefulset["metadata"]["uid"],
        replicas=snapshot.replicas,
        strategy=strategy,
        csi_class=csi_class,
        migrate_templates=tuple(migrate_templates),
        volumes=tuple(volumes),
        topology_keys=topology_keys,
    )


def gather_all(kube: Kube, namespace: str | None) -> list[Snapshot]:
    """Snapshots of every StatefulSet in a namespace (or all), from four list requests: the
    survey reads many objects, so it lists once instead of getting one by one."""
    stss = kube.items("StatefulSet", namespace)
    pods: dict[str, dict[str, Obj]] = {}  # namespace -> name -> pod
    for o in kube.items("Pod", namespace):
        pods.setdefault(o["metadata"]["namespace"], {})[o["metadata"]["name"]] = o
    pvcs: dict[tuple[str, str], Obj] = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o for o in kube.items("PersistentVolumeClaim", namespace)
    }
    pvs = {o["metadata"]["name"]: o for o in kube.items("PersistentVolume")}
    snapshots = []
    for sts in stss:
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        replicas = int(sts["spec"].get("replicas", 1))
        snap_pvcs: dict[str, Obj] = {}
        missing: list[str] = []
        for template in sts["spec"].get("volumeClaimTemplates") or []:
            for ordinal in range(replicas):
                pvc_name = translate.pvc_name(template["metadata"]["name"], name, ordinal)
                if (ns, pvc_name) in pvcs:
                    snap_pvcs[pvc_name] = pvcs[(ns, pvc_name)]
                else:
                    missing.append(pvc_name)
        snap_pvs = {
            pvc["spec"]["volumeName"]: pvs[pvc["spec"]["volumeName"]]
            for pvc in snap_pvcs.values()
            if pvc["spec"].get("volumeName") in pvs
        }
        snap_pods = {
            pod_name: pod for pod_name, pod in pods.get(ns, {}).items() if _ordinal(pod_name, name) is not None
        }
        snapshots.append(Snapshot(ns, name, sts, snap_pods, snap_pvcs, snap_pvs, missing))
    return snapshots
