"""The migration against the real vSphere CSI driver: what a user has before and after.

Before: an in-tree claim is served through CSI migration (the real external-attacher and the
driver's controller attach it; the real syncer registered its disk and recorded it in a
CnsVSphereVolumeMigration object), but it can neither grow nor be snapshotted. After a rolling
`kubectl csi-migrate sts`: each volume is a CNS volume carrying its claim's name, attaches through
the same driver as a CSI volume, keeps its bytes, grows on `kubectl patch`, and snapshots.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from testenv import cluster, scenario, vc
from tests.e2e.conftest import Kubectl, run_plugin

pytestmark = pytest.mark.e2e

T = TypeVar("T")
DRIVER = "csi.vsphere.vmware.com"


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 90) -> T:
    """Poll until `probe` returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def attachment(kubectl: Kubectl, pv: str) -> dict[str, Any] | None:
    """The VolumeAttachment of a PV once the attacher has attached it."""
    for va in kubectl.get("volumeattachments")["items"]:
        if va["spec"]["source"].get("persistentVolumeName") == pv and va.get("status", {}).get("attached"):
            return dict(va)
    return None


def node_vm_disks(env: cluster.Env, kubectl: Kubectl, node: str) -> list[str]:
    uuid = kubectl.get("node", node)["spec"]["providerID"].removeprefix("vsphere://")
    si = vc.connect(env)
    vm = si.content.searchIndex.FindByUuid(uuid=uuid, vmSearch=True)
    return vc.vm_disks(vm)


def assert_attached_by_driver(env: cluster.Env, kubectl: Kubectl, ns: str, pod: str, pv: str, vmdk: str) -> None:
    va = eventually(lambda: attachment(kubectl, pv), f"the attacher to attach {pv}")
    assert va["spec"]["attacher"] == DRIVER
    assert "external-attacher/csi-vsphere-vmware-com" in va["metadata"]["finalizers"]
    # Set from the controller's ControllerPublishVolume answer: the disk's SCSI UUID on the VM.
    assert va["status"]["attachmentMetadata"]["type"] == "vSphere CNS Block Volume"
    assert va["status"]["attachmentMetadata"]["diskUUID"]
    node = kubectl.get("pod", pod, ns)["spec"]["nodeName"]
    assert va["spec"]["nodeName"] == node
    assert vmdk in node_vm_disks(env, kubectl, node), f"{vmdk} is not on {node}'s VM"


def cns_claim(env: cluster.Env, volume_id: str) -> tuple[str, str] | None:
    """(namespace, name) of the claim CNS has in the volume's metadata, once the syncer put it there."""
    volume = vc.cns_volumes(env, [volume_id]).get(volume_id)
    for entity in volume["entities"] if volume else []:
        if entity["type"] == "PERSISTENT_VOLUME_CLAIM":
            return entity["namespace"], entity["name"]
    return None


GAVE_UP = "PVCUpdated: Error occurred while polling to check if volume is marked as container volume"


def syncer_gave_up_on_a_claim(env: cluster.Env, since: int) -> bool:
    """Whether the syncer logged, past byte `since` of its log, that it stopped waiting to put a
    claim into its volume's CNS metadata. The driver's claim handler (`csiPVCUpdated`) waits at
    most a minute for the claim's static PV to be registered, one claim at a time; when other
    migrations keep the syncer busy longer, it skips that claim until its next full sync (30 min
    by default). The line does not name the claim."""
    with open(env.logs / "vsphere-syncer.log", "rb") as log:
        log.seek(since)
        return GAVE_UP.encode() in log.read()


def snapshot(kubectl: Kubectl, ns: str, name: str, claim: str) -> None:
    kubectl.apply(
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "volumeSnapshotClassName": "vsphere-snapshots",
                "source": {"persistentVolumeClaimName": claim},
            },
        }
    )


