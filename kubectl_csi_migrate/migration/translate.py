"""Pure translations from the objects we back up to the objects we create.

The migration deletes a StatefulSet, its pods, PVCs and in-tree vSphere PVs and creates them again
pointing at the same disks through the vSphere CSI driver. Everything it creates is derived from
a backup by the functions here, so that the riskiest part of the tool, "what exactly do we send
to the API server", is plain data in, plain data out and can be tested on fixtures without a
cluster or a vCenter.

The objects are the JSON form of Kubernetes objects (what `kubectl get -o json` prints). Every
function returns a new dict and never mutates its arguments: the inputs are backups that later
steps (resume, rollback, the report) still read.
"""

from __future__ import annotations

import copy
from typing import Any

KubeObject = dict[str, Any]
"""A Kubernetes object in its JSON form."""

CSI_DRIVER = "csi.vsphere.vmware.com"
INTREE_PROVISIONER = "kubernetes.io/vsphere-volume"

DROPPED_ANNOTATIONS: frozenset[str] = frozenset(
    {
        "pv.kubernetes.io/migrated-to",
        "pv.kubernetes.io/provisioned-by",
        "volume.beta.kubernetes.io/storage-provisioner",
        "volume.kubernetes.io/storage-provisioner",
        "pv.kubernetes.io/bind-completed",
        "pv.kubernetes.io/bound-by-controller",
        "kubernetes.io/createdby",
    }
)
"""Annotations that describe the old in-tree volume or its binding; recreated PVs/PVCs lose them."""

BETA_STORAGE_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"
"""The pre-1.6 way to name a class. The PV binder reads it BEFORE spec.storageClassName (on PVs
and PVCs alike), so a copy still naming the in-tree class would keep the new PV and PVC from
binding; recreated objects drop it and carry spec.storageClassName only."""

CNS_BLOCK_VOLUME_TYPE = "vSphere CNS Block Volume"
DEFAULT_FS_TYPE = "ext4"

SERVER_METADATA_FIELDS: tuple[str, ...] = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
"""metadata fields the API server sets; a create request must not carry them."""

SERVICE_ACCOUNT_TOKEN_VOLUME_PREFIX = "kube-api-access-"


def _metadata(obj: KubeObject) -> dict[str, Any]:
    """Return obj's metadata, or an empty dict when it has none (never None)."""
    return obj.get("metadata") or {}


def _spec(obj: KubeObject) -> dict[str, Any]:
    """Return obj's spec, or an empty dict when it has none (never None)."""
    return obj.get("spec") or {}


# Set on a PV with the tool's Retain patch: the policy the user had. A plan made later (a new
# working directory, a lost one) reads it there, so the user's policy is restored in the end.
ORIGINAL_RECLAIM_POLICY = "csi-migrate.kubectl.io/original-reclaim-policy"


def reclaim_policy_of(pv: KubeObject) -> str:
    """The user's reclaim policy of pv: the one the tool noted before setting Retain, else its own."""
    noted = (_metadata(pv).get("annotations") or {}).get(ORIGINAL_RECLAIM_POLICY)
    return str(noted or _spec(pv).get("persistentVolumeReclaimPolicy") or "Delete")


def _kept_annotations(obj: KubeObject) -> dict[str, str]:
    """Return a copy of obj's annotations without the in-tree and binding bookkeeping ones."""
    dropped = DROPPED_ANNOTATIONS | {BETA_STORAGE_CLASS_ANNOTATION}
    annotations = _metadata(obj).get("annotations") or {}
    return {key: value for key, value in annotations.items() if key not in dropped}


def _require(value: str, what: str) -> str:
    """Return value, or raise ValueError naming `what` when it is empty."""
    if not value:
        raise ValueError(f"{what} must not be empty")
    return value


def strip_server_fields(obj: KubeObject) -> KubeObject:
    """Return a deep copy of obj without `status` and the metadata the API server sets.

    Removed: metadata.uid, resourceVersion, creationTimestamp, generation, managedFields,
    selfLink, deletionTimestamp, deletionGracePeriodSeconds. Labels, annotations, finalizers and
    ownerReferences stay; the callers decide about those.
    """
    stripped = copy.deepcopy(obj)
    stripped.pop("status", None)
    metadata = stripped.get("metadata")
    if isinstance(metadata, dict):
        for field in SERVER_METADATA_FIELDS:
            metadata.pop(field, None)
    return stripped


def is_intree_vsphere_pv(pv: KubeObject) -> bool:
    """Tell whether pv is served by the in-tree vSphere plugin (it has spec.vsphereVolume)."""
    return bool(_spec(pv).get("vsphereVolume"))


