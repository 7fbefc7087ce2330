"""Create a StatefulSet the way the in-tree vSphere provisioner would have left it.

Per replica and in-tree template: a thin VMDK under `kubevols/` in the simulator with a marker
written into its data, an in-tree PV (`spec.vsphereVolume`, class `standard`, reclaim Delete,
the provisioner's annotations) and its PVC `<template>-<sts>-<ordinal>` bound to it. Optional
templates on CSI get an FCD and a static CSI PV. Then the StatefulSet, and a wait for Ready.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from testenv import api, cluster, objects, vc


@dataclass
class Volume:
    template: str
    ordinal: int
    pvc: str
    pv: str
    vmdk: str
    marker: bytes
    fcd_id: str = ""
    csi: bool = False


@dataclass
class Scenario:
    name: str
    namespace: str
    replicas: int
    volumes: list[Volume] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "replicas": self.replicas,
            "volumes": [{**v.__dict__, "marker": v.marker.decode()} for v in self.volumes],
        }


def marker_for(namespace: str, pvc: str) -> bytes:
    return f"csi-migrate-marker:{namespace}/{pvc}:{uuid.uuid4().hex}".encode()


def in_tree_pv(name: str, vmdk: str, namespace: str, pvc: str, size: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "annotations": {
                "kubernetes.io/createdby": "vsphere-volume-dynamic-provisioner",
                "pv.kubernetes.io/bound-by-controller": "yes",
                "pv.kubernetes.io/provisioned-by": objects.INTREE_PROVISIONER,
            },
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": size},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": namespace,
                "name": pvc,
            },
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "standard",
            "volumeMode": "Filesystem",
            "vsphereVolume": {"volumePath": vmdk, "fsType": "ext4"},
        },
    }


def csi_pv(name: str, fcd_id: str, namespace: str, pvc: str, size: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "annotations": {"pv.kubernetes.io/provisioned-by": objects.CSI_DRIVER},
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": size},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": namespace,
                "name": pvc,
            },
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "standard-rwo",
            "volumeMode": "Filesystem",
            "csi": {
                "driver": objects.CSI_DRIVER,
                "volumeHandle": fcd_id,
                "fsType": "ext4",
                "volumeAttributes": {"type": "vSphere CNS Block Volume"},
            },
        },
    }


def pvc_for(name: str, namespace: str, app: str, size: str, klass: str, provisioner: str) -> dict[str, Any]:
    """A claim as the StatefulSet controller made it; the PV controller binds it to the PV
    whose claimRef names it (with its uid), as after dynamic provisioning."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": app},
            "annotations": {
                "volume.beta.kubernetes.io/storage-provisioner": provisioner,
                "volume.kubernetes.io/storage-provisioner": provisioner,
            },
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
            "storageClassName": klass,
            "volumeMode": "Filesystem",
        },
    }


def statefulset(name: str, namespace: str, replicas: int, templates: dict[str, str], size: str) -> dict[str, Any]:
    """`templates`: volumeClaimTemplate name -> StorageClass."""
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.k8s.io/pause:3.10",
                            "volumeMounts": [{"name": t, "mountPath": f"/{t}"} for t in templates],
                        }
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": t, "labels": {"app": name}},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": klass,
                        "resources": {"requests": {"storage": size}},
                    },
                }
                for t, klass in templates.items()
            ],
        },
    }