def snapshot_status(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    return dict(kubectl.get("volumesnapshot", name, ns).get("status") or {})


@pytest.mark.leg
def test_intree_volume_is_attached_through_csi_migration_by_the_real_driver(
    env: cluster.Env, ns: str, kubectl: Kubectl
) -> None:
    made = scenario.create(env, "solo", ns, replicas=1, pdb=False)
    (volume,) = made.volumes
    records = {r["spec"]["volumepath"]: r for r in kubectl.get("cnsvspherevolumemigrations")["items"]}
    assert volume.vmdk in records, "the syncer recorded no CnsVSphereVolumeMigration for the in-tree disk"
    fcd_id = records[volume.vmdk]["spec"]["volumeid"]
    # The syncer registered the VMDK itself as a First Class Disk (no copy) and in CNS.
    assert vc.fcd_path(env, fcd_id) == volume.vmdk
    assert fcd_id in vc.cns_volumes(env, [fcd_id])
    assert_attached_by_driver(env, kubectl, ns, "solo-0", volume.pv, volume.vmdk)
    assert vc.read_marker(env, volume.vmdk, len(volume.marker)) == volume.marker


@pytest.mark.leg
@pytest.mark.slow
def test_after_a_rolling_migration_claims_are_cns_volumes_that_grow_and_snapshot(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    made = scenario.create(env, "db", ns, replicas=2)
    grow, snap = sorted(made.volumes, key=lambda v: v.ordinal)

    # Before: what the user cannot do on an in-tree claim.
    try:
        kubectl("-n", ns, "patch", "pvc", grow.pvc, "-p", '{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}')
        raise AssertionError("an in-tree claim was resized")
    except RuntimeError as refused:
        assert "only dynamically provisioned pvc can be resized" in str(refused), refused
    snapshot(kubectl, ns, "before", snap.pvc)
    before = eventually(
        lambda: snapshot_status(kubectl, ns, "before").get("error"), "the in-tree snapshot to be refused", 60
    )
    assert not snapshot_status(kubectl, ns, "before").get("readyToUse")
    print("in-tree snapshot refused:", before.get("message"))
    kubectl("-n", ns, "delete", "volumesnapshot", "before", "--wait=true")

    syncer_log_size = (env.logs / "vsphere-syncer.log").stat().st_size
    proc = run_plugin(
        env_vars, "sts", "db", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
        "--working-directory", str(tmp_path / "run"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    for v in made.volumes:
        pv = kubectl.get("pv", v.pv)
        handle = pv["spec"]["csi"]["volumeHandle"]
        assert vc.fcd_path(env, handle) == v.vmdk, "the CSI volume is not the original disk"
        # The real syncer registered the static PV in CNS and put the claim into its metadata,
        # unless it logged that it gave up waiting (other tests' migrations beside this one; the
        # gdc-1.30 leg's driver 3.3.1 did so in suite run 15): then the volume must be registered.
        try:
            assert eventually(lambda h=handle: cns_claim(env, h), f"CNS to know {v.pvc}") == (ns, v.pvc)
        except AssertionError:
            if not syncer_gave_up_on_a_claim(env, syncer_log_size):
                raise
            eventually(lambda h=handle: h in vc.cns_volumes(env, [h]), f"CNS to know the volume of {v.pvc}")
            print(f"the syncer gave up putting a claim into CNS ({GAVE_UP}); {v.pvc}'s volume is registered")
        assert_attached_by_driver(env, kubectl, ns, f"db-{v.ordinal}", v.pv, v.vmdk)
        assert vc.read_marker(env, v.vmdk, len(v.marker)) == v.marker

    # Expansion: the external-resizer and the controller grow the PV and the disk.
    handle = kubectl.get("pv", grow.pv)["spec"]["csi"]["volumeHandle"]
    assert vc.fcd_capacity_mb(env, handle) < 2048
    kubectl("-n", ns, "patch", "pvc", grow.pvc, "-p", '{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}')
    eventually(lambda: kubectl.get("pv", grow.pv)["spec"]["capacity"]["storage"] == "2Gi", "the PV to grow to 2Gi", 120)
    assert vc.fcd_capacity_mb(env, handle) == 2048
    assert vc.read_marker(env, grow.vmdk, len(grow.marker)) == grow.marker

    # Snapshots: the same claim that was refused before.
    snapshot(kubectl, ns, "after", snap.pvc)
    ready = eventually(
        lambda: snapshot_status(kubectl, ns, "after").get("readyToUse"), "the snapshot to be readyToUse", 120
    )
    assert ready is True
    content = snapshot_status(kubectl, ns, "after")["boundVolumeSnapshotContentName"]
    snapshot_handle = kubectl.get("volumesnapshotcontent", content)["status"]["snapshotHandle"]
    assert snapshot_handle.startswith(kubectl.get("pv", snap.pv)["spec"]["csi"]["volumeHandle"] + "+")
    print(json.dumps({"expanded": grow.pvc, "snapshot": snapshot_handle}))


def full_syncs_ended(env: cluster.Env) -> int:
    """How many full syncs the syncer has logged as ended ("FullSync for VC ...: end", in every
    driver release here), over its restarts."""
    log = env.logs / "vsphere-syncer.log"
    return sum("FullSync for VC" in line and ": end" in line for line in log.read_text(errors="replace").splitlines())


@pytest.mark.leg
@pytest.mark.serial
def test_after_a_migration_the_syncers_full_sync_keeps_every_volume_registered_and_attachable(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """Users who "copy the PV, delete the original" meet CnsNotRegisteredFault at attach: the
    syncer unregisters the FCD when the in-tree PV carrying `migrated-to` goes, after the new PV
    was registered. After a migration by this tool, the driver's syncer restarted (it runs a full
    sync at start, as every 30 minutes) still has every new volume registered in CNS, and each
    attaches again through the driver once its pod is gone and back."""
    made = scenario.create(env, "sync", ns, replicas=2)
    proc = run_plugin(
        env_vars, "sts", "sync", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
        "--working-directory", str(tmp_path / "run"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    handles = {v.pv: kubectl.get("pv", v.pv)["spec"]["csi"]["volumeHandle"] for v in made.volumes}
    for v in made.volumes:
        eventually(lambda h=handles[v.pv]: cns_claim(env, h), f"CNS to know {v.pvc}")

    ended = full_syncs_ended(env)
    env.restart("vsphere-syncer")
    eventually(lambda: full_syncs_ended(env) > ended, "the restarted syncer's full sync to end", 180)
    known = vc.cns_volumes(env, list(handles.values()))
    assert set(handles.values()) <= set(known), f"unregistered by the full sync: {set(handles.values()) - set(known)}"
    for v in made.volumes:
        assert cns_claim(env, handles[v.pv]) == (ns, v.pvc)

    # Attach again: every pod gone (the disks detached), then back.
    kubectl("-n", ns, "scale", "statefulset", "sync", "--replicas=0")
    eventually(lambda: not any(attachment(kubectl, pv) for pv in handles), "the volumes to be detached", 120)
    kubectl("-n", ns, "scale", "statefulset", "sync", f"--replicas={made.replicas}")
    for v in made.volumes:
        assert_attached_by_driver(env, kubectl, ns, f"sync-{v.ordinal}", v.pv, v.vmdk)
        assert vc.read_marker(env, v.vmdk, len(v.marker)) == v.marker
