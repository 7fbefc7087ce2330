"""vCenter access against the vCenter Simulator of testenv: login and its failures, TLS, and
idempotent First Class Disk registration of in-tree VMDKs."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import socket
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubectl_csi_migrate.errors import (
    PermanentError,
    TemporaryError,
    VCenterLoginFailed,
    VCenterNotFound,
    VCenterTLSError,
    VCenterUnreachable,
)
from kubectl_csi_migrate.vsphere.client import VCenter
from kubectl_csi_migrate.vsphere.credentials import VCenterConfig, resolve
from testenv import cluster, scenario, vc
from tests.e2e.conftest import Kubectl

pytestmark = pytest.mark.e2e


def no_secret() -> tuple[str, str] | None:
    return None


@pytest.fixture(scope="module")
def config(env: cluster.Env) -> VCenterConfig:
    """What a user with `eval "$(scripts/testenv env)"` gets: GOVC_* with GOVC_INSECURE=true."""
    return resolve({}, None, env.exports(), no_secret)


@pytest.fixture
def vcenter(config: VCenterConfig) -> Iterator[VCenter]:
    with VCenter.connect(config, timeout=10) as session:
        yield session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_pem(config: VCenterConfig) -> str:
    return ssl.get_server_certificate((config.host, config.port))


def test_connect_with_govc_environment(config: VCenterConfig, vcenter: VCenter) -> None:
    assert config.source == "GOVC_* environment"
    assert config.insecure is True
    assert "vCenter Server" in vcenter.about()
    assert vcenter.datacenter(None).name == cluster.DATACENTER
    assert vcenter.datacenter(f"/{cluster.DATACENTER}").name == cluster.DATACENTER
    with pytest.raises(VCenterNotFound, match="DC-nope"):
        vcenter.datacenter("DC-nope")


def test_connect_with_the_cluster_secret(env: cluster.Env, kubectl: Kubectl) -> None:
    secret = kubectl.get("secret", "vsphere-config-secret", "vmware-system-csi")
    source = "secret vmware-system-csi/vsphere-config-secret"

    def loader() -> tuple[str, str]:
        return base64.b64decode(secret["data"]["csi-vsphere.conf"]).decode(), source

    config = resolve({}, None, {}, loader)
    assert config.source == source
    assert config.datacenters == (cluster.DATACENTER,)
    with VCenter.connect(config, timeout=10) as session:
        assert session.datacenter(None).name == cluster.DATACENTER


def test_wrong_password_is_permanent_and_never_shown(config: VCenterConfig) -> None:
    wrong = dataclasses.replace(config, password="Wr0ng-" + uuid.uuid4().hex)
    with pytest.raises(VCenterLoginFailed) as info:
        VCenter.connect(wrong, timeout=10)
    assert isinstance(info.value, PermanentError)
    message = str(info.value)
    assert f"login failed for user {config.user}" in message
    assert config.source in message
    assert wrong.password not in message and config.password not in message
    assert wrong.password not in repr(info.value)


def test_unreachable_port_is_temporary(config: VCenterConfig) -> None:
    closed = dataclasses.replace(config, port=free_port())
    with pytest.raises(VCenterUnreachable) as info:
        VCenter.connect(closed, timeout=5)
    assert isinstance(info.value, TemporaryError)
    assert f"{closed.host}:{closed.port} unreachable" in str(info.value)


def test_unresolvable_host_is_temporary(config: VCenterConfig) -> None:
    nowhere = dataclasses.replace(config, host="vcenter.invalid")
    with pytest.raises(TemporaryError, match=r"vcenter\.invalid:\d+ unreachable"):
        VCenter.connect(nowhere, timeout=5)


def test_tls_verification_against_self_signed_vcsim_is_permanent(config: VCenterConfig) -> None:
    # pyVmomi alone would silently skip verification for 127.0.0.1: this must not.
    verified = dataclasses.replace(config, insecure=False)
    with pytest.raises(VCenterTLSError) as info:
        VCenter.connect(verified, timeout=10)
    assert isinstance(info.value, PermanentError)
    assert "--vsphere-insecure" in str(info.value)
    assert "--vsphere-ca-file" in str(info.value)


def test_tls_verified_with_ca_file(config: VCenterConfig, tmp_path: Path) -> None:
    ca = tmp_path / "vcsim-ca.pem"
    ca.write_text(server_pem(config))
    verified = dataclasses.replace(config, insecure=False, ca_file=str(ca))
    with VCenter.connect(verified, timeout=10) as session:
        assert "vCenter Server" in session.about()

    other = tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(tmp_path / "other.key"), "-subj", "/CN=other-ca",
         "-days", "1", "-out", str(other)],
        check=True, capture_output=True,
    )  # fmt: skip
    with pytest.raises(VCenterTLSError, match="not trusted by the CA file"):
        VCenter.connect(dataclasses.replace(verified, ca_file=str(other)), timeout=10)

    missing = dataclasses.replace(verified, ca_file=str(tmp_path / "nope.pem"))
    with pytest.raises(PermanentError, match=r"nope\.pem"):
        VCenter.connect(missing, timeout=10)


def test_tls_pinned_thumbprint(config: VCenterConfig) -> None:
    der = ssl.PEM_cert_to_DER_cert(server_pem(config))
    sha256 = hashlib.sha256(der).hexdigest().upper()
    colons = ":".join(sha256[i : i + 2] for i in range(0, len(sha256), 2))
    pinned = dataclasses.replace(config, insecure=False, thumbprint=colons)
    with VCenter.connect(pinned, timeout=10) as session:
        assert session.datacenter(None).name == cluster.DATACENTER

    wrong = dataclasses.replace(pinned, thumbprint="00" * 20)
    with pytest.raises(VCenterTLSError, match="thumbprint"):
        VCenter.connect(wrong, timeout=10)


def test_register_scenario_vmdk_is_idempotent_and_keeps_data(env: cluster.Env, ns: str, vcenter: VCenter) -> None:
    made = scenario.create(env, "fcd", ns, replicas=1, pdb=False)
    volume = made.volumes[0]

    assert vcenter.disk_exists(volume.vmdk, None)
    # The CSI syncer registered the in-tree disk when its claim was bound: the same FCD is found.
    assert volume.fcd_id
    assert vcenter.find_fcd(volume.vmdk, None) == volume.fcd_id
    # The pod runs, so the CSI driver has attached its disk to the node's VM.
    assert len(vcenter.attached_vms(volume.vmdk)) == 1

    assert vcenter.register_fcd(volume.vmdk, volume.pv, None) == volume.fcd_id
    assert vcenter.fcd_file_path(volume.fcd_id, volume.vmdk, cluster.DATACENTER) == volume.vmdk
    assert vcenter.register_fcd(volume.vmdk, "another-name", cluster.DATACENTER) == volume.fcd_id
    assert vc.read_marker(env, volume.vmdk, len(volume.marker)) == volume.marker
    assert vcenter.disk_exists(volume.vmdk, None)


def test_register_resolves_the_already_registered_fault(
    env: cluster.Env, vcenter: VCenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk registered already (by the CSI driver, or a race): RegisterDisk refuses it, and
    the existing id is returned, from the fault (vCenter) or from a fresh search of the datastore
    (vcsim's fault names no id); the datastore is not searched before registering."""
    name = f"race-{uuid.uuid4().hex[:8]}"
    vmdk = f"[{cluster.DATASTORE}] kubevols/{name}.vmdk"
    marker = f"marker-{name}".encode()
    vc.create_vmdk(env, vmdk, 4, marker)
    assert vcenter.find_fcd(vmdk, None) is None  # indexed before the registration below
    other_id = vc.register_fcd(env, vmdk, name)
    assert vcenter.find_fcd(vmdk, None) is None, "the index is per session until read fresh"

    real_find = vcenter.find_fcd
    calls: list[bool] = []

    def counted(path: str, datacenter: str | None, fresh: bool = False) -> str | None:
        calls.append(fresh)
        return real_find(path, datacenter, fresh)

    monkeypatch.setattr(vcenter, "find_fcd", counted)
    assert vcenter.register_fcd(vmdk, name, None) == other_id
    assert calls in ([], [True])  # vCenter: the fault's id; vcsim: one fresh search
    assert vc.read_marker(env, vmdk, len(marker)) == marker


