"""The plan: what a migration of one owner will do, built once by the read-only phase.

An owner is what stops while its claims move: a StatefulSet (`sts`: its pods evicted one at a
time, or scaled to zero), a Deployment or a ReplicaSet (`deploy`: scaled to zero and back), or a
claim on its own (`pvc`: the bare pod mounting it, if any, evicted and created again).

`gather` reads the owner and every object it involves (one snapshot); `build_plan` turns that
snapshot into a frozen `Plan`, which `preflight` prints, the run executes and saves in the
working directory, and `-o json` serialises. A resumed run loads the plan from there, because by
then the live objects are half migrated.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum

from kubectl_csi_migrate.errors import NotFoundError
from kubectl_csi_migrate.kube import predicates as p
from kubectl_csi_migrate.kube.client import Kube
from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration import translate

MIGRATE = "migrate"
SKIP_CSI = "skip (already CSI)"
SKIP_OTHER = "skip (not vSphere)"


class OwnerKind(StrEnum):
    """The kinds of owner a run migrates the volumes of (their API kinds)."""

    STATEFULSET = "StatefulSet"
    DEPLOYMENT = "Deployment"
    REPLICASET = "ReplicaSet"
    CLAIM = "PersistentVolumeClaim"
    """A claim on its own (`pvc`), with the bare pod mounting it if any."""


class Strategy(StrEnum):
    ROLLING = "rolling"
    """One replica at a time, no downtime (a StatefulSet's)."""
    OFFLINE = "offline"
    """The owner scaled to zero, its volumes moved side by side."""


STATEFULSET, DEPLOYMENT, REPLICASET, CLAIM = (
    OwnerKind.STATEFULSET,
    OwnerKind.DEPLOYMENT,
    OwnerKind.REPLICASET,
    OwnerKind.CLAIM,
)
COMMAND: dict[str, str] = {STATEFULSET: "sts", DEPLOYMENT: "deploy", REPLICASET: "deploy", CLAIM: "pvc"}
"""The command that migrates each kind of owner."""
_REF: dict[str, str] = {
    STATEFULSET: "statefulset.apps",
    DEPLOYMENT: "deployment.apps",
    REPLICASET: "replicaset.apps",
    CLAIM: "pvc",
}
_WORD: dict[str, str] = {STATEFULSET: "statefulset", DEPLOYMENT: "deployment", REPLICASET: "replicaset", CLAIM: "pvc"}


def run_key(kind: str, name: str) -> str:
    """The run's key, which names it in the cluster and on disk (its Lease and its record
    `csi-migrate-<key>`, its working directory `csi-migrate-<context>-<namespace>-<key>`):
    `<kind>-<name>` for every kind (`statefulset-web`, `deployment-web`, `replicaset-web`,
    `pvc-web`). No kind's word followed by `-` begins another's, so two owners never share a key,
    whatever `-` and `.` their names hold."""
    return f"{_WORD[kind]}-{name}"


def legacy_key(kind: str, name: str) -> str | None:
    """The key an earlier release gave the run, where it differs: a StatefulSet's bare name.
    That key may be another owner's (StatefulSet `deployment-web`'s is Deployment `web`'s, and
    StatefulSet `statefulset-web`'s is StatefulSet `web`'s): what is found under it is this
    owner's run only when the plan it stores names this kind and name."""
    return name if kind == STATEFULSET else None


def fit_name(name: str, limit: int) -> str:
    """`name`, or when longer than `limit`, its start and a hash of the whole (two long names
    that share their start still differ), ending in a letter or digit, as names must."""
    if len(name) <= limit:
        return name
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: limit - len(digest) - 1].rstrip('.-_')}-{digest}"


def object_name(key: str) -> str:
    """The name of the run `key`'s Lease and record (ConfigMap) in the owner's namespace:
    `csi-migrate-<key>`, a DNS subdomain of at most 253 characters."""
    return fit_name(f"csi-migrate-{key}", 253)


def label_value(key: str) -> str:
    """The run `key` as a label value (at most 63 characters)."""
    return fit_name(key, 63)


