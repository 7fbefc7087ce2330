"""The steps that act on claims and PVs, forwards and backwards (rollback): Retain first, the
in-tree claim and PV deleted, the CSI PV and claim created with the same names, the reclaim
policy restored last; backwards, the in-tree ones created again from their backups.

Invariant kept here: every PV is Retain before any claim or PV is deleted, both ways, and no
second PV is ever created for a disk another PV still names.
"""

from __future__ import annotations

from kubectl_csi_migrate.errors import ConflictError, NotFoundError, PermanentError
from kubectl_csi_migrate.kube import predicates as p
from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration import events, translate
from kubectl_csi_migrate.migration.context import Context, Kind, crud
from kubectl_csi_migrate.migration.disks import recorded_fcd
from kubectl_csi_migrate.migration.plan import VolumePlan
from kubectl_csi_migrate.migration.steps import Step, StepKind, fcd_of
from kubectl_csi_migrate.vsphere import paths


def set_retain(m: Context, step: Step) -> None:
    """From the run's PV cache (a view a moment old): a PV it shows Retain already is left as is;
    delete_pvc reads the PV again and sets Retain again if need be before the claim goes."""
    v = m.volume(step)
    cached = next((pv for pv in m.pvs.items() if pv["metadata"]["name"] == v.pv), None)
    _retain(m, v, cached or m.kube.get("PersistentVolume", v.pv))


def _retain(m: Context, v: VolumePlan, pv: Obj | None) -> None:
    """`pv` (v.pv as last read) to Retain, the user's policy noted to be restored later."""
    if pv is None or pv["spec"].get("persistentVolumeReclaimPolicy") == "Retain":
        return
    patch = {
        "metadata": {"annotations": {translate.ORIGINAL_RECLAIM_POLICY: v.reclaim_policy}},
        "spec": {"persistentVolumeReclaimPolicy": "Retain"},
    }
    m.kube.patch("PersistentVolume", v.pv, patch)
    m.say(f"persistentvolume/{v.pv} reclaim policy set to Retain")


def delete_pvc(m: Context, step: Step) -> None:
    v = m.volume(step)
    ns = m.plan.namespace
    backup = m.workdir.load_backup("PersistentVolumeClaim", v.pvc)
    uid = backup["metadata"]["uid"]
    if not _ensure_retained(m, v):
        # The PV is gone already: a resumed run whose record lagged (delete-pv ran); the claim
        # went before it, or it is not ours to delete.
        if m.kube.get("PersistentVolumeClaim", v.pvc, ns) is not None:
            raise PermanentError(f"persistentvolume {v.pv} is not the one backed up; stop and inspect")
        return
    # The backup's claim only (a precondition, no read first): another of that name is someone else's.
    try:
        m.kube.delete("PersistentVolumeClaim", v.pvc, ns, uid=uid)
        m.say(f"persistentvolumeclaim/{v.pvc} deleted")
    except NotFoundError:
        pass  # deleted by an earlier attempt of this step
    except ConflictError:
        raise PermanentError(
            f"persistentvolumeclaim {ns}/{v.pvc} was recreated by someone else; stop and inspect"
        ) from None
    m.wait_gone("PersistentVolumeClaim", v.pvc, uid, f"pvc {v.pvc} to go", ns)


def _ensure_retained(m: Context, v: VolumePlan) -> bool:
    """Invariant 2, checked at the last moment: once the claim is gone, a PV on Delete
    would take the disk with it. Something (GitOps, a person) may have reverted it since
    the retain step. False when the PV is gone."""
    backup = m.workdir.load_backup("PersistentVolume", v.pv)
    pv = m.kube.get("PersistentVolume", v.pv)
    if pv is None:
        return False
    if pv["metadata"]["uid"] != backup["metadata"]["uid"]:
        raise PermanentError(f"persistentvolume {v.pv} is not the one backed up; stop and inspect")
    if pv["spec"].get("persistentVolumeReclaimPolicy") != "Retain":
        m.kube.patch("PersistentVolume", v.pv, {"spec": {"persistentVolumeReclaimPolicy": "Retain"}})
        m.say(f"persistentvolume/{v.pv} reclaim policy was changed back by someone: set to Retain again")
        pv = m.kube.get("PersistentVolume", v.pv)
        if pv is None or pv["spec"].get("persistentVolumeReclaimPolicy") != "Retain":
            raise PermanentError(f"persistentvolume {v.pv} does not stay Retain; its claim was not deleted")
    return True