def is_csi_vsphere_pv(pv: KubeObject) -> bool:
    """Tell whether pv is already a vSphere CSI volume (spec.csi.driver is CSI_DRIVER)."""
    csi = _spec(pv).get("csi") or {}
    return bool(csi.get("driver") == CSI_DRIVER)


# Access modes the vSphere CSI driver serves as file volumes (vSAN file shares), never as block
# disks: an in-tree VMDK with them cannot be migrated.
FILE_VOLUME_ACCESS_MODES = frozenset({"ReadWriteMany", "ReadOnlyMany"})


# Zone and region, as in-tree vSphere PVs carry them: node affinity or labels, GA or beta keys.
ZONE_KEYS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
REGION_KEYS = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")
STORAGE_POLICY_ATTRIBUTE = "storagepolicyname"
"""The CSI volume attribute (and StorageClass parameter) naming the SPBM policy."""


def driver_topology_keys(csinodes: list[KubeObject]) -> tuple[str, ...]:
    """The topology keys the vSphere CSI node plugin reports in CSINode objects (sorted), empty
    when the driver runs without topology."""
    keys: set[str] = set()
    for node in csinodes:
        for driver in _spec(node).get("drivers") or []:
            if driver.get("name") == CSI_DRIVER:
                keys.update(driver.get("topologyKeys") or [])
    return tuple(sorted(keys))