def owner_id(plan: Obj) -> tuple[str, str, str, str]:
    """(server, namespace, kind, name) of the owner a stored plan (run.json's, a record's) is a
    run of; an earlier release's plan of a StatefulSet names it in `statefulset`."""
    name = plan.get("name") or plan.get("statefulset") or ""
    return (plan.get("server", ""), plan.get("namespace", ""), plan.get("kind") or STATEFULSET, name)


def word(kind: str) -> str:
    """How messages name a kind: `statefulset`, `deployment`, `replicaset`, `pvc`."""
    return _WORD[kind]


def ref(kind: str, name: str) -> str:
    """kubectl's name for the owner: `statefulset.apps/web`, `pvc/data`."""
    return f"{_REF[kind]}/{name}"


def parse_ref(text: str) -> tuple[str, str]:
    """`NAME` (a StatefulSet) or `KIND/NAME` (sts, deploy, rs, pvc, as kubectl spells them)."""
    from kubectl_csi_migrate.errors import UsageError

    if "/" not in text:
        return STATEFULSET, text
    word, _, name = text.partition("/")
    kinds = {
        STATEFULSET: ("sts", "statefulset", "statefulsets", "statefulset.apps"),
        DEPLOYMENT: ("deploy", "deployment", "deployments", "deployment.apps"),
        REPLICASET: ("rs", "replicaset", "replicasets", "replicaset.apps"),
        CLAIM: ("pvc", "persistentvolumeclaim", "persistentvolumeclaims"),
    }
    for kind, words in kinds.items():
        if word.lower() in words and name:
            return kind, name
    raise UsageError(f"{text!r}: expected NAME (a StatefulSet), sts/NAME, deploy/NAME, rs/NAME or pvc/NAME")


@dataclass(frozen=True)
class VolumePlan:
    """One PVC of one replica."""

    template: str
    """The volumeClaimTemplate it comes from (a StatefulSet's; else the pod's volume name)."""
    ordinal: int
    """The replica (pod `<sts>-<ordinal>`); 0 for the other owners."""
    pvc: str
    """PVC name (`<template>-<sts>-<ordinal>` for a StatefulSet); unchanged by the migration."""
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
    """A whole migration of one owner."""

    context: str
    server: str
    namespace: str
    name: str
    """The owner's name (a StatefulSet, Deployment, ReplicaSet, or the claim)."""
    uid: str
    """The owner's uid when planned: a resumed run checks it is the same one."""
    replicas: int
    """The owner's replica count, given back at the end (a claim: 1 when a pod mounts it)."""
    strategy: Strategy
    """"rolling" (one replica at a time, no downtime) or "offline" (scale to zero). A Deployment
    is always offline (its pods share the claims); a claim's pod is stopped while it moves."""
    csi_class: str
    migrate_templates: tuple[str, ...]
    volumes: tuple[VolumePlan, ...] = field(default_factory=tuple)
    topology_keys: tuple[str, ...] = ()
    """The zone/region keys the CSI driver reports (CSINode); the new PVs' node affinity uses them."""
    kind: OwnerKind = STATEFULSET
    pod: str = ""
    """A claim's: the bare pod mounting it, stopped while it moves and created again after."""
    key: str = ""
    """The run's key (`run_key`: its Lease, its record, its default working directory), fixed
    when the run starts: a run of an earlier release keeps the key it had (`legacy_key`: a
    plan stored without one is such a run)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", OwnerKind(self.kind))  # as read back from a record: a str
        object.__setattr__(self, "strategy", Strategy(self.strategy))
        if not self.key:
            object.__setattr__(self, "key", run_key(self.kind, self.name))

    @property
    def owner(self) -> tuple[str, str, str, str]:
        """(server, namespace, kind, name): the owner this is a run of, as a run found under a
        key (a Lease, a record, a working directory) is checked to be the one asked about."""
        return (self.server, self.namespace, self.kind, self.name)

    @property
    def ref(self) -> str:
        return ref(self.kind, self.name)

    @property
    def command(self) -> str:
        """How this run is started again: `sts web`, `deploy api`, `pvc data`."""
        return f"{COMMAND[self.kind]} {self.name}"

    @property
    def arg(self) -> str:
        """The owner as `status` and `rollback` take it: `web` (a StatefulSet), `deploy/api`, `pvc/data`."""
        short = {DEPLOYMENT: "deploy", REPLICASET: "rs", CLAIM: "pvc"}
        return self.name if self.kind == STATEFULSET else f"{short[self.kind]}/{self.name}"

    @property
    def what(self) -> str:
        """The owner in a sentence: `statefulset ns/web`."""
        return f"{word(self.kind)} {self.namespace}/{self.name}"

    def with_datacenters(self, found: dict[str, str]) -> Plan:
        """This plan with each disk's datacenter (by VMDK path) recorded."""
        volumes = tuple(replace(v, datacenter=found.get(v.vmdk, v.datacenter)) for v in self.volumes)
        return replace(self, volumes=volumes)

    def to_migrate(self, ordinal: int | None = None) -> list[VolumePlan]:
        return [v for v in self.volumes if v.action == MIGRATE and (ordinal is None or v.ordinal == ordinal)]

    def ordinals_descending(self) -> list[int]:
        return sorted({v.ordinal for v in self.to_migrate()}, reverse=True)

    def pod_name(self, ordinal: int) -> str:
        return self.pod if self.kind == CLAIM else f"{self.name}-{ordinal}"

    def to_dict(self) -> Obj:
        data = asdict(self)
        data["kind"], data["strategy"] = self.kind.value, self.strategy.value  # plain text on disk
        if self.kind == STATEFULSET:
            data["statefulset"] = self.name  # as the first releases wrote it
        return data

    @classmethod
    def from_dict(cls, data: Obj) -> Plan:
        volumes = tuple(VolumePlan(**v) for v in data.get("volumes", []))
        fields = {k: v for k, v in data.items() if k not in ("volumes", "statefulset")}
        fields.setdefault("name", data.get("statefulset", ""))
        if not fields.get("key"):  # an earlier release's run: the key it was started under
            kind = fields.get("kind", STATEFULSET)
            fields["key"] = legacy_key(kind, fields["name"]) or run_key(kind, fields["name"])
        fields["migrate_templates"] = tuple(fields.get("migrate_templates", ()))
        fields["topology_keys"] = tuple(fields.get("topology_keys", ()))
        return cls(**fields, volumes=volumes)