def delete_pv(m: Context, step: Step) -> Obj:
    v = m.volume(step)
    backup = m.workdir.load_backup("PersistentVolume", v.pv)
    uid = backup["metadata"]["uid"]
    live = m.kube.get("PersistentVolume", v.pv)
    if live is not None and live["metadata"]["uid"] == uid:
        if live["spec"].get("persistentVolumeReclaimPolicy") != "Retain":
            raise PermanentError(f"persistentvolume {v.pv} is not Retain; refusing to delete it")
        m.kube.delete("PersistentVolume", v.pv, uid=uid)
        m.say(f"persistentvolume/{v.pv} deleted (the disk is kept: reclaim policy Retain)")
    m.wait_gone("PersistentVolume", v.pv, uid, f"pv {v.pv} to go")
    return {"gone_at": m.kube.server_date}  # the API server's clock, for disks.wait_cns_release


def _disk_named_elsewhere(m: Context, v: VolumePlan, fcd_id: str | None, kind: str) -> Obj | None:
    """The PV named v.pv of `kind` ("csi" or "in-tree") when it exists and names the disk;
    raises when any other PV names the disk (never a second PV for one disk).

    Every PV is looked at, from the run's PV cache (listed once, kept current by a watch); a PV
    found there is read again before it counts, so a view a moment old never decides."""

    def names_disk(pv: Obj) -> bool:
        spec = pv.get("spec", {})
        path = spec.get("vsphereVolume", {}).get("volumePath", "")
        return paths.disk_key(path) == paths.disk_key(v.vmdk) or bool(
            fcd_id and spec.get("csi", {}).get("volumeHandle") == fcd_id
        )

    mine = None
    for cached in m.pvs.items():
        if not names_disk(cached):
            continue
        other = m.kube.get("PersistentVolume", cached["metadata"]["name"])
        if other is None or not names_disk(other):
            continue  # gone or changed since the cache saw it
        csi = translate.is_csi_vsphere_pv(other)
        if other["metadata"]["name"] == v.pv and csi == (kind == "csi"):
            mine = other
            continue
        raise PermanentError(
            f"persistentvolume {other['metadata']['name']} still refers to {v.vmdk}; "
            "refusing to create a second PV for the same disk"
        )
    return mine


def create_pv(m: Context, step: Step) -> None:
    v = m.volume(step)
    fcd_id = fcd_of(m.done, v.pv)
    if _disk_named_elsewhere(m, v, fcd_id, "csi") is not None:
        return  # created by an earlier attempt of this step
    backup_pv = m.workdir.load_backup("PersistentVolume", v.pv)
    backup_pvc = m.workdir.load_backup("PersistentVolumeClaim", v.pvc)
    new_pv = translate.csi_pv_from_intree(backup_pv, fcd_id, m.plan.csi_class, backup_pvc, m.plan.topology_keys)
    m.kube.create(new_pv)
    m.say(f"persistentvolume/{v.pv} created (csi.vsphere.vmware.com, volumeHandle {fcd_id})")


def create_pvc(m: Context, step: Step) -> None:
    v = m.volume(step)
    fcd_id = fcd_of(m.done, v.pv)
    ns = m.plan.namespace
    backup = m.workdir.load_backup("PersistentVolumeClaim", v.pvc)
    live: Obj | None
    try:  # created first: a claim already there answers 409, and is then read
        live = m.kube.create(translate.recreated_pvc(backup, v.pv, m.plan.csi_class))
        m.say(f"persistentvolumeclaim/{v.pvc} created ({m.plan.csi_class})")
    except ConflictError:
        live = m.kube.get("PersistentVolumeClaim", v.pvc, ns)
        if live is not None and live["spec"].get("volumeName") != v.pv:
            raise PermanentError(f"persistentvolumeclaim {ns}/{v.pvc} exists but is not bound to {v.pv}") from None
    pvc = _wait_bound(m, v, live)
    message = events.migrated_message(m.plan, v, fcd_id)
    m.event("PersistentVolumeClaim", "v1", pvc, "MigratedToCSI", message)


