"""The test environment's view of the vCenter Simulator, through pyVmomi.

vcsim keeps each datastore as a folder on local disk, so tests can write marker bytes into a
VMDK's data file and read them back after a migration.
"""

from __future__ import annotations

import atexit
import contextlib
from pathlib import Path
from typing import Any

from testenv import cluster

MARKER_OFFSET = 4096


# `si.content` (read through the property collector) comes back from vcsim without
# vStorageObjectManager; `si.RetrieveContent()` has it. Use the latter for FCD calls.


_sessions: dict[int, Any] = {}


def connect(env: cluster.Env) -> Any:
    """The test process's one session with the simulator (per port), opened again if it ended.

    One session for the whole run: a session per call left thousands open in vcsim by the end of
    the suite (each with its TCP connection), and the simulator died under them in CI.
    """
    from pyVim.connect import SmartConnect

    port = int(env.info()["vcsim_port"])
    si = _sessions.get(port)
    if si is not None:
        with contextlib.suppress(Exception):
            if si.content.sessionManager.currentSession is not None:
                return si
    si = SmartConnect(
        host="127.0.0.1",
        port=port,
        user=cluster.VC_USER,
        pwd=cluster.VC_PASSWORD,
        disableSslCertValidation=True,
    )
    if port not in _sessions:
        atexit.register(lambda: _disconnect(port))
    _sessions[port] = si
    return si


def _disconnect(port: int) -> None:
    from pyVim.connect import Disconnect

    si = _sessions.pop(port, None)
    if si is not None:
        with contextlib.suppress(Exception):
            Disconnect(si)


def _datacenter(si: Any) -> Any:
    from pyVmomi import vim

    for child in si.content.rootFolder.childEntity:
        if isinstance(child, vim.Datacenter) and child.name == cluster.DATACENTER:
            return child
    raise RuntimeError(f"datacenter {cluster.DATACENTER} not found")


def _datastore(si: Any) -> Any:
    for ds in _datacenter(si).datastore:
        if ds.name == cluster.DATASTORE:
            return ds
    raise RuntimeError(f"datastore {cluster.DATASTORE} not found")


def vm_uuids(env: cluster.Env) -> list[str]:
    """BIOS UUIDs of the simulator's VMs, in name order (one per kwok node)."""
    from pyVmomi import vim

    si = connect(env)
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    try:
        vms = sorted(view.view, key=lambda vm: vm.name)
        return [vm.config.uuid for vm in vms]
    finally:
        view.DestroyView()


def datastore_folder(env: cluster.Env) -> Path:
    """The local folder that backs the simulator's datastore."""
    url = _datastore(connect(env)).summary.url
    return Path(url.removeprefix("ds://"))


def data_file(env: cluster.Env, ds_path: str) -> Path:
    """Local file holding the data of `[ds] dir/x.vmdk` (x-flat.vmdk when there is one)."""
    rel = ds_path.split("] ", 1)[1]
    plain = datastore_folder(env) / rel
    flat = plain.with_name(plain.stem + "-flat.vmdk")
    return flat if flat.exists() else plain


def create_vmdk(env: cluster.Env, ds_path: str, size_mib: int, marker: bytes) -> None:
    """Create a thin VMDK as the in-tree provisioner did, then write `marker` into its data."""
    from pyVmomi import vim

    si = connect(env)
    dc = _datacenter(si)
    folder = ds_path.rsplit("/", 1)[0]
    with contextlib.suppress(vim.fault.FileAlreadyExists):
        si.content.fileManager.MakeDirectory(name=folder, datacenter=dc, createParentDirectories=True)
    spec = vim.VirtualDiskManager.FileBackedVirtualDiskSpec(
        diskType="thin", adapterType="lsiLogic", capacityKb=size_mib * 1024
    )
    _wait_task(
        si,
        si.content.virtualDiskManager.CreateVirtualDisk_Task(name=ds_path, datacenter=dc, spec=spec),
    )
    write_marker(env, ds_path, marker)