@dataclass
class Snapshot:
    """The live objects of one owner, read once."""

    namespace: str
    name: str
    owner: Obj
    """The StatefulSet, Deployment or ReplicaSet; for a claim, the claim itself."""
    pods: dict[str, Obj]
    """The pods that stop while the claims move (a StatefulSet's by ordinal, a Deployment's by
    its selector, the bare pod mounting a claim)."""
    pvcs: dict[str, Obj]
    pvs: dict[str, Obj]
    missing_pvcs: list[str]
    kind: str = STATEFULSET

    @property
    def replicas(self) -> int:
        if self.kind == CLAIM:
            return len(self.pods)
        return int(self.owner["spec"].get("replicas", 1))

    def templates(self) -> list[Obj]:
        if self.kind != STATEFULSET:
            return []
        return list(self.owner["spec"].get("volumeClaimTemplates") or [])


def claims_of_template(template: Obj) -> list[tuple[str, str]]:
    """(volume name, claim name) of each claim a pod template (or pod) mounts."""
    found = []
    for volume in (template.get("spec") or {}).get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim:
            found.append((volume["name"], claim))
    return found


def controller_of(obj: Obj) -> Obj | None:
    return next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)


def gather(kube: Kube, namespace: str, name: str, kind: str = STATEFULSET) -> Snapshot:
    """Read the owner, its pods, its PVCs and their PVs."""
    if kind == CLAIM:
        return _gather_claim(kube, namespace, name)
    if kind in (DEPLOYMENT, REPLICASET):
        return _gather_deployment(kube, namespace, name, kind)
    sts = kube.get("StatefulSet", name, namespace)
    if sts is None:
        raise NotFoundError(f'statefulsets.apps "{name}" not found in namespace "{namespace}"')
    replicas = int(sts["spec"].get("replicas", 1))
    pods = {
        pod["metadata"]["name"]: pod
        for pod in kube.items_once("Pod", namespace)
        if _ordinal(pod["metadata"]["name"], name) is not None
    }
    all_pvcs = {pvc["metadata"]["name"]: pvc for pvc in kube.items("PersistentVolumeClaim", namespace)}
    pvcs: dict[str, Obj] = {}
    missing: list[str] = []
    for template in sts["spec"].get("volumeClaimTemplates") or []:
        for ordinal in range(replicas):
            pvc_name = translate.pvc_name(template["metadata"]["name"], name, ordinal)
            if pvc_name in all_pvcs:
                pvcs[pvc_name] = all_pvcs[pvc_name]
            else:
                missing.append(pvc_name)
    return Snapshot(namespace, name, sts, pods, pvcs, _pvs_of(kube, pvcs), missing)