def _topology_values(pv: KubeObject, keys: tuple[str, ...]) -> list[str]:
    """Values of the first of `keys` found in pv's node affinity, else in its labels."""
    terms = ((_spec(pv).get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms") or []
    for key in keys:
        values = sorted(
            {
                v
                for t in terms
                for e in t.get("matchExpressions") or []
                if e.get("key") == key
                for v in e.get("values") or []
            }
        )
        if values:
            return values
    for key in keys:
        label = (_metadata(pv).get("labels") or {}).get(key, "").strip()
        if label:
            return sorted(set(label.split("__")))  # several zones are joined by "__" in a label
    return []


def csi_node_affinity(pv: KubeObject, topology_keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The CSI PV's nodeAffinity for in-tree pv.

    When the driver reports no topology keys, pv's node affinity as it is (the nodes keep the
    labels it names). Otherwise the in-tree zone and region (node affinity or labels, GA or beta
    keys) are written with the driver's own zone and region keys, as the driver sets them on the
    volumes it provisions; other expressions are kept."""
    original = copy.deepcopy(_spec(pv).get("nodeAffinity")) or None
    wanted = {}
    for kind, keys in (("zone", ZONE_KEYS), ("region", REGION_KEYS)):
        driver_key = next((k for k in topology_keys if k.rsplit("/", 1)[-1].endswith(kind)), None)
        values = _topology_values(pv, keys)
        if driver_key and values:
            wanted[driver_key] = (keys, values)
    if not wanted:
        return original
    terms = ((original or {}).get("required") or {}).get("nodeSelectorTerms") or [{}]
    replaced_keys = {k for keys, _ in wanted.values() for k in keys} | set(wanted)
    new_terms = []
    for term in terms:
        kept = [e for e in term.get("matchExpressions") or [] if e.get("key") not in replaced_keys]
        added = [{"key": k, "operator": "In", "values": values} for k, (_, values) in sorted(wanted.items())]
        new_terms.append({**term, "matchExpressions": kept + added})
    return {"required": {"nodeSelectorTerms": new_terms}}


def storage_policy_of(pv: KubeObject) -> str:
    """The SPBM storage policy name an in-tree vSphere PV was provisioned with ("" if none)."""
    return str((_spec(pv).get("vsphereVolume") or {}).get("storagePolicyName") or "")


def csi_pv_from_intree(
    pv: KubeObject, fcd_id: str, csi_class: str, pvc: KubeObject, topology_keys: tuple[str, ...] = ()
) -> KubeObject:
    """Return the static CSI PV that replaces the in-tree PV pv, for the same disk.

    The new PV keeps pv's name, labels, capacity, access modes, volume mode, mount options, storage
    policy (volume attribute `storagepolicyname`) and node affinity (zone and region written with
    the driver's `topology_keys` when it has some: csi_node_affinity), drops the in-tree annotations
    and claims pvc by namespace/name only: the PVC is recreated too, so the old uid and
    resourceVersion would point at a claim that is gone. Its reclaim policy is Retain whatever pv
    had (the migration restores the original at the end), and finalizers are not copied (the API
    server adds kubernetes.io/pv-protection). Raises ValueError when pv is not in-tree vSphere,
    fcd_id is empty or a .vmdk path (a CSI volumeHandle is the First Class Disk id), csi_class is
    empty, or pvc has no name/namespace.
    """
    if not is_intree_vsphere_pv(pv):
        name = _metadata(pv).get("name", "<unnamed>")
        raise ValueError(f"PersistentVolume {name} is not an in-tree vSphere volume")
    _require(fcd_id, "FCD id")
    if fcd_id.strip().lower().endswith(".vmdk"):
        raise ValueError(f"FCD id {fcd_id!r} is a disk path, not a First Class Disk id")
    _require(csi_class, "CSI StorageClass")
    pvc_meta = _metadata(pvc)
    claim_name = _require(pvc_meta.get("name", ""), "PVC name")
    claim_namespace = _require(pvc_meta.get("namespace", ""), "PVC namespace")

    old_meta = _metadata(pv)
    old_spec = _spec(pv)
    metadata: dict[str, Any] = {"name": _require(old_meta.get("name", ""), "PV name")}
    if old_meta.get("labels"):
        metadata["labels"] = copy.deepcopy(old_meta["labels"])
    metadata["annotations"] = {
        **_kept_annotations(pv),
        "pv.kubernetes.io/provisioned-by": CSI_DRIVER,
    }

    spec: dict[str, Any] = {
        "capacity": copy.deepcopy(old_spec.get("capacity")),
        "accessModes": copy.deepcopy(old_spec.get("accessModes")),
        "volumeMode": old_spec.get("volumeMode") or "Filesystem",
    }
    if old_spec.get("mountOptions"):
        spec["mountOptions"] = copy.deepcopy(old_spec["mountOptions"])
    affinity = csi_node_affinity(pv, topology_keys)
    if affinity:
        spec["nodeAffinity"] = affinity
    spec["persistentVolumeReclaimPolicy"] = "Retain"
    spec["storageClassName"] = csi_class
    spec["claimRef"] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": claim_namespace,
        "name": claim_name,
    }
    shared = sorted(set(old_spec.get("accessModes") or []) & FILE_VOLUME_ACCESS_MODES)
    if shared:
        raise ValueError(f"PersistentVolume {metadata['name']} asks for {', '.join(shared)}: not a block volume")
    spec["csi"] = {
        "driver": CSI_DRIVER,
        "volumeHandle": fcd_id,
        "fsType": old_spec["vsphereVolume"].get("fsType") or DEFAULT_FS_TYPE,
        "volumeAttributes": {"type": CNS_BLOCK_VOLUME_TYPE},
    }
    if storage_policy_of(pv):
        # As Kubernetes' own translation of this PV for the driver carries it.
        spec["csi"]["volumeAttributes"][STORAGE_POLICY_ATTRIBUTE] = storage_policy_of(pv)
    if spec["volumeMode"] == "Block":
        del spec["csi"]["fsType"]  # a raw block device has no filesystem (the driver sets none)
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": metadata, "spec": spec}


def recreated_pvc(pvc: KubeObject, pv_name: str, csi_class: str) -> KubeObject:
    """Return the PVC to create in place of pvc, pre-bound to the CSI PV pv_name.

    Kept: name, namespace, labels, the other annotations, access modes, resources (requests,
    and limits if set), volume mode. Dropped: the in-tree provisioner and binding annotations,
    finalizers (the API server adds kubernetes.io/pvc-protection), the selector and the data
    sources (the volume exists; nothing is provisioned or populated), and ownerReferences: a
    StatefulSet's PVCs carry one only under a persistentVolumeClaimRetentionPolicy, and it names
    the old StatefulSet's uid, which is gone by now; the recreated StatefulSet's controller sets
    the reference again for the policy it has. Raises ValueError when pv_name, csi_class or
    pvc's name or namespace is empty.
    """
    _require(pv_name, "PV name")
    _require(csi_class, "CSI StorageClass")
    old_meta = _metadata(pvc)
    old_spec = _spec(pvc)
    metadata: dict[str, Any] = {
        "name": _require(old_meta.get("name", ""), "PVC name"),
        "namespace": _require(old_meta.get("namespace", ""), "PVC namespace"),
    }
    if old_meta.get("labels"):
        metadata["labels"] = copy.deepcopy(old_meta["labels"])
    annotations = _kept_annotations(pvc)
    if annotations:
        metadata["annotations"] = annotations

    old_resources = old_spec.get("resources") or {}
    resources: dict[str, Any] = {"requests": copy.deepcopy(old_resources.get("requests") or {})}
    if old_resources.get("limits"):
        resources["limits"] = copy.deepcopy(old_resources["limits"])
    spec: dict[str, Any] = {
        "accessModes": copy.deepcopy(old_spec.get("accessModes")),
        "resources": resources,
        "volumeMode": old_spec.get("volumeMode") or "Filesystem",
        "volumeName": pv_name,
        "storageClassName": csi_class,
    }
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": spec,
    }


def node_pinned(pod: KubeObject) -> bool | None:
    """Tell whether a client wrote pod's spec.nodeName (a user, or a controller's pod template,
    pinned it to its node): True; or the scheduler chose the node: False; or, without
    managedFields to tell (a backup read back from the run's record in the cluster), None.

    The scheduler sets nodeName through the pods/binding subresource, which writes the pod
    straight to storage: no managedFields entry owns the field then. A pod created or updated
    with nodeName has it under `f:spec` of the manager that sent it."""
    fields = _metadata(pod).get("managedFields")
    if not fields:
        return None
    return any("f:nodeName" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}) for entry in fields)


def pod_for_recreate(pod: KubeObject, bare: bool = False) -> KubeObject:
    """Return the pod to create from a pod's backup: a StatefulSet's while the StatefulSet is
    deleted, or (`bare`) a pod of no controller, a claim's (`pvc`).

    Server-set fields go (strip_server_fields), and so do: the controller's ownerReference (it
    names the deleted StatefulSet's uid; the recreated StatefulSet adopts the pod by its labels,
    which are kept with controller-revision-hash so it is not restarted), spec.ephemeralContainers
    (they cannot be set on create), and the service-account token volume the API server injected
    (kube-api-access-*) with its mounts in every container and init container; admission injects
    a fresh one. Other ownerReferences stay (an owner that is not a controller, such as a custom
    object the garbage collector deletes the pod with, still owns it), without blockOwnerDeletion.
    spec.nodeName stays where a client wrote it (node_pinned: the user pinned the pod, or its
    controller's template did), and for a bare pod whose backup cannot tell (no controller places
    it again: it comes back on the node it ran on); where the scheduler chose the node it goes,
    and the scheduler places the pod again.
    """
    new = strip_server_fields(pod)
    metadata = _metadata(new)
    # blockOwnerDeletion goes: setting it needs `update` on the owner's finalizers where
    # OwnerReferencesPermissionEnforcement is on (OpenShift), a verb preflight does not ask for,
    # and a 403 there would come after the pod's claim moved.
    owners = [
        {k: v for k, v in ref.items() if k != "blockOwnerDeletion"}
        for ref in metadata.pop("ownerReferences", None) or []
        if not ref.get("controller")
    ]
    if owners:
        metadata["ownerReferences"] = owners
    spec = new.get("spec")
    if not isinstance(spec, dict):
        return new
    pinned = node_pinned(pod)
    if not (pinned or (pinned is None and bare)):
        spec.pop("nodeName", None)
    spec.pop("ephemeralContainers", None)
    volumes = spec.get("volumes") or []
    token_volumes = {
        volume["name"] for volume in volumes if volume.get("name", "").startswith(SERVICE_ACCOUNT_TOKEN_VOLUME_PREFIX)
    }
    if not token_volumes:
        return new
    spec["volumes"] = [volume for volume in volumes if volume.get("name") not in token_volumes]
    if not spec["volumes"]:
        del spec["volumes"]
    for kind in ("containers", "initContainers"):
        for container in spec.get(kind) or []:
            mounts = container.get("volumeMounts")
            if mounts is None:
                continue
            container["volumeMounts"] = [m for m in mounts if m.get("name") not in token_volumes]
            if not container["volumeMounts"]:
                del container["volumeMounts"]
    return new


def statefulset_for_recreate(sts: KubeObject, csi_class: str, migrate_templates: set[str]) -> KubeObject:
    """Return the StatefulSet to create from its backup once its volumes are CSI volumes.

    Server-set fields go (strip_server_fields). The volumeClaimTemplates named in
    migrate_templates get spec.storageClassName = csi_class (the beta storage-class annotation,
    which would win over it, and the template's status are removed); the others are left as
    they are. ownerReferences stay: a StatefulSet managed by an operator must stay owned by it,
    and its owner still exists. The pod template is not touched: a different template means a
    new controller-revision-hash, and the StatefulSet would restart every pod it adopts.
    Raises ValueError for an empty csi_class or a name in migrate_templates that the
    StatefulSet has no template for (a typo would otherwise leave a template in-tree silently).
    """
    _require(csi_class, "CSI StorageClass")
    new = strip_server_fields(sts)
    templates = _spec(new).get("volumeClaimTemplates") or []
    known = {_metadata(template).get("name") for template in templates}
    missing = sorted(set(migrate_templates) - known)
    if missing:
        sts_name = _metadata(sts).get("name", "<unnamed>")
        raise ValueError(f"StatefulSet {sts_name} has no volumeClaimTemplates {missing}")
    for template in templates:
        metadata = _metadata(template)
        if metadata.get("name") not in migrate_templates:
            continue
        template.pop("status", None)
        annotations = metadata.get("annotations")
        if annotations:
            annotations.pop(BETA_STORAGE_CLASS_ANNOTATION, None)
            if not annotations:
                del metadata["annotations"]
        template.setdefault("spec", {})["storageClassName"] = csi_class
    return new


def pvc_name(template: str, sts: str, ordinal: int) -> str:
    """Return the name of the PVC the StatefulSet sts makes from template for ordinal."""
    return f"{template}-{sts}-{ordinal}"


def ordinal_of(pvc_name: str, template: str, sts: str) -> int | None:
    """Return the ordinal if pvc_name is exactly `<template>-<sts>-<ordinal>`, else None.

    Matching a prefix is not enough: "data-web-2-0" starts like a PVC of StatefulSet "web" but
    belongs to StatefulSet "web-2". Ordinals are written in decimal without leading zeros, so
    "data-web-01" is not ordinal 1 of "web" either.
    """
    prefix = f"{template}-{sts}-"
    if not pvc_name.startswith(prefix):
        return None
    digits = pvc_name[len(prefix) :]
    if not (digits.isascii() and digits.isdigit()):
        return None
    ordinal = int(digits)
    return ordinal if str(ordinal) == digits else None


def storage_class_of_template(template: KubeObject) -> str | None:
    """Return the StorageClass a volumeClaimTemplate asks for, or None when it names none.

    The beta annotation volume.beta.kubernetes.io/storage-class wins over spec.storageClassName,
    as it does for the PV binder. An explicit "" (no class: bind statically) is returned as "".
    """
    annotations = _metadata(template).get("annotations") or {}
    if BETA_STORAGE_CLASS_ANNOTATION in annotations:
        return str(annotations[BETA_STORAGE_CLASS_ANNOTATION])
    class_name = _spec(template).get("storageClassName")
    return None if class_name is None else str(class_name)


def intree_pv_from_backup(pv: KubeObject) -> KubeObject:
    """Return the in-tree PV to create again from its backup, for a rollback.

    Everything the user had stays (name, labels, annotations, the vsphereVolume source, class,
    node affinity), except what would make the PV Released or deletable the moment it exists:
    claimRef keeps the claim's namespace and name but not its uid or resourceVersion (the claim is
    created again with a new uid, and binds to this PV by name), and the reclaim policy is Retain,
    the user's own noted in ORIGINAL_RECLAIM_POLICY (the rollback restores it once the claim is
    Bound). Server-set fields, the binding annotations and finalizers go (the API server adds
    pv-protection). Raises ValueError when pv is not an in-tree vSphere PV.
    """
    if not is_intree_vsphere_pv(pv):
        raise ValueError(f"PersistentVolume {_metadata(pv).get('name', '<unnamed>')} is not an in-tree vSphere volume")
    new = strip_server_fields(pv)
    metadata = _metadata(new)
    metadata.pop("finalizers", None)
    annotations = {
        k: v
        for k, v in (metadata.get("annotations") or {}).items()
        if k not in ("pv.kubernetes.io/bound-by-controller", "pv.kubernetes.io/bind-completed")
    }
    annotations[ORIGINAL_RECLAIM_POLICY] = reclaim_policy_of(pv)
    metadata["annotations"] = annotations
    spec = _spec(new)
    spec["persistentVolumeReclaimPolicy"] = "Retain"
    claim = spec.get("claimRef") or {}
    if claim:
        spec["claimRef"] = {k: claim[k] for k in ("apiVersion", "kind", "namespace", "name") if k in claim}
    return new


def intree_pvc_from_backup(pvc: KubeObject) -> KubeObject:
    """Return the in-tree PVC to create again from its backup, for a rollback: the same claim
    (class, beta class annotation, labels, requests) bound by name to its PV (spec.volumeName),
    without server-set fields, binding annotations, finalizers or ownerReferences (they name the
    deleted StatefulSet; the recreated one sets them again under a retention policy)."""
    new = strip_server_fields(pvc)
    metadata = _metadata(new)
    for key in ("finalizers", "ownerReferences"):
        metadata.pop(key, None)
    annotations = {
        k: v
        for k, v in (metadata.get("annotations") or {}).items()
        if k not in ("pv.kubernetes.io/bound-by-controller", "pv.kubernetes.io/bind-completed")
    }
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    return new