def _wait_bound(m: Context, v: VolumePlan, claim: Obj | None) -> Obj:
    """Until claim v.pvc (the object `claim`, as created or read) is Bound to v.pv; the claim as
    the wait last saw it. By uid: the run's view may still show the claim of that name deleted."""
    uid = (claim or {}).get("metadata", {}).get("uid")
    claims = m.wait(
        "PersistentVolumeClaim",
        p.pvc_bound(v.pvc, v.pv, uid),
        f"pvc {v.pvc} to be Bound",
        namespace=m.plan.namespace,
        label="PersistentVolumeClaim Bound",
        field_selector=f"metadata.name={v.pvc}",
    )
    return claims[v.pvc]


def restore_reclaim_policy(m: Context, step: Step) -> None:
    # From the run's PV cache: each PV there is the CSI one this run created Retain (and noted),
    # or a later version of it; one the watch has not shown yet is read.
    cached = {pv["metadata"]["name"]: pv for pv in m.pvs.items()}
    for v in m.plan.to_migrate():
        target = "Retain" if m.settings.keep_retain else v.reclaim_policy
        pv = cached.get(v.pv)
        if pv is None or not translate.is_csi_vsphere_pv(pv):
            pv = m.kube.get("PersistentVolume", v.pv)
        noted = translate.ORIGINAL_RECLAIM_POLICY in (pv or {}).get("metadata", {}).get("annotations", {})
        if pv is None or (pv["spec"].get("persistentVolumeReclaimPolicy") == target and not noted):
            continue
        patch: Obj = {"spec": {"persistentVolumeReclaimPolicy": target}}
        if noted:
            patch["metadata"] = {"annotations": {translate.ORIGINAL_RECLAIM_POLICY: None}}
        m.kube.patch("PersistentVolume", v.pv, patch)
        m.say(f"persistentvolume/{v.pv} reclaim policy restored to {target}")


def _ensure_csi_retained(m: Context, v: VolumePlan) -> None:
    """Invariant 2 backwards: the CSI PV is Retain before its claim or itself is deleted."""
    pv = m.kube.get("PersistentVolume", v.pv)
    if pv is not None and translate.is_csi_vsphere_pv(pv):
        _retain(m, v, pv)


def undo_restore_reclaim_policy(m: Context, step: Step) -> None:
    for v in m.plan.to_migrate():
        _ensure_csi_retained(m, v)


def undo_create_pvc(m: Context, step: Step) -> None:
    v, ns = m.volume(step), m.plan.namespace
    live = m.kube.get("PersistentVolumeClaim", v.pvc, ns)
    backup = m.workdir.load_backup("PersistentVolumeClaim", v.pvc)
    if live is None or live["metadata"]["uid"] == backup["metadata"]["uid"]:
        return
    if live["spec"].get("storageClassName") != m.plan.csi_class or live["spec"].get("volumeName") != v.pv:
        raise PermanentError(
            f"persistentvolumeclaim {ns}/{v.pvc} is neither the original nor the one this run created; stop and inspect"
        )
    uid = live["metadata"]["uid"]
    _ensure_csi_retained(m, v)
    if not live["metadata"].get("deletionTimestamp"):
        m.kube.delete("PersistentVolumeClaim", v.pvc, ns, uid=uid)
        m.say(f"persistentvolumeclaim/{v.pvc} (CSI) deleted")
    m.wait_gone("PersistentVolumeClaim", v.pvc, uid, f"pvc {v.pvc} to go (a pod still using it holds it)", ns)
    m.wait("VolumeAttachment", p.no_attachment(v.pv), f"volume {v.pv} to be detached", label="detach")