def _pvs_of(kube: Kube, pvcs: dict[str, Obj]) -> dict[str, Obj]:
    """The claims' PVs, from the command's PV cache (the run keeps it: one list for preflight
    and the run, not a read per claim)."""
    cached = {pv["metadata"]["name"]: pv for pv in kube.cache("PersistentVolume").items()}
    names = (pvc["spec"].get("volumeName") for pvc in pvcs.values())
    return {name: copy.deepcopy(cached[name]) for name in names if name and name in cached}


def _gather_deployment(kube: Kube, namespace: str, name: str, kind: str) -> Snapshot:
    owner = kube.get(kind, name, namespace)
    if owner is None:
        plural = "deployments.apps" if kind == DEPLOYMENT else "replicasets.apps"
        raise NotFoundError(f'{plural} "{name}" not found in namespace "{namespace}"')
    selector = owner["spec"].get("selector")  # apps/v1 requires a non-empty one
    pods = {
        pod["metadata"]["name"]: pod
        for pod in kube.items_once("Pod", namespace)
        if p.selector_matches(selector, pod["metadata"].get("labels") or {})
    }
    pvcs: dict[str, Obj] = {}
    missing: list[str] = []
    for _, claim in claims_of_template(owner["spec"]["template"]):
        pvc = kube.get("PersistentVolumeClaim", claim, namespace)
        if pvc is None:
            missing.append(claim)
        else:
            pvcs[claim] = pvc
    return Snapshot(namespace, name, owner, pods, pvcs, _pvs_of(kube, pvcs), missing, kind)


def _gather_claim(kube: Kube, namespace: str, name: str) -> Snapshot:
    pvc = kube.get("PersistentVolumeClaim", name, namespace)
    if pvc is None:
        raise NotFoundError(f'persistentvolumeclaims "{name}" not found in namespace "{namespace}"')
    pods = {
        pod["metadata"]["name"]: pod
        for pod in kube.items_once("Pod", namespace)
        if name in {claim for _, claim in claims_of_template(pod)}
    }
    return Snapshot(namespace, name, pvc, pods, {name: pvc}, _pvs_of(kube, {name: pvc}), [], CLAIM)


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
    if snapshot.kind == STATEFULSET:
        for template in snapshot.templates():
            tname = template["metadata"]["name"]
            template_class = translate.storage_class_of_template(template) or ""
            template_migrates = False
            for ordinal in range(snapshot.replicas):
                pvc_name = translate.pvc_name(tname, snapshot.name, ordinal)
                if pvc_name in snapshot.pvcs:
                    v = _volume(snapshot, pvc_name, tname, ordinal, template_class, intree_class)
                    volumes.append(v)
                    template_migrates = template_migrates or v.action == MIGRATE
            if template_migrates:
                migrate_templates.append(tname)
    else:
        strategy = "offline" if snapshot.kind != CLAIM else "rolling"
        template = snapshot.owner.get("spec", {}).get("template", {})
        names = {claim: volume for volume, claim in claims_of_template(template)}
        for pvc_name in snapshot.pvcs:
            volumes.append(_volume(snapshot, pvc_name, names.get(pvc_name, ""), 0, "", intree_class))
    return Plan(
        context=context,
        server=server,
        namespace=snapshot.namespace,
        name=snapshot.name,
        uid=snapshot.owner["metadata"]["uid"],
        replicas=snapshot.replicas,
        strategy=Strategy(strategy),
        csi_class=csi_class,
        migrate_templates=tuple(migrate_templates),
        volumes=tuple(volumes),
        topology_keys=topology_keys,
        kind=OwnerKind(snapshot.kind),
        pod=next(iter(snapshot.pods), "") if snapshot.kind == CLAIM else "",
    )