def test_missing_disk(vcenter: VCenter) -> None:
    vmdk = f"[{cluster.DATASTORE}] kubevols/missing-{uuid.uuid4().hex}.vmdk"
    assert not vcenter.disk_exists(vmdk, None)
    assert not vcenter.disk_exists(f"[{cluster.DATASTORE}] no-such-dir/x.vmdk", None)
    assert vcenter.find_fcd(vmdk, None) is None
    with pytest.raises(VCenterNotFound, match="does not exist"):
        vcenter.register_fcd(vmdk, "missing", None)
    with pytest.raises(VCenterNotFound, match="no datastore 'nope'"):
        vcenter.find_fcd("[nope] kubevols/x.vmdk", None)


def test_attached_vms_finds_a_vm_disk(vcenter: VCenter) -> None:
    from pyVmomi import vim

    content = vcenter.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        vm = sorted(view.view, key=lambda v: v.name)[0]
        disk = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))
        path, name = disk.backing.fileName, vm.name
    finally:
        view.DestroyView()
    assert name in vcenter.attached_vms(path)
    # "[folder/ds] x" names the same file as "[ds] x"
    bracket, rel = path[1:].split("] ", 1)
    assert name in vcenter.attached_vms(f"[some-folder/{bracket}] {rel}")


def test_attached_vms_sees_a_disk_hot_added_to_a_vm_outside_the_cluster(env: cluster.Env, vcenter: VCenter) -> None:
    """Every VM of the inventory is looked at, not only the nodes': a disk hot-added to a VM
    outside the cluster (a backup proxy), its removal, and the VM's deletion are each seen on the
    very next call of the same session."""
    name = f"proxy-{uuid.uuid4().hex[:8]}"
    vmdk = f"[{cluster.DATASTORE}] kubevols/{name}.vmdk"
    vc.create_vmdk(env, vmdk, 4, f"marker-{name}".encode())
    assert vcenter.attached_vms(vmdk) == []
    vm = vc.create_vm(env, name)
    try:
        assert vcenter.attached_vms(vmdk) == []
        vc.hot_add_disk(env, vm, vmdk)
        assert vcenter.attached_vms(vmdk) == [name]
        bracket, rel = vmdk[1:].split("] ", 1)
        assert vcenter.attached_vms(f"[some-folder/{bracket}] {rel}") == [name]
        vc.remove_disk(env, vm, vmdk)
        assert vcenter.attached_vms(vmdk) == []
        vc.hot_add_disk(env, vm, vmdk)
        assert vcenter.attached_vms(vmdk) == [name]
    finally:
        vc.destroy_vm(env, vm)
    assert vcenter.attached_vms(vmdk) == []  # the VM gone: its disks with it