def undo_create_pv(m: Context, step: Step) -> None:
    v = m.volume(step)
    live = m.kube.get("PersistentVolume", v.pv)
    if live is None or not translate.is_csi_vsphere_pv(live):
        return
    uid = live["metadata"]["uid"]
    claim = live["spec"].get("claimRef") or {}
    pvc = m.kube.get("PersistentVolumeClaim", v.pvc, m.plan.namespace)
    if pvc is not None and claim.get("uid") and pvc["metadata"]["uid"] == claim["uid"]:
        raise PermanentError(f"persistentvolume {v.pv} is still bound to its claim; it was not deleted")
    _ensure_csi_retained(m, v)
    if not live["metadata"].get("deletionTimestamp"):
        m.wait("VolumeAttachment", p.no_attachment(v.pv), f"volume {v.pv} to be detached", label="detach")
        m.kube.delete("PersistentVolume", v.pv, uid=uid)
        m.say(f"persistentvolume/{v.pv} (CSI) deleted (the disk is kept: reclaim policy Retain)")
    m.wait_gone("PersistentVolume", v.pv, uid, f"pv {v.pv} to go")


def undo_delete_pv(m: Context, step: Step) -> None:
    v = m.volume(step)
    backup = m.workdir.load_backup("PersistentVolume", v.pv)
    uid = backup["metadata"]["uid"]
    live = m.kube.get("PersistentVolume", v.pv)
    if live is not None and live["metadata"]["uid"] == uid:
        if not live["metadata"].get("deletionTimestamp"):
            return  # never deleted
        m.wait_gone("PersistentVolume", v.pv, uid, f"pv {v.pv} to go")
    # A CSI PV names the disk by its FCD id: the run's own, or, where the record never showed the
    # `fcd` step (a rollback from the record alone), the one the CSI driver recorded for the disk
    # (issue 17, item 10: such a PV was missed, and a second PV created for the disk).
    fcd_id = fcd_of(m.done, v.pv) or recorded_fcd(m, v.vmdk)
    if _disk_named_elsewhere(m, v, fcd_id, "in-tree") is not None:
        return  # created again by an earlier attempt of this undo
    m.kube.create(translate.intree_pv_from_backup(backup))
    m.say(f"persistentvolume/{v.pv} created again from its backup (in-tree {v.vmdk}, Retain until bound)")


def undo_delete_pvc(m: Context, step: Step) -> None:
    v, ns = m.volume(step), m.plan.namespace
    backup = m.workdir.load_backup("PersistentVolumeClaim", v.pvc)
    uid = backup["metadata"]["uid"]
    live = m.kube.get("PersistentVolumeClaim", v.pvc, ns)
    if live is not None and live["metadata"]["uid"] == uid and live["metadata"].get("deletionTimestamp"):
        m.wait_gone("PersistentVolumeClaim", v.pvc, uid, f"pvc {v.pvc} to go", ns)
        live = None
    if live is None:
        _release_claim_ref(m, v)
        live = m.kube.create(translate.intree_pvc_from_backup(backup))
        m.say(f"persistentvolumeclaim/{v.pvc} created again from its backup")
    elif live["metadata"]["uid"] != uid and (
        live["spec"].get("volumeName") != v.pv or live["spec"].get("storageClassName") == m.plan.csi_class
    ):
        raise PermanentError(f"persistentvolumeclaim {ns}/{v.pvc} is not the in-tree claim; stop and inspect")
    _wait_bound(m, v, live)


def _release_claim_ref(m: Context, v: VolumePlan) -> None:
    """The original in-tree PV, Released when its claim went (a run stopped between the two
    deletes), still names the deleted claim's uid and would refuse the claim created again:
    it keeps the claim's name only, Retain (the undo of `retain` restores the policy)."""
    pv = m.kube.get("PersistentVolume", v.pv)
    if pv is None or not translate.is_intree_vsphere_pv(pv):
        return
    claim = pv["spec"].get("claimRef") or {}
    if not claim.get("uid"):
        return
    if pv["spec"].get("persistentVolumeReclaimPolicy") != "Retain":
        raise PermanentError(f"persistentvolume {v.pv} is not Retain; its claim was not created again")
    patch = {"spec": {"claimRef": {"uid": None, "resourceVersion": None}}}
    m.kube.patch("PersistentVolume", v.pv, patch)
    m.say(f"persistentvolume/{v.pv} freed for its claim (Released: the deleted claim's uid removed)")


