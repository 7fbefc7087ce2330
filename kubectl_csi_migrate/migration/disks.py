"""The steps that concern the disk itself: detached from every VM, released by the vSphere CSI
driver's syncer, registered as a First Class Disk (kept when a VM it is attached to is deleted).
None has anything to undo: a registered disk stays registered (the in-tree path still reaches it).
"""

from __future__ import annotations

import time
from dataclasses import asdict

from kubectl_csi_migrate.errors import PermanentError, TemporaryError
from kubectl_csi_migrate.kube import predicates as p
from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration.context import Context, Kind, crud, nothing
from kubectl_csi_migrate.migration.driver import syncer_renewed_since
from kubectl_csi_migrate.migration.steps import FcdResult, Step, StepKind, gone_at


def wait_detached(m: Context, step: Step) -> None:
    v = m.volume(step)
    m.wait("VolumeAttachment", p.no_attachment(v.pv), f"volume {v.pv} to be detached", label="detach")
    deadline = time.monotonic() + m.settings.timeout
    while vms := m.vcenter(lambda: m.vsphere.attached_vms(v.vmdk)):
        if time.monotonic() > deadline:
            raise TemporaryError(f"{v.vmdk} is still attached to {', '.join(vms)}")
        m.sleep(2)  # vCenter has no watch here; detach is rare at this point


def wait_cns_release(m: Context, step: Step) -> None:
    """Where the CSI driver keeps CnsVSphereVolumeMigration objects, wait until it has
    dropped the one for this disk: it unregisters the old volume from CNS, and a new
    registration made before that could be removed with it. Bounded: the syncer does this
    in the PV's delete event; past the bound it is down or missed the event, and a person
    must look (the message says where, and what is safe to do)."""
    if not m.kube.has_resource("CnsVSphereVolumeMigration"):
        return
    v = m.volume(step)
    timeout = min(m.settings.timeout, m.settings.release_timeout)

    def released(objs: dict[str, Obj]) -> bool:
        return not any(o.get("spec", {}).get("volumepath") == v.vmdk for o in objs.values())

    try:
        m.wait(
            "CnsVSphereVolumeMigration",
            released,
            f"the CSI driver to release {v.vmdk}",
            timeout,
            label="the driver's release",
        )
    except TemporaryError as exc:
        left = [
            o["metadata"]["name"]
            for o in m.kube.items("CnsVSphereVolumeMigration")
            if o.get("spec", {}).get("volumepath") == v.vmdk
        ]
        record = f"cnsvspherevolumemigration/{left[0]}" if left else "its CnsVSphereVolumeMigration record"
        gone = gone_at(m.done, v.pv)
        logs = "kubectl -n vmware-system-csi logs deploy/vsphere-csi-controller -c vsphere-syncer"
        if syncer_renewed_since(m.kube, gone):
            # Running since, yet the record stays: it waits on vCenter, or it missed the delete
            # event (restarting, or not the leader, when the PV went) and never comes back to it.
            state = (
                "The syncer has renewed its leader lease since the PV went, so it runs: look at its "
                f"log for vCenter errors ({logs}); if it reaches vCenter, it missed the PV's deletion "
                "(a restart in between) and will not release the disk by itself"
            )
        else:
            state = (
                "The syncer has not renewed its leader lease since the PV went: is it running and "
                f"reaching vCenter ({logs})? Once it runs it releases the disk by itself: then run the "
                "same command again"
            )
        raise PermanentError(
            f"the vSphere CSI driver's syncer has not released {v.vmdk} {timeout:.0f}s after "
            f"persistentvolume/{v.pv} was deleted ({record} still exists). {state}. Nothing is "
            f"lost: the disk is kept (Retain) and recorded in {m.workdir.path}. If the syncer "
            f"runs and reaches vCenter and the record stays, no PersistentVolume names {v.vmdk} any more, so "
            f"deleting {record} is safe; then run the same command again"
        ) from exc


def ensure_fcd(m: Context, step: Step) -> Obj:
    """The disk's FCD id: the one the CSI driver recorded (checked against vCenter), else
    register_fcd, which reuses an existing FCD or registers the disk."""
    v = m.volume(step)
    # Where preflight found the disk (recorded in the plan); a plan from an older release
    # has none, and the flag (or, as preflight did, every configured datacenter) is used.
    dc = v.datacenter or m.settings.datacenter
    hint = recorded_fcd(m, v.vmdk)
    if hint and m.vcenter(lambda: m.vsphere.fcd_file_path(hint, v.vmdk, dc)) == v.vmdk:
        m.say(f"disk {v.vmdk} is already first class disk {hint} (recorded by the CSI driver)")
        fcd_id = hint
    else:
        fcd_id = m.vcenter(lambda: m.vsphere.register_fcd(v.vmdk, v.pv, dc))
        m.say(f"disk {v.vmdk} is first class disk {fcd_id}")
    # A disk without keepAfterDeleteVm is deleted with a node VM it is attached to; the CSI
    # driver protects the disks it manages, and RegisterDisk (or a vCenter before 8.0u3)
    # does not set the flag.
    if not m.vcenter(lambda: m.vsphere.protect_fcd(fcd_id, v.vmdk, dc)):
        raise PermanentError(
            f"vCenter did not keep the keepAfterDeleteVm flag on first class disk {fcd_id} "
            f"({v.vmdk}); without it the disk is deleted with a node VM it is attached to"
        )
    return asdict(FcdResult(fcd_id, keep_after_delete_vm=True))


def recorded_fcd(m: Context, vmdk: str) -> str | None:
    """The FCD id of `vmdk` as the CSI driver recorded it (its CnsVSphereVolumeMigration, kept in
    the backup), if it did."""
    folder = m.workdir.backup_dir / "cnsvspherevolumemigration"
    for path in sorted(folder.glob("*.yaml")) if folder.exists() else []:
        record = m.workdir.load_backup("CnsVSphereVolumeMigration", path.stem)
        if record.get("spec", {}).get("volumepath") == vmdk:
            return str(record["metadata"]["name"])
    return None


# -- the kinds of step defined here (none has anything to undo) --------------------------------

DETACH = Kind(StepKind.DETACH, wait_detached, nothing, needs=crud("VolumeAttachment", "list", "watch"))
CNS_RELEASE = Kind(
    StepKind.CNS_RELEASE, wait_cns_release, nothing, needs=crud("CnsVSphereVolumeMigration", "list", "watch")
)
FCD = Kind(StepKind.FCD, ensure_fcd, nothing, needs=(), recorded_after=True)
"""vCenter only: Datastore.FileManagement, checked by preflight `vcenter-privileges`."""
KINDS = (DETACH, CNS_RELEASE, FCD)