def _wait_task(si: Any, task: Any, timeout: float = 60) -> None:
    """Wait for a task reading only info.state/info.error: vcsim reports the disk manager as
    the task's entity, which pyVmomi rejects when it deserializes the whole TaskInfo."""
    import time

    from pyVmomi import vmodl

    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=task)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=type(task), pathSet=["info.state", "info.error"])],
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        props = {p.name: p.val for p in si.content.propertyCollector.RetrieveContents([spec])[0].propSet}
        if props.get("info.state") == "success":
            return
        if props.get("info.state") == "error":
            raise RuntimeError(f"vCenter task failed: {props.get('info.error')}")
        time.sleep(0.05)
    raise TimeoutError("vCenter task did not finish")


def write_marker(env: cluster.Env, ds_path: str, marker: bytes) -> None:
    with open(data_file(env, ds_path), "r+b") as handle:
        handle.seek(MARKER_OFFSET)
        handle.write(marker)


def read_marker(env: cluster.Env, ds_path: str, length: int) -> bytes:
    with open(data_file(env, ds_path), "rb") as handle:
        handle.seek(MARKER_OFFSET)
        return handle.read(length)


def register_fcd(env: cluster.Env, ds_path: str, name: str) -> str:
    """Register an existing VMDK as a First Class Disk, as the CSI driver does; return its id."""
    import urllib.parse

    si = connect(env)
    ds, rel = ds_path[1:].split("] ", 1)
    query = urllib.parse.urlencode({"dcPath": cluster.DATACENTER, "dsName": ds})
    url = f"https://127.0.0.1:{env.info()['vcsim_port']}/folder/{rel}?{query}"
    obj = si.RetrieveContent().vStorageObjectManager.RegisterDisk(path=url, name=name)
    return str(obj.config.id.id)


def fcd_path(env: cluster.Env, fcd_id: str, si: Any = None) -> str | None:
    """`[ds] path` of a First Class Disk."""
    from pyVmomi import vim

    si = si or connect(env)
    ds = _datastore(si)
    try:
        obj = si.RetrieveContent().vStorageObjectManager.RetrieveVStorageObject(id=vim.vslm.ID(id=fcd_id), datastore=ds)
    except vim.fault.NotFound:
        return None
    return str(obj.config.backing.filePath)


def keep_after_delete_vm(env: cluster.Env, fcd_id: str, value: bool | None = None) -> bool:
    """The FCD's keepAfterDeleteVm control flag; with `value`, set or clear it first (as a
    disk registered by RegisterDisk, or by a vCenter before 8.0u3, lacks it)."""
    from pyVmomi import vim

    si = connect(env)
    vsom = si.RetrieveContent().vStorageObjectManager
    ds, disk_id = _datastore(si), vim.vslm.ID(id=fcd_id)
    if value is True:
        vsom.SetVStorageObjectControlFlags(id=disk_id, datastore=ds, controlFlags=["keepAfterDeleteVm"])
    elif value is False:
        vsom.ClearVStorageObjectControlFlags(id=disk_id, datastore=ds, controlFlags=["keepAfterDeleteVm"])
    return bool(vsom.RetrieveVStorageObject(id=disk_id, datastore=ds).config.keepAfterDeleteVm)


def vm_disks(vm: Any) -> list[str]:
    from pyVmomi import vim

    disks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    return [str(getattr(d.backing, "fileName", "")) for d in disks]