def undo_retain(m: Context, step: Step) -> None:
    v = m.volume(step)
    pv = m.kube.get("PersistentVolume", v.pv)
    if pv is None or translate.is_csi_vsphere_pv(pv):
        raise PermanentError(f"persistentvolume {v.pv} is not the in-tree one; its reclaim policy stays Retain")
    noted = translate.ORIGINAL_RECLAIM_POLICY in (pv["metadata"].get("annotations") or {})
    if pv["spec"].get("persistentVolumeReclaimPolicy") == v.reclaim_policy and not noted:
        return
    if v.reclaim_policy != "Retain" and pv.get("status", {}).get("phase") != "Bound":
        raise PermanentError(f"persistentvolume {v.pv} is not Bound; it stays Retain")
    patch: Obj = {"spec": {"persistentVolumeReclaimPolicy": v.reclaim_policy}}
    if noted:
        patch["metadata"] = {"annotations": {translate.ORIGINAL_RECLAIM_POLICY: None}}
    m.kube.patch("PersistentVolume", v.pv, patch)
    m.say(f"persistentvolume/{v.pv} reclaim policy restored to {v.reclaim_policy}")


# -- the kinds of step defined here ------------------------------------------------------------

RETAIN = Kind(
    StepKind.RETAIN,
    set_retain,
    undo_retain,
    needs=crud("PersistentVolume", "get", "patch", "list", "watch"),
    dry_run=lambda kube, plan, step: kube.patch(
        "PersistentVolume", step.pv, {"spec": {"persistentVolumeReclaimPolicy": "Retain"}}
    ),
)
DELETE_PVC = Kind(
    StepKind.DELETE_PVC,
    delete_pvc,
    undo_delete_pvc,
    needs=(
        *crud("PersistentVolumeClaim", "get", "delete", "create", "list", "watch"),
        *crud("PersistentVolume", "get", "patch"),
    ),
    dry_run=lambda kube, plan, step: kube.delete(
        "PersistentVolumeClaim", next(v.pvc for v in plan.volumes if v.pv == step.pv), plan.namespace
    ),
)
DELETE_PV = Kind(
    StepKind.DELETE_PV,
    delete_pv,
    undo_delete_pv,
    needs=crud("PersistentVolume", "get", "delete", "create", "list", "watch"),
    dry_run=lambda kube, plan, step: kube.delete("PersistentVolume", step.pv),
)
CREATE_PV = Kind(
    StepKind.CREATE_PV,
    create_pv,
    undo_create_pv,
    needs=(
        *crud("PersistentVolume", "list", "create", "get", "patch", "delete", "watch"),
        *crud("PersistentVolumeClaim", "get"),
        *crud("VolumeAttachment", "list", "watch"),
    ),
)
CREATE_PVC = Kind(
    StepKind.CREATE_PVC,
    create_pvc,
    undo_create_pvc,
    needs=(
        *crud("PersistentVolumeClaim", "get", "create", "delete", "list", "watch"),
        *crud("PersistentVolume", "get", "patch"),
        *crud("VolumeAttachment", "list", "watch"),
        *crud("Event", "create"),
    ),
)
RESTORE_RECLAIM_POLICY = Kind(
    StepKind.RESTORE_RECLAIM_POLICY,
    restore_reclaim_policy,
    undo_restore_reclaim_policy,
    needs=crud("PersistentVolume", "get", "patch", "list", "watch"),
)
KINDS = (RETAIN, DELETE_PVC, DELETE_PV, CREATE_PV, CREATE_PVC, RESTORE_RECLAIM_POLICY)
