"""The behaviours of the real components that the migration stands on, proven on testenv."""

from __future__ import annotations

import base64
import configparser
import json
import time
from pathlib import Path
from typing import Any

import pytest

from testenv import cluster, scenario, vc
from tests.e2e.conftest import Kubectl

pytestmark = pytest.mark.e2e


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def strip_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    obj = json.loads(json.dumps(obj))
    for field in (
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "managedFields",
        "ownerReferences",
    ):
        obj["metadata"].pop(field, None)
    obj.pop("status", None)
    return obj


def test_scenario_makes_ready_statefulset_on_intree_volumes(env: cluster.Env, ns: str, kubectl: Kubectl) -> None:
    made = scenario.create(env, "web", ns, replicas=3)

    pods = kubectl.get("pods", namespace=ns)["items"]
    assert sorted(p["metadata"]["name"] for p in pods) == ["web-0", "web-1", "web-2"]
    nodes = {n["metadata"]["name"]: n for n in kubectl.get("nodes")["items"]}
    for pod in pods:
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert pod["status"]["phase"] == "Running" and ready["Ready"] == "True"
        assert nodes[pod["spec"]["nodeName"]]["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    for volume in made.volumes:
        pvc = kubectl.get("pvc", volume.pvc, ns)
        assert pvc["status"]["phase"] == "Bound"
        assert pvc["spec"]["volumeName"] == volume.pv
        pv = kubectl.get("pv", volume.pv)
        assert pv["spec"]["vsphereVolume"]["volumePath"] == volume.vmdk
        assert pv["spec"]["storageClassName"] == "standard"
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
        assert vc.read_marker(env, volume.vmdk, len(volume.marker)) == volume.marker


def test_orphan_delete_keeps_pods_and_recreate_adopts_them(env: cluster.Env, ns: str, kubectl: Kubectl) -> None:
    scenario.create(env, "db", ns, replicas=3)
    sts = kubectl.get("statefulset", "db", ns)
    before = {p["metadata"]["name"]: p for p in kubectl.get("pods", namespace=ns)["items"]}
    assert all(p["metadata"]["ownerReferences"][0]["uid"] == sts["metadata"]["uid"] for p in before.values())

    kubectl("-n", ns, "delete", "statefulset", "db", "--cascade=orphan", "--wait=true")

    def orphaned() -> bool:
        pods = kubectl.get("pods", namespace=ns)["items"]
        return len(pods) == 3 and all(not p["metadata"].get("ownerReferences") for p in pods)

    wait_for(orphaned, what="the garbage collector to drop ownerReferences")
    after_orphan = {p["metadata"]["name"]: p["metadata"]["uid"] for p in kubectl.get("pods", namespace=ns)["items"]}
    assert after_orphan == {n: p["metadata"]["uid"] for n, p in before.items()}

    kubectl.apply(strip_server_fields(sts))
    new_uid = kubectl.get("statefulset", "db", ns)["metadata"]["uid"]

    def adopted() -> bool:
        pods = kubectl.get("pods", namespace=ns)["items"]
        return len(pods) == 3 and all(
            [o["uid"] for o in p["metadata"].get("ownerReferences", [])] == [new_uid] for p in pods
        )

    wait_for(adopted, what="the new StatefulSet to adopt the pods")
    scenario.wait_ready(env, "db", ns)
    for pod in kubectl.get("pods", namespace=ns)["items"]:
        name = pod["metadata"]["name"]
        assert pod["metadata"]["uid"] == before[name]["metadata"]["uid"], f"{name} was recreated"
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0


def test_retained_pv_is_released_and_prebound_pair_binds(env: cluster.Env, ns: str, kubectl: Kubectl) -> None:
    made = scenario.create(env, "solo", ns, replicas=1, pdb=False)
    volume = made.volumes[0]
    kubectl("-n", ns, "delete", "statefulset", "solo", "--wait=true")
    wait_for(lambda: not kubectl.exists("pod", "solo-0", ns), what="the pod to go")
    kubectl("patch", "pv", volume.pv, "-p", '{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}')
    kubectl("-n", ns, "delete", "pvc", volume.pvc, "--wait=true")

    wait_for(lambda: kubectl.get("pv", volume.pv)["status"]["phase"] == "Released", what="PV Released")
    assert vc.read_marker(env, volume.vmdk, len(volume.marker)) == volume.marker

    new_pv, new_pvc = f"{volume.pv}-csi", volume.pvc
    pv_doc = scenario.csi_pv(new_pv, "00000000-0000-0000-0000-000000000001", ns, new_pvc, "1Gi")
    pvc_doc = scenario.pvc_for(new_pvc, ns, "solo", "1Gi", "standard-rwo", "csi.vsphere.vmware.com")
    pvc_doc["spec"]["volumeName"] = new_pv
    kubectl.apply(pv_doc)
    kubectl.apply(pvc_doc)
    wait_for(lambda: kubectl.get("pvc", new_pvc, ns)["status"].get("phase") == "Bound", what="PVC Bound")
    assert kubectl.get("pv", new_pv)["status"]["phase"] == "Bound"
    assert kubectl.get("pv", volume.pv)["status"]["phase"] == "Released"


def test_pyvmomi_with_secret_credentials_finds_the_fcd_the_syncer_registered(
    env: cluster.Env, ns: str, kubectl: Kubectl
) -> None:
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim, vmodl

    made = scenario.create(env, "fcd", ns, replicas=1, pdb=False)
    volume = made.volumes[0]
    secret = kubectl.get("secret", "vsphere-config-secret", "vmware-system-csi")
    conf = configparser.ConfigParser()
    conf.read_string(base64.b64decode(secret["data"]["csi-vsphere.conf"]).decode())
    section = next(s for s in conf.sections() if s.startswith("VirtualCenter"))
    host = section.split('"')[1]
    values = {k: v.strip('"') for k, v in conf[section].items()}

    si = SmartConnect(
        host=host, port=int(values["port"]), user=values["user"], pwd=values["password"],
        disableSslCertValidation=values["insecure-flag"] == "true",
    )  # fmt: skip
    try:
        manager = si.RetrieveContent().vStorageObjectManager
        datacenter = next(c for c in si.content.rootFolder.childEntity if c.name == values["datacenters"])
        datastore = next(d for d in datacenter.datastore if d.name == cluster.DATASTORE)
        obj = manager.RetrieveVStorageObject(id=vim.vslm.ID(id=volume.fcd_id), datastore=datastore)
        assert obj.config.backing.filePath == volume.vmdk
        # Registered as vCenter 8.0u3 registers a CNS volume: kept when a VM holding it is deleted.
        assert obj.config.keepAfterDeleteVm
        ds_name, rel = volume.vmdk[1:].split("] ", 1)
        url = f"https://{host}/folder/{rel}?dcPath={values['datacenters']}&dsName={ds_name}"
        with pytest.raises((vim.fault.AlreadyExists, vmodl.fault.InvalidArgument)):
            manager.RegisterDisk(path=url, name=volume.pv)
    finally:
        Disconnect(si)
    assert vc.read_marker(env, volume.vmdk, len(volume.marker)) == volume.marker


def test_admin_cluster_secret_reaches_user_cluster(env: cluster.Env, tmp_path: Path) -> None:
    admin = Kubectl(env, kubeconfig=env.info()["admin_kubeconfig"])
    secret = admin.get("secret", "admin", cluster.USER_CLUSTER)
    user_conf = tmp_path / "user.conf"
    user_conf.write_bytes(base64.b64decode(secret["data"]["admin.conf"]))
    via_admin = Kubectl(env, kubeconfig=str(user_conf))
    names = sorted(n["metadata"]["name"] for n in via_admin.get("nodes")["items"])
    assert names == list(cluster.NODES)
    # ... and it is the user cluster, not the admin one: only the user cluster has the CSI secret.
    assert via_admin.exists("secret", "vsphere-config-secret", "vmware-system-csi")
    assert not admin.exists("namespace", "vmware-system-csi")


def test_nodes_hold_as_many_volumes_as_the_driver_allows(env: cluster.Env, kubectl: Kubectl) -> None:
    """Each CSINode says what the driver's node plugin would: the node VM's UUID as node ID and
    the driver's limit of 59 volumes, and each node VM has the SCSI targets to hold them."""
    from pyVmomi import vim

    si = vc.connect(env)
    for node in cluster.NODES:
        (driver,) = kubectl.get("csinode", node)["spec"]["drivers"]
        assert driver["name"] == "csi.vsphere.vmware.com"
        assert driver["allocatable"]["count"] == 59
        vm = si.content.searchIndex.FindByUuid(uuid=driver["nodeID"], vmSearch=True)
        assert vm is not None, f"{node}'s node ID is no VM"
        controllers = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualSCSIController)]
        # 15 targets per controller (7 is the controller's own), one taken by the boot disk. That
        # 59 disks really attach is proven in testenv/vcsim's own test.
        assert 15 * len(controllers) - 1 >= 59
