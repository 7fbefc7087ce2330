"""How the session's disk index (vsphere/client.py, _DiskIndex) applies vCenter's updates: a
change to the device list carries the whole list, whatever its operation is named (vcsim names it
after the device change that caused it, `remove` included), and a VM's removal drops its disks.
The update stream itself is proven against the vCenter Simulator (tests/e2e/test_vsphere_client)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pyVmomi import vim

from kubectl_csi_migrate.vsphere.client import DEVICES, _disk_files, _DiskIndex


def disk(path: str, parent: str | None = None) -> Any:
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=path, diskMode="persistent")
    if parent:
        backing.parent = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=parent, diskMode="persistent")
    return vim.vm.device.VirtualDisk(key=2000, backing=backing)


def update(kind: str, vm: str, *changes: tuple[str, str, Any]) -> Any:
    return SimpleNamespace(
        kind=kind,
        obj=SimpleNamespace(_moId=vm),
        changeSet=[SimpleNamespace(name=n, op=op, val=v) for n, op, v in changes],
    )


def test_disk_files_follow_snapshot_parents_and_skip_other_devices() -> None:
    nic = vim.vm.device.VirtualVmxnet3(key=4000)
    files = _disk_files([nic, disk("[ds] vm/a-000001.vmdk", "[ds] kubevols/a.vmdk")])
    assert files == ("[ds] vm/a-000001.vmdk", "[ds] kubevols/a.vmdk")


def test_updates_replace_the_whole_list_whatever_the_operation_and_a_leave_drops_the_vm() -> None:
    index = _DiskIndex(collector=None)
    index._apply(update("enter", "vm-1", ("name", "assign", "proxy"), (DEVICES, "assign", [disk("[ds] a.vmdk")])))
    assert index.vms == {"vm-1": ("proxy", ("[ds] a.vmdk",))}
    # another disk removed: the full list that is left, under the name of the operation
    index._apply(update("modify", "vm-1", (DEVICES, "remove", [disk("[ds] a.vmdk")])))
    assert index.vms["vm-1"] == ("proxy", ("[ds] a.vmdk",))
    index._apply(update("modify", "vm-1", (DEVICES, "assign", [])))
    assert index.vms["vm-1"] == ("proxy", ())
    index._apply(update("modify", "vm-1", (DEVICES, "add", [disk("[ds] b.vmdk")]), ("name", "assign", "proxy-2")))
    assert index.vms["vm-1"] == ("proxy-2", ("[ds] b.vmdk",))
    index._apply(update("modify", "vm-1", (DEVICES, "indirectRemove", None)))
    assert index.vms["vm-1"] == ("proxy-2", ())
    index._apply(update("leave", "vm-1"))
    assert index.vms == {}