def create(
    env: cluster.Env,
    name: str,
    namespace: str = "default",
    replicas: int = 3,
    intree_templates: tuple[str, ...] = ("data",),
    csi_templates: tuple[str, ...] = (),
    pdb: bool = True,
    size: str = "1Gi",
    wait: bool = True,
    pv_labels: dict[str, str] | None = None,
    storage_policy: str = "",
) -> Scenario:
    """Build the scenario (`pv_labels` and `storage_policy` on each in-tree PV). With `wait`,
    also wait until the CSI driver's syncer has registered every in-tree disk as a First Class
    Disk (its CnsVSphereVolumeMigration record), as on any cluster where CSI migration is on, and note each FCD id."""
    scenario = Scenario(name=name, namespace=namespace, replicas=replicas)
    claims: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    try:
        api.get(env, "namespace", namespace)
    except api.NotFound:
        cluster.kubectl(env, "create", "namespace", namespace)
    size_mib = 16
    for ordinal in range(replicas):
        for template in intree_templates:
            pvc = f"{template}-{name}-{ordinal}"
            pv = f"pvc-{uuid.uuid4()}"
            vmdk = f"[{cluster.DATASTORE}] kubevols/{cluster.USER_CLUSTER}-dynamic-{pv}.vmdk"
            marker = marker_for(namespace, pvc)
            vc.create_vmdk(env, vmdk, size_mib, marker)
            volume = Volume(template, ordinal, pvc, pv, vmdk, marker)
            doc = in_tree_pv(pv, vmdk, namespace, pvc, size)
            if pv_labels:  # as the in-tree provisioner labels a PV with its zone and region
                doc["metadata"]["labels"] = dict(pv_labels)
            if storage_policy:
                doc["spec"]["vsphereVolume"]["storagePolicyName"] = storage_policy
            volumes.append(doc)
            claims.append(pvc_for(pvc, namespace, name, size, "standard", objects.INTREE_PROVISIONER))
            scenario.volumes.append(volume)
        for template in csi_templates:
            pvc = f"{template}-{name}-{ordinal}"
            pv = f"pvc-{uuid.uuid4()}"
            vmdk = f"[{cluster.DATASTORE}] fcd/{pv}.vmdk"
            marker = marker_for(namespace, pvc)
            vc.create_vmdk(env, vmdk, size_mib, marker)
            fcd_id = vc.register_fcd(env, vmdk, pv)
            volumes.append(csi_pv(pv, fcd_id, namespace, pvc, size))
            claims.append(pvc_for(pvc, namespace, name, size, "standard-rwo", objects.CSI_DRIVER))
            scenario.volumes.append(Volume(template, ordinal, pvc, pv, vmdk, marker, fcd_id, csi=True))
    _create_bound(env, namespace, claims, volumes)
    docs: list[dict[str, Any]] = []
    templates = {t: "standard" for t in intree_templates} | {t: "standard-rwo" for t in csi_templates}
    docs.append(statefulset(name, namespace, replicas, templates, size))
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": "None", "selector": {"app": name}, "ports": [{"port": 80}]},
        }
    )
    if pdb:
        docs.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": name}}},
            }
        )
    cluster.kubectl(env, "create", "-f", "-", stdin=_list(docs))
    if wait:
        wait_registered(env, [v for v in scenario.volumes if not v.csi])
        wait_ready(env, name, namespace, replicas)
        wait_attached(env, scenario.volumes)
        if pdb:
            # The disruption controller catches up a moment after the pods are Ready.
            cluster.kubectl(
                env,
                "-n",
                namespace,
                "wait",
                f"pdb/{name}",
                "--for=jsonpath={.status.disruptionsAllowed}=1",
                "--timeout=60s",
            )
    return scenario


def _create_bound(env: cluster.Env, namespace: str, claims: list[dict[str, Any]], pvs: list[dict[str, Any]]) -> None:
    """The claims, then the PVs with each claimRef's uid filled in: the PV controller binds them."""
    cluster.kubectl(env, "create", "-f", "-", stdin=_list(claims))
    listed = api.get(env, "pvc", namespace=namespace)
    uids = {c["metadata"]["name"]: c["metadata"]["uid"] for c in listed["items"]}
    for doc in pvs:
        doc["spec"]["claimRef"]["uid"] = uids[doc["spec"]["claimRef"]["name"]]
    cluster.kubectl(env, "create", "-f", "-", stdin=_list(pvs))


def wait_registered(env: cluster.Env, volumes: list[Volume], timeout: float = 120) -> None:
    """Until the CSI syncer has recorded each in-tree disk's FCD id; fill in `fcd_id`."""
    deadline = time.monotonic() + timeout
    while True:
        listed = api.get(env, "cnsvspherevolumemigrations")
        ids = {r["spec"]["volumepath"]: r["spec"]["volumeid"] for r in listed["items"]}
        for v in volumes:
            v.fcd_id = ids.get(v.vmdk, "")
        missing = [v.vmdk for v in volumes if not v.fcd_id]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the CSI syncer did not register {missing} in {timeout:.0f}s")
        time.sleep(0.2)