def _volume(
    snapshot: Snapshot, pvc_name: str, template: str, ordinal: int, template_class: str, intree_class: str | None
) -> VolumePlan:
    pvc = snapshot.pvcs[pvc_name]
    pv_name = pvc["spec"].get("volumeName", "")
    pv = snapshot.pvs.get(pv_name)
    pvc_class = pvc["spec"].get("storageClassName") or template_class
    common: Obj = {"template": template, "ordinal": ordinal, "pvc": pvc_name, "pv": pv_name, "storage_class": pvc_class}
    if pv is None:
        return VolumePlan(**common, action=SKIP_OTHER)
    common["reclaim_policy"] = translate.reclaim_policy_of(pv)
    common["capacity"] = pv["spec"].get("capacity", {}).get("storage", "")
    if translate.is_csi_vsphere_pv(pv):
        return VolumePlan(**common, action=SKIP_CSI, fcd_id=pv["spec"]["csi"]["volumeHandle"])
    if translate.is_intree_vsphere_pv(pv) and (intree_class is None or pvc_class == intree_class):
        return VolumePlan(**common, action=MIGRATE, vmdk=pv["spec"]["vsphereVolume"]["volumePath"])
    return VolumePlan(**common, action=SKIP_OTHER)


def gather_all(kube: Kube, namespace: str | None) -> list[Snapshot]:
    """Snapshots of every owner in a namespace (or all): each StatefulSet, each Deployment and
    ReplicaSet of its own (not a Deployment's) mounting a claim, and each claim no controller
    mounts. From six list requests: the survey reads many objects, so it lists once instead of
    getting one by one."""
    stss = kube.items("StatefulSet", namespace)
    pods: dict[str, dict[str, Obj]] = {}  # namespace -> name -> pod
    for o in kube.items("Pod", namespace):
        pods.setdefault(o["metadata"]["namespace"], {})[o["metadata"]["name"]] = o
    pvcs: dict[tuple[str, str], Obj] = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o for o in kube.items("PersistentVolumeClaim", namespace)
    }
    pvs = {o["metadata"]["name"]: o for o in kube.items("PersistentVolume")}

    def pvs_of(claims: dict[str, Obj]) -> dict[str, Obj]:
        names = (pvc["spec"].get("volumeName") for pvc in claims.values())
        return {name: pvs[name] for name in names if name in pvs}

    snapshots = []
    taken: set[tuple[str, str]] = set()  # claims a StatefulSet or Deployment owns
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
                    taken.add((ns, pvc_name))
                else:
                    missing.append(pvc_name)
        snap_pods = {
            pod_name: pod for pod_name, pod in pods.get(ns, {}).items() if _ordinal(pod_name, name) is not None
        }
        snapshots.append(Snapshot(ns, name, sts, snap_pods, snap_pvcs, pvs_of(snap_pvcs), missing))
    for kind in (DEPLOYMENT, REPLICASET):
        for owner in kube.items(kind, namespace):
            ns, name = owner["metadata"]["namespace"], owner["metadata"]["name"]
            claims = [claim for _, claim in claims_of_template(owner["spec"]["template"])]
            if not claims or (kind == REPLICASET and controller_of(owner)):
                continue  # no claim, or a Deployment's ReplicaSet (its Deployment is the owner)
            taken |= {(ns, c) for c in claims}
            snap_pvcs = {c: pvcs[(ns, c)] for c in claims if (ns, c) in pvcs}
            selector = owner["spec"].get("selector")
            snap_pods = {
                n: pod
                for n, pod in pods.get(ns, {}).items()
                if p.selector_matches(selector, pod["metadata"].get("labels") or {})
            }
            missing = [c for c in claims if c not in snap_pvcs]
            snapshots.append(Snapshot(ns, name, owner, snap_pods, snap_pvcs, pvs_of(snap_pvcs), missing, kind))
    for (ns, name), pvc in sorted(pvcs.items()):
        if (ns, name) in taken:
            continue
        users = {n: pod for n, pod in pods.get(ns, {}).items() if name in {c for _, c in claims_of_template(pod)}}
        snapshots.append(Snapshot(ns, name, pvc, users, {name: pvc}, pvs_of({name: pvc}), [], CLAIM))
    return snapshots