def cns_volumes(env: cluster.Env, volume_ids: list[str]) -> dict[str, dict[str, Any]]:
    """What vCenter's Cloud Native Storage knows of these volumes (CnsQueryVolume on the
    `/vsanHealth` endpoint, where the CSI driver registers them): id -> name, capacity, backing
    disk id and the Kubernetes entities (type, namespace, name) in its metadata.

    The request is written by hand: pyVmomi leaves out the filter's xsi:type, and the simulator
    then decodes no filter at all."""
    import ssl
    import urllib.request
    import xml.etree.ElementTree as ET
    from xml.sax.saxutils import escape

    si = connect(env)
    ids = "".join(f"<volumeIds><id>{escape(i)}</id></volumeIds>" for i in volume_ids)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns="urn:vsan"><soapenv:Body>'
        '<CnsQueryVolume><_this type="CnsVolumeManager">cns-volume-manager</_this>'
        f'<filter xsi:type="CnsQueryFilter">{ids}</filter></CnsQueryVolume>'
        "</soapenv:Body></soapenv:Envelope>"
    )
    request = urllib.request.Request(
        f"https://127.0.0.1:{env.info()['vcsim_port']}/vsanHealth",
        data=body.encode(),
        headers={"Content-Type": "text/xml", "SOAPAction": "urn:vsan/8.0.3.0", "Cookie": si._stub.cookie},
    )
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        tree = ET.fromstring(response.read())

    def text(node: ET.Element, tag: str) -> str | None:
        found = node.find(f".//{{urn:vsan}}{tag}")
        return found.text if found is not None else None

    result: dict[str, dict[str, Any]] = {}
    for volume in tree.iter("{urn:vsan}volumes"):
        volume_id = volume.find("{urn:vsan}volumeId/{urn:vsan}id")
        backing = volume.find("{urn:vsan}backingObjectDetails")
        entities = [
            {
                "type": text(entity, "entityType"),
                "name": text(entity, "entityName"),
                "namespace": text(entity, "namespace") or "",
            }
            for entity in volume.iterfind("{urn:vsan}metadata/{urn:vsan}entityMetadata")
        ]
        capacity = text(backing, "capacityInMb") if backing is not None else None
        result[volume_id.text if volume_id is not None and volume_id.text else ""] = {
            "name": text(volume, "name"),
            "capacity_mb": int(capacity) if capacity else None,
            "backing_disk_id": text(backing, "backingDiskId") if backing is not None else None,
            "entities": entities,
        }
    return result


def fcd_capacity_mb(env: cluster.Env, fcd_id: str) -> int:
    from pyVmomi import vim

    si = connect(env)
    obj = si.RetrieveContent().vStorageObjectManager.RetrieveVStorageObject(
        id=vim.vslm.ID(id=fcd_id), datastore=_datastore(si)
    )
    return int(obj.config.capacityInMB)


def create_vm(env: cluster.Env, name: str) -> Any:
    """A powered-off VM with one SCSI controller and no disk, outside the cluster (as a backup
    proxy appliance would be): delete it with `destroy_vm`."""
    from pyVmomi import vim

    si = connect(env)
    dc = _datacenter(si)
    pool = next(c for c in dc.hostFolder.childEntity if isinstance(c, vim.ClusterComputeResource)).resourcePool
    controller = vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
        device=vim.vm.device.ParaVirtualSCSIController(key=1000, busNumber=0, sharedBus="noSharing"),
    )
    config = vim.vm.ConfigSpec(
        name=name,
        guestId="otherGuest64",
        files=vim.vm.FileInfo(vmPathName=f"[{cluster.DATASTORE}]"),
        deviceChange=[controller],
    )
    _wait_task(si, dc.vmFolder.CreateVM_Task(config=config, pool=pool))
    return next(vm for vm in dc.vmFolder.childEntity if getattr(vm, "name", None) == name)


def hot_add_disk(env: cluster.Env, vm: Any, ds_path: str) -> None:
    """Attach the existing VMDK `ds_path` to `vm` (ReconfigVM, no file created)."""
    from pyVmomi import vim

    controller = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualSCSIController))
    disk = vim.vm.device.VirtualDisk(
        key=-1,
        controllerKey=controller.key,
        unitNumber=1,
        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=ds_path, diskMode="persistent"),
    )
    change = vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.add, device=disk)
    _wait_task(connect(env), vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[change])))


def remove_disk(env: cluster.Env, vm: Any, ds_path: str) -> None:
    """Detach `ds_path` from `vm`, keeping its file."""
    from pyVmomi import vim

    disk = next(
        d
        for d in vm.config.hardware.device
        if isinstance(d, vim.vm.device.VirtualDisk) and getattr(d.backing, "fileName", None) == ds_path
    )
    change = vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.remove, device=disk)
    _wait_task(connect(env), vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[change])))


def destroy_vm(env: cluster.Env, vm: Any) -> None:
    _wait_task(connect(env), vm.Destroy_Task())