def wait_attached(env: cluster.Env, volumes: list[Volume], timeout: float = 120) -> None:
    """Until each volume's VolumeAttachment says attached. A kubelet starts a pod only once its
    volumes are attached; kwok marks a pod Ready without waiting for that, so a scenario waits for
    the attacher itself (a test read a disk as not attached right after its pod was Ready)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = api.get(env, "volumeattachments")
        attached = {
            va["spec"]["source"].get("persistentVolumeName")
            for va in listed["items"]
            if va.get("status", {}).get("attached")
        }
        missing = [v.pv for v in volumes if v.pv not in attached]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the CSI attacher did not attach {missing} in {timeout:.0f}s")
        time.sleep(0.2)


def wait_ready(env: cluster.Env, name: str, namespace: str, replicas: int | None = None, timeout: str = "120s") -> None:
    cluster.kubectl(env, "-n", namespace, "rollout", "status", f"statefulset/{name}", f"--timeout={timeout}")
    if replicas is not None:
        cluster.kubectl(
            env, "-n", namespace, "wait", f"statefulset/{name}",
            f"--for=jsonpath={{.status.readyReplicas}}={replicas}", f"--timeout={timeout}",
        )  # fmt: skip


def _list(items: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def intree_claims(env: cluster.Env, namespace: str, claims: list[str], app: str, size: str = "1Gi") -> list[Volume]:
    """Claims on their own, as the in-tree provisioner left them: per claim a thin VMDK with a
    marker, an in-tree PV and the claim bound to it; waits until the CSI syncer registered each
    disk. For a Deployment's claims, a bare pod's, or unmounted ones."""
    try:
        api.get(env, "namespace", namespace)
    except api.NotFound:
        cluster.kubectl(env, "create", "namespace", namespace)
    made, pvs, pvcs = [], [], []
    for claim in claims:
        pv = f"pvc-{uuid.uuid4()}"
        vmdk = f"[{cluster.DATASTORE}] kubevols/{cluster.USER_CLUSTER}-dynamic-{pv}.vmdk"
        marker = marker_for(namespace, claim)
        vc.create_vmdk(env, vmdk, 16, marker)
        made.append(Volume("", 0, claim, pv, vmdk, marker))
        pvs.append(in_tree_pv(pv, vmdk, namespace, claim, size))
        pvcs.append(pvc_for(claim, namespace, app, size, "standard", objects.INTREE_PROVISIONER))
    _create_bound(env, namespace, pvcs, pvs)
    wait_registered(env, made)
    return made


def _pod_spec(claims: list[str]) -> dict[str, Any]:
    return {
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "app",
                "image": "registry.k8s.io/pause:3.10",
                "volumeMounts": [{"name": f"v{i}", "mountPath": f"/{c}"} for i, c in enumerate(claims)],
            }
        ],
        "volumes": [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)],
    }


def deployment(env: cluster.Env, name: str, namespace: str, replicas: int = 1, claims: int = 1) -> Scenario:
    """A Deployment whose pods mount `claims` in-tree ReadWriteOnce claims `<name>-data-<i>`,
    Ready (every replica on the claims' node: kwok attaches nothing for real)."""
    made = Scenario(name=name, namespace=namespace, replicas=replicas)
    made.volumes = intree_claims(env, namespace, [f"{name}-data-{i}" for i in range(claims)], name)
    doc = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": _pod_spec([v.pvc for v in made.volumes])},
        },
    }
    cluster.kubectl(env, "create", "-f", "-", stdin=json.dumps(doc))
    cluster.kubectl(env, "-n", namespace, "rollout", "status", f"deployment/{name}", "--timeout=120s")
    return made


def bare_pod(
    env: cluster.Env,
    name: str,
    namespace: str,
    claim: str,
    owners: list[dict[str, Any]] | None = None,
    spec: dict[str, Any] | None = None,
) -> Volume:
    """A pod of no controller mounting one in-tree claim `claim`, Ready; with `owners` as its
    ownerReferences (none a controller's) and the fields of `spec` added to its spec (`nodeName`:
    pinned to a node by the user)."""
    volume = intree_claims(env, namespace, [claim], name)[0]
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {**_pod_spec([claim]), **(spec or {})},
    }
    if owners:
        doc["metadata"]["ownerReferences"] = owners
    cluster.kubectl(env, "create", "-f", "-", stdin=json.dumps(doc))
    cluster.kubectl(env, "-n", namespace, "wait", f"pod/{name}", "--for=condition=Ready", "--timeout=120s")
    return volume
