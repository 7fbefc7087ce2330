"""Errors, end to end: every way a user can get it wrong, and every blocking preflight finding.

Each test builds one StatefulSet in its own namespace, runs `kubectl csi-migrate` the way a user
does, and asserts the same contract (design.md sections 2 and 4): the exit code (1 failed or
blocked, 2 usage), an `error:` line on stderr that names the problem (for preflight, the FAIL
check's message), stdout free of errors (and valid JSON with `-o json`), no object changed (the
resourceVersions of the StatefulSet, its pods and claims, and the PVs; no disk registered as a
first class disk), no working directory created, and no secret (the vCenter password, a token)
printed anywhere.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testenv import cluster, scenario, vc
from tests.e2e.conftest import Kubectl, run_plugin

pytestmark = pytest.mark.e2e

CSI_DRIVER = "csi.vsphere.vmware.com"
STS = "web"


# -- helpers ---------------------------------------------------------------------------------


def plugin(env_vars: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the plugin with stdin a pipe (never a terminal, even when pytest runs in one)."""
    return run_plugin(env_vars, *args, stdin="", timeout=120)


def show(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout:\n{proc.stdout}\n--- stderr:\n{proc.stderr}"


def secrets_of(env: cluster.Env, env_vars: dict[str, str], *extra: str) -> list[str]:
    """What must never be printed: the vCenter password (GOVC_* and the CSI Secret hold the same
    one), the viewer's token, and whatever the test adds (a wrong password it passed)."""
    return [env_vars["GOVC_PASSWORD"], cluster.VC_PASSWORD, *env.info()["tokens"].values(), *extra]


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_failed(
    proc: subprocess.CompletedProcess[str],
    code: int,
    names: tuple[str, ...],
    secrets: list[str],
    only_error_lines: bool = True,
) -> list[str]:
    """The failure contract; returns the `error:` lines.

    `names`: texts that one `error:` line (each, not necessarily the same line) must contain.
    `only_error_lines`: stderr holds nothing but `error:` / `warning:` lines (and argparse's
    "See '... --help'" hint), no log noise or traceback.
    """
    assert proc.returncode == code, show(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors, f"no `error:` line on stderr\n{show(proc)}"
    for name in names:
        assert any(name in line for line in errors), f"no `error:` line names {name!r}\n{show(proc)}"
    assert "Traceback" not in proc.stderr, show(proc)
    assert "internal error" not in proc.stderr, show(proc)
    for line in proc.stdout.splitlines():
        assert not line.lstrip().startswith(("error:", "warning:", "Traceback", "I ", "W ")), (
            f"stdout polluted: {line!r}\n{show(proc)}"
        )
    if only_error_lines:
        noise = [
            line
            for line in proc.stderr.splitlines()
            if line.strip() and not line.startswith(("error: ", "warning: ", "See '"))
        ]
        assert not noise, f"stderr holds more than error lines: {noise}\n{show(proc)}"
    for secret in secrets:
        assert secret not in proc.stdout, f"a secret is on stdout\n{show(proc)}"
        assert secret not in proc.stderr, f"a secret is on stderr\n{show(proc)}"
    return errors


def preflight_report(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """`preflight -o json`: stdout is exactly one JSON document (errors went to stderr)."""
    try:
        report = json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(f"stdout of -o json is not JSON: {exc}\n{show(proc)}") from exc
    assert report["result"] == "FAIL", show(proc)
    return report


def failing(report: dict[str, Any], name: str) -> list[str]:
    """Messages of the FAIL checks called `name` (at least one)."""
    messages = [c["message"] for c in report["checks"] if c["name"] == name and c["status"] == "FAIL"]
    assert messages, f"no FAIL check {name!r} in {json.dumps(report['checks'], indent=1)}"
    return messages


def assert_preflight_fails(
    proc: subprocess.CompletedProcess[str], check: str, secrets: list[str], contains: str = ""
) -> list[str]:
    """preflight -o json exited 1 with a FAIL `check`, each of whose messages is on an error line."""
    report = preflight_report(proc)
    messages = failing(report, check)
    for message in messages:
        assert contains in message, f"FAIL {check}: {message!r} lacks {contains!r}"
    assert_failed(proc, 1, tuple(messages), secrets)
    return messages


def assert_sts_refuses(proc: subprocess.CompletedProcess[str], names: tuple[str, ...], secrets: list[str]) -> list[str]:
    """`sts` refused: exit 1, error lines naming the problem, nothing on stdout."""
    errors = assert_failed(proc, 1, names, secrets)
    assert proc.stdout.strip() == "", f"sts printed data although it refused\n{show(proc)}"
    return errors


@dataclass
class Before:
    objects: dict[str, Any]
    vmdks: list[str]
    records: dict[str, str]
    """The CSI syncer's CnsVSphereVolumeMigration records of the disks: name -> resourceVersion."""


def snapshot(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    """kind/name -> object: the StatefulSets, pods and claims of `ns`, and the PVs.

    PVs claimed in other namespaces are left out: other end-to-end tests (migrations) may run
    on the same environment at the same time and legitimately change theirs. The PVs of `ns`,
    and every PV claimed by nobody, are compared.
    """
    found: dict[str, Any] = {}
    for kind in ("statefulsets", "pods", "persistentvolumeclaims"):
        for obj in kubectl.get(kind, namespace=ns)["items"]:
            found[f"{kind}/{obj['metadata']['name']}"] = obj
    for pv in kubectl.get("persistentvolumes")["items"]:
        claim = pv["spec"].get("claimRef") or {}
        if claim.get("namespace") in (None, ns):
            found[f"persistentvolumes/{pv['metadata']['name']}"] = pv
    return found


def versions(objects: dict[str, Any]) -> dict[str, str]:
    return {key: obj["metadata"]["resourceVersion"] for key, obj in objects.items()}


def settled(kubectl: Kubectl, ns: str, timeout: float = 30) -> dict[str, Any]:
    """`snapshot` once two readings a second apart agree (controllers done writing)."""
    deadline = time.monotonic() + timeout
    last = snapshot(kubectl, ns)
    while time.monotonic() < deadline:
        time.sleep(1)
        now = snapshot(kubectl, ns)
        if versions(now) == versions(last):
            return now
        last = now
    raise AssertionError(f"objects in {ns} kept changing for {timeout:.0f}s")


def who_wrote(before: Any, after: Any) -> str:
    """What a change was, from managedFields: for a failure message."""
    if before is None or after is None:
        return "created" if before is None else "deleted"
    if before["metadata"]["uid"] != after["metadata"]["uid"]:
        return "deleted and recreated"
    old = {json.dumps(m, sort_keys=True) for m in before["metadata"].get("managedFields") or []}
    new = [m for m in after["metadata"].get("managedFields") or [] if json.dumps(m, sort_keys=True) not in old]
    return ", ".join(
        f"{m.get('manager')} {m.get('operation')} {m.get('subresource', '')} at {m.get('time')}" for m in new
    )


def fcd_paths(env: cluster.Env) -> set[str]:
    """`[ds] path` of every First Class Disk on the simulator's datastore."""
    from pyVmomi import vim

    si = vc.connect(env)
    manager = si.RetrieveContent().vStorageObjectManager
    datacenter = next(
        c for c in si.content.rootFolder.childEntity if isinstance(c, vim.Datacenter) and c.name == cluster.DATACENTER
    )
    datastore = next(d for d in datacenter.datastore if d.name == cluster.DATASTORE)
    paths = set()
    for fcd in manager.ListVStorageObject(datastore=datastore):
        try:
            obj = manager.RetrieveVStorageObject(id=fcd, datastore=datastore)
        except vim.fault.NotFound:
            continue  # removed meanwhile (another test)
        paths.add(str(obj.config.backing.filePath))
    return paths


def prepare(
    env: cluster.Env, kubectl: Kubectl, ns: str, replicas: int = 2, **kwargs: Any
) -> tuple[scenario.Scenario, Before]:
    made = scenario.create(env, STS, ns, replicas=replicas, **kwargs)
    vmdks = [v.vmdk for v in made.volumes if not v.csi]
    # The CSI syncer registered each in-tree disk (as on any cluster with CSI migration on).
    assert set(vmdks) <= fcd_paths(env)
    return made, Before(settled(kubectl, ns), vmdks, migration_records(kubectl, vmdks))


def migration_records(kubectl: Kubectl, vmdks: list[str]) -> dict[str, str]:
    return {
        r["metadata"]["name"]: r["metadata"]["resourceVersion"]
        for r in kubectl.get("cnsvspherevolumemigrations")["items"]
        if r["spec"]["volumepath"] in vmdks
    }


def assert_unchanged(env: cluster.Env, kubectl: Kubectl, ns: str, before: Before) -> None:
    after = snapshot(kubectl, ns)
    old, new = versions(before.objects), versions(after)
    changed = {
        key: f"{old.get(key)} -> {new.get(key)}: {who_wrote(before.objects.get(key), after.get(key))}"
        for key in old.keys() | new.keys()
        if old.get(key) != new.get(key)
    }
    assert not changed, f"objects changed: {json.dumps(changed, indent=1)}"
    assert set(before.vmdks) <= fcd_paths(env), "a disk is no longer a first class disk"
    # The syncer drops a disk's record when its in-tree PV is deleted: unchanged records say no
    # PV went away, not even for a moment.
    assert migration_records(kubectl, before.vmdks) == before.records


def write_kubeconfig(path: Path, base: str, server: str | None = None, token: str | None = None) -> str:
    """A copy of kubeconfig `base` with another server and/or a token user; 0600."""
    config = json.loads(Path(base).read_text())
    if server:
        config["clusters"][0]["cluster"]["server"] = server
    if token:
        config["users"][0]["user"] = {"token": token}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle)
    return str(path)


def sts_args(ns: str, workdir: Path, *extra: str) -> list[str]:
    migrate = ["--csi-storageclass", "standard-rwo", "--yes"]
    return ["sts", STS, "-n", ns, *migrate, "--working-directory", str(workdir), *extra]


def preflight_args(ns: str, workdir: Path, *extra: str) -> list[str]:
    return ["preflight", STS, "-n", ns, "-o", "json", "--working-directory", str(workdir), *extra]


# -- 1, 2: storage classes -------------------------------------------------------------------


def test_missing_csi_storageclass(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    _, before = prepare(env, kubectl, ns)
    workdir = tmp_path / "wd"
    secrets = secrets_of(env, env_vars)
    flags = ("--csi-storageclass", "no-such-class")

    proc = plugin(env_vars, *preflight_args(ns, workdir, *flags))
    (message,) = assert_preflight_fails(proc, "csi-storageclass", secrets, "no-such-class")
    assert "not found" in message

    human = plugin(env_vars, "preflight", STS, "-n", ns, "--working-directory", str(workdir), *flags)
    assert_failed(human, 1, (message,), secrets)
    assert any(line.split()[:2] == ["csi-storageclass", "FAIL"] for line in human.stdout.splitlines()), show(human)

    refused = plugin(env_vars, "sts", STS, "-n", ns, "--yes", "--working-directory", str(workdir), *flags)
    assert_sts_refuses(refused, ("csi-storageclass", message, f"statefulset {STS} was not changed"), secrets)

    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


def test_missing_intree_storageclass(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    _, before = prepare(env, kubectl, ns)
    workdir = tmp_path / "wd"
    secrets = secrets_of(env, env_vars)

    proc = plugin(env_vars, *preflight_args(ns, workdir, "--intree-storageclass", "no-such-class"))
    (message,) = assert_preflight_fails(proc, "intree-storageclass", secrets, "no-such-class")
    assert "not found" in message

    refused = plugin(env_vars, *sts_args(ns, workdir), "--intree-storageclass", "no-such-class")
    assert_sts_refuses(refused, ("intree-storageclass", message), secrets)

    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


# -- 3: a claim not Bound, a replica not ready -----------------------------------------------


def test_pending_claim_and_unready_replica(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    made = scenario.create(env, STS, ns, replicas=2)
    kubectl("-n", ns, "scale", "statefulset", STS, "--replicas=3")
    new_claim, new_pod = f"data-{STS}-2", f"{STS}-2"

    def stuck() -> bool:
        if not kubectl.exists("pvc", new_claim, ns) or not kubectl.exists("pod", new_pod, ns):
            return False
        pvc = kubectl.get("pvc", new_claim, ns)
        pod = kubectl.get("pod", new_pod, ns)
        sts = kubectl.get("statefulset", STS, ns)
        scheduled = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}.get("PodScheduled")
        return (
            pvc["status"].get("phase") == "Pending"
            and "volume.kubernetes.io/storage-provisioner" in pvc["metadata"].get("annotations", {})
            and pod["status"].get("phase") == "Pending"
            and scheduled == "False"
            and sts["status"].get("observedGeneration") == sts["metadata"]["generation"]
            and sts["status"].get("replicas") == 3
        )

    deadline = time.monotonic() + 60
    while not stuck():
        assert time.monotonic() < deadline, "the third replica's claim and pod did not settle as Pending"
        time.sleep(0.3)
    vmdks = [v.vmdk for v in made.volumes]
    before = Before(settled(kubectl, ns), vmdks, migration_records(kubectl, vmdks))
    workdir = tmp_path / "wd"
    secrets = secrets_of(env, env_vars)

    proc = plugin(env_vars, *preflight_args(ns, workdir))
    (not_ready,) = assert_preflight_fails(proc, "statefulset", secrets, "2/3")
    pvc_messages = assert_preflight_fails(proc, "pvc", secrets, new_claim)
    assert all("Pending" in m for m in pvc_messages), pvc_messages

    refused = plugin(env_vars, *sts_args(ns, workdir))
    assert_sts_refuses(refused, (not_ready, *pvc_messages), secrets)

    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)
    assert kubectl.get("pvc", new_claim, ns)["status"]["phase"] == "Pending"


# -- preconditions found before the point of no return (issue 9) ----------------------------


def test_item_1_two_disruption_budgets_fail_preflight_before_any_change(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """The Eviction API refuses (500) to evict a pod that two budgets select. Found by preflight,
    not by the run with the StatefulSet already deleted."""
    _, before = prepare(env, kubectl, ns)
    kubectl.apply(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "second", "namespace": ns},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": STS}}},
        }
    )
    workdir = tmp_path / "wd"
    secrets = secrets_of(env, env_vars)

    proc = plugin(env_vars, *preflight_args(ns, workdir))
    (message,) = assert_preflight_fails(proc, "disruption", secrets, "2 PodDisruptionBudgets")
    assert f"poddisruptionbudget/{STS}" in message and "poddisruptionbudget/second" in message

    refused = plugin(env_vars, *sts_args(ns, workdir))
    assert_sts_refuses(refused, ("disruption", "2 PodDisruptionBudgets"), secrets)
    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


def test_item_6_an_empty_selector_budget_counts_as_covering_every_pod_of_the_namespace(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """In policy/v1 `selector: {}` covers every pod of the namespace. Beside the StatefulSet's own
    budget it is a second budget over its pods (the Eviction API answers 500 for such a pod):
    preflight FAILs naming both, and `sts` refuses before any change, instead of finding out with
    the StatefulSet deleted. Alone, it is the budget preflight judges: allowing nothing, FAIL."""
    _, before = prepare(env, kubectl, ns)
    everything = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "everything", "namespace": ns},
        "spec": {"maxUnavailable": 0, "selector": {}},
    }
    kubectl("create", "-f", "-", stdin=json.dumps(everything))
    assert kubectl.get("pdb", "everything", ns)["spec"].get("selector") == {}, "the API server kept no empty selector"
    workdir = tmp_path / "wd"
    secrets = secrets_of(env, env_vars)

    proc = plugin(env_vars, *preflight_args(ns, workdir))
    (message,) = assert_preflight_fails(proc, "disruption", secrets, "2 PodDisruptionBudgets")
    assert f"poddisruptionbudget/{STS}" in message and "poddisruptionbudget/everything" in message, message
    assert "every pod of the namespace" in message, message

    refused = plugin(env_vars, *sts_args(ns, workdir))
    assert_sts_refuses(refused, ("disruption", "2 PodDisruptionBudgets", "poddisruptionbudget/everything"), secrets)
    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)

    # The empty-selector budget alone (it allows nothing: maxUnavailable 0) is the one judged.
    kubectl("-n", ns, "delete", "pdb", STS)
    kubectl("-n", ns, "wait", "pdb/everything", "--for=jsonpath={.status.expectedPods}=2", "--timeout=60s")
    kubectl("-n", ns, "wait", "pdb/everything", "--for=jsonpath={.status.disruptionsAllowed}=0", "--timeout=60s")
    proc = plugin(env_vars, *preflight_args(ns, workdir))
    (message,) = assert_preflight_fails(proc, "disruption", secrets, "poddisruptionbudget/everything")
    assert "allows no disruption" in message, message
    refused = plugin(env_vars, *sts_args(ns, workdir))
    assert_sts_refuses(refused, ("disruption", "poddisruptionbudget/everything"), secrets)
    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


@pytest.mark.serial
def test_item_4_a_stopped_csi_controller_fails_preflight_before_any_change(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """The real syncer paused (SIGSTOP) until its leader-election Lease has gone unrenewed for
    longer than its duration (by the API server's clock): preflight FAILs naming it, and `sts`
    refuses before its first change instead of deleting a PV and waiting for a dead syncer."""
    import signal
    import time
    from datetime import UTC, datetime

    _, before = prepare(env, kubectl, ns, replicas=1, pdb=False)
    workdir = tmp_path / "wd"
    secrets = secrets_of(env, env_vars)
    syncer = env.processes()["vsphere-syncer"]
    assert syncer
    os.killpg(syncer, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 90
        while True:  # until the lease is stale (the API server runs on this machine's clock)
            lease = kubectl.get("lease", "vsphere-syncer", "vmware-system-csi")
            renewed = datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
            if (datetime.now(UTC) - renewed).total_seconds() > lease["spec"]["leaseDurationSeconds"] + 1:
                break
            assert time.monotonic() < deadline, "the paused syncer's lease did not go stale"
            time.sleep(2)
        proc = plugin(env_vars, *preflight_args(ns, workdir))
        (message,) = assert_preflight_fails(proc, "csi-controller", secrets, "vSphere CSI syncer")
        assert "has not renewed lease vmware-system-csi/vsphere-syncer" in message
        refused = plugin(env_vars, *sts_args(ns, workdir, "--timeout", "20s"))
        assert_sts_refuses(refused, ("csi-controller", "not running"), secrets)
        assert not workdir.exists()
        assert_unchanged(env, kubectl, ns, before)
    finally:
        os.killpg(syncer, signal.SIGCONT)


@pytest.mark.serial
def test_item_4_a_vcenter_user_without_disk_privileges_fails_preflight_before_any_change(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """The vCenter user holds only ReadOnly on the disks' datastore (a permission set there):
    registering a disk and setting keepAfterDeleteVm would be refused with the claim and PV
    already deleted. Preflight asks vCenter (HasPrivilegeOnEntities) and FAILs naming the
    privilege; `sts` refuses before any change."""
    from pyVmomi import vim

    _, before = prepare(env, kubectl, ns, replicas=1, pdb=False)
    workdir = tmp_path / "wd"
    secrets = secrets_of(env, env_vars)
    si = vc.connect(env)
    auth = si.content.authorizationManager
    datastore = next(d for d in vc._datacenter(si).datastore if d.name == cluster.DATASTORE)
    principal = "VSPHERE.LOCAL\\" + cluster.VC_USER.split("@")[0]
    read_only = vim.AuthorizationManager.Permission(principal=principal, roleId=-2, propagate=True, group=False)
    auth.SetEntityPermissions(entity=datastore, permission=[read_only])
    try:
        proc = plugin(env_vars, *preflight_args(ns, workdir))
        (message,) = assert_preflight_fails(proc, "vcenter-privileges", secrets, "Datastore.FileManagement")
        assert cluster.VC_USER in message and cluster.DATASTORE in message, message
        refused = plugin(env_vars, *sts_args(ns, workdir))
        assert_sts_refuses(refused, ("vcenter-privileges", "Datastore.FileManagement"), secrets)
        assert not workdir.exists()
        assert_unchanged(env, kubectl, ns, before)
    finally:
        auth.RemoveEntityPermission(entity=datastore, user=principal, isGroup=False)


@pytest.mark.serial
def test_item_3_another_pv_naming_the_disk_fails_preflight_before_any_change(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """A second PV for a disk to migrate, by its in-tree path or (as a CSI PV) by the FCD id the
    driver recorded: found by preflight, not when the run creates the new PV after deleting the
    old one."""
    made, before = prepare(env, kubectl, ns)
    first, second = sorted((v for v in made.volumes if not v.csi), key=lambda v: v.ordinal)
    stray_path, stray_handle = f"stray-{ns}", f"stray-csi-{ns}"
    unbound = {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": ""}
    docs = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": stray_path},
            "spec": {**unbound, "vsphereVolume": {"volumePath": first.vmdk, "fsType": "ext4"}},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": stray_handle},
            # With a claimRef: deleting a CSI PV without one crashes the CSI syncer and controller
            # (v3.7.3, k8sorchestrator pvDeleted reads spec.claimRef.namespace).
            "spec": {
                **unbound,
                "claimRef": {"namespace": ns, "name": "no-such-claim"},
                "csi": {"driver": "csi.vsphere.vmware.com", "volumeHandle": second.fcd_id},
            },
        },
    ]
    for doc in docs:
        kubectl.apply(doc)
    before = Before(settled(kubectl, ns), before.vmdks, migration_records(kubectl, before.vmdks))
    try:
        workdir = tmp_path / "wd"
        secrets = secrets_of(env, env_vars)
        proc = plugin(env_vars, *preflight_args(ns, workdir))
        messages = assert_preflight_fails(proc, "disk-owners", secrets, "two PVs must never share a disk")
        assert any(stray_path in m and first.vmdk in m for m in messages), messages
        assert any(stray_handle in m and second.fcd_id in m for m in messages), messages

        refused = plugin(env_vars, *sts_args(ns, workdir))
        assert_sts_refuses(refused, ("disk-owners", stray_path, stray_handle), secrets)
        assert not workdir.exists()
        assert_unchanged(env, kubectl, ns, before)
    finally:
        kubectl("delete", "pv", stray_path, stray_handle, "--wait=false")


def test_item_12_credentials_of_another_vcenter_are_not_sent(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """A legacy csi-vsphere.conf: [Global] user/password with [Workspace] server = another
    vCenter. With --vsphere-server naming this vCenter (as `localhost`, so neither GOVC_URL nor
    the cluster's Secret, written for 127.0.0.1, applies), the file's password must not be sent
    here: no password, one error line, nothing changed."""
    _, before = prepare(env, kubectl, ns)
    conf = tmp_path / "legacy.conf"
    conf.write_text(
        f'[Global]\nuser = "{cluster.VC_USER}"\npassword = "{cluster.VC_PASSWORD}"\n'
        '[Workspace]\nserver = "vc-old.example.com"\ndatacenter = "DC0"\n'
    )
    conf.chmod(0o600)
    environ = {k: v for k, v in env_vars.items() if not k.startswith("GOVC_")}
    port = str(env.info()["vcsim_port"])
    flags = ("--vsphere-server", "localhost", "--vsphere-port", port, "--vsphere-insecure")
    flags += ("--vsphere-user", cluster.VC_USER, "--vsphere-config", str(conf))
    workdir = tmp_path / "wd"
    secrets = secrets_of(env, env_vars)

    proc = plugin(environ, *preflight_args(ns, workdir, *flags))
    messages = assert_preflight_fails(proc, "vcenter", secrets, "no vCenter password for localhost")
    assert len(messages) == 1
    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


def test_item_10_a_shared_access_mode_fails_preflight_before_any_change(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """An in-tree PV listing ReadWriteMany: the CSI driver would serve the new PV as a vSAN file
    share, not the disk. Refused by preflight, not by the run after the old PV is gone."""
    made, before = prepare(env, kubectl, ns)
    first = min((v for v in made.volumes if not v.csi), key=lambda v: v.ordinal)
    patch = '[{"op": "replace", "path": "/spec/accessModes", "value": ["ReadWriteOnce", "ReadWriteMany"]}]'
    kubectl("patch", "pv", first.pv, "--type=json", "-p", patch)
    # The PV controller copies the PV's access modes into the claim's status at its next resync of
    # the claim (up to --pvclaimbinder-sync-period, 15 s, later): wait for that write so it is not
    # taken for one of ours (CI saw the claim change 2572 -> 2739 after a 1 s settle).
    deadline = time.monotonic() + 90
    while "ReadWriteMany" not in kubectl.get("pvc", first.pvc, ns)["status"].get("accessModes", []):
        assert time.monotonic() < deadline, f"{first.pvc}'s status never listed the PV's ReadWriteMany"
        time.sleep(1)
    before = Before(settled(kubectl, ns), before.vmdks, migration_records(kubectl, before.vmdks))
    workdir = tmp_path / "wd"
    secrets = secrets_of(env, env_vars)

    proc = plugin(env_vars, *preflight_args(ns, workdir))
    (message,) = assert_preflight_fails(proc, "pvc", secrets, "ReadWriteMany")
    assert first.pvc in message and "file shares" in message
    refused = plugin(env_vars, *sts_args(ns, workdir))
    assert_sts_refuses(refused, ("pvc", "ReadWriteMany"), secrets)
    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


# -- 4: no CSIDriver -------------------------------------------------------------------------


@pytest.mark.serial
def test_missing_csidriver(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    _, before = prepare(env, kubectl, ns)
    workdir = tmp_path / "wd"
    secrets = secrets_of(env, env_vars)
    saved = kubectl.get("csidriver", CSI_DRIVER)
    restore = {
        "apiVersion": saved["apiVersion"],
        "kind": saved["kind"],
        "metadata": {k: v for k, v in saved["metadata"].items() if k in ("name", "labels", "annotations")},
        "spec": saved["spec"],
    }
    # Other tests may share the environment: keep the driver away as briefly as possible, so
    # both commands run at the same time while it is gone.
    kubectl("delete", "csidriver", CSI_DRIVER, "--wait=true")
    try:
        with ThreadPoolExecutor(2) as pool:
            pre = pool.submit(plugin, env_vars, *preflight_args(ns, workdir))
            run = pool.submit(plugin, env_vars, *sts_args(ns, workdir))
            proc, refused = pre.result(), run.result()
    finally:
        if not kubectl.exists("csidriver", CSI_DRIVER):
            kubectl("create", "-f", "-", stdin=json.dumps(restore))
    restored = kubectl.get("csidriver", CSI_DRIVER)
    for key in ("labels", "annotations"):
        assert restored["metadata"].get(key) == saved["metadata"].get(key)
    assert restored["spec"] == saved["spec"]

    (message,) = assert_preflight_fails(proc, "csi-driver", secrets, CSI_DRIVER)
    assert "not found" in message
    assert_sts_refuses(refused, ("csi-driver", message), secrets)
    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


# -- 5: vCenter ------------------------------------------------------------------------------


def test_wrong_vcenter_password(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    _, before = prepare(env, kubectl, ns)
    workdir = tmp_path / "wd"
    wrong = "Wr0ng-pa55word-for-test"
    bad = {**env_vars, "GOVC_PASSWORD": wrong}
    secrets = secrets_of(env, env_vars, wrong)

    proc = plugin(bad, *preflight_args(ns, workdir))
    (message,) = assert_preflight_fails(proc, "vcenter", secrets, "login failed")
    assert cluster.VC_USER in message, message

    refused = plugin(bad, *sts_args(ns, workdir))
    assert_sts_refuses(refused, ("vcenter", message), secrets)

    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


def test_unreachable_vcenter(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    _, before = prepare(env, kubectl, ns)
    workdir = tmp_path / "wd"
    port = closed_port()
    away = {**env_vars, "GOVC_URL": f"https://127.0.0.1:{port}/sdk"}
    secrets = secrets_of(env, env_vars)

    started = time.monotonic()
    proc = plugin(away, *preflight_args(ns, workdir))
    elapsed = time.monotonic() - started
    (message,) = assert_preflight_fails(proc, "vcenter", secrets, f"127.0.0.1:{port}")
    assert "unreachable" in message or "refused" in message.lower(), message
    assert elapsed < 30, f"preflight took {elapsed:.1f}s against a closed port"

    refused = plugin(away, *sts_args(ns, workdir))
    assert_sts_refuses(refused, ("vcenter", message), secrets)

    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


# -- 6: a working directory in use -----------------------------------------------------------


def test_used_working_directory(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    _, before = prepare(env, kubectl, ns)
    workdir = tmp_path / "wd"
    workdir.mkdir(mode=0o755)
    unrelated = workdir / "notes.txt"
    unrelated.write_text("someone else's notes\n")
    mtime, mode = unrelated.stat().st_mtime_ns, stat.S_IMODE(workdir.stat().st_mode)
    secrets = secrets_of(env, env_vars)

    proc = plugin(env_vars, *preflight_args(ns, workdir))
    (message,) = assert_preflight_fails(proc, "working-directory", secrets, str(workdir))
    assert "not empty" in message, message

    refused = plugin(env_vars, *sts_args(ns, workdir))
    assert_sts_refuses(refused, ("working-directory", message), secrets)

    assert sorted(p.name for p in workdir.iterdir()) == ["notes.txt"]
    assert unrelated.read_text() == "someone else's notes\n"
    assert unrelated.stat().st_mtime_ns == mtime
    assert stat.S_IMODE(workdir.stat().st_mode) == mode
    assert_unchanged(env, kubectl, ns, before)


# -- 7: no such StatefulSet ------------------------------------------------------------------


def test_statefulset_not_found(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    _, before = prepare(env, kubectl, ns)
    workdir = tmp_path / "wd"
    secrets = secrets_of(env, env_vars)
    missing = "no-such-sts"

    proc = plugin(env_vars, "preflight", missing, "-n", ns, "-o", "json", "--working-directory", str(workdir))
    (message,) = assert_preflight_fails(proc, "statefulset", secrets, missing)
    assert "not found" in message and ns in message, message

    refused = plugin(
        env_vars, "sts", missing, "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
        "--working-directory", str(workdir),
    )  # fmt: skip
    assert_sts_refuses(refused, (message, f"statefulset {missing} was not changed"), secrets)

    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


# -- 8: user errors outside preflight --------------------------------------------------------


def both_commands(env_vars: dict[str, str], ns: str, workdir: Path, *flags: str) -> list[Any]:
    return [
        plugin(env_vars, *preflight_args(ns, workdir, *flags)),
        plugin(env_vars, *sts_args(ns, workdir), *flags),
    ]


def test_missing_kubeconfig_file(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    _, before = prepare(env, kubectl, ns)
    workdir = tmp_path / "wd"
    for proc in both_commands(env_vars, ns, workdir, "--kubeconfig", str(tmp_path / "missing.conf")):
        assert_failed(proc, 1, ("kubeconfig",), secrets_of(env, env_vars))
        assert proc.stdout == "", show(proc)
    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


def test_missing_kubeconfig_file_is_named(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    _, before = prepare(env, kubectl, ns)
    workdir = tmp_path / "wd"
    path = str(tmp_path / "missing.conf")
    for proc in both_commands(env_vars, ns, workdir, "--kubeconfig", path):
        (line,) = assert_failed(proc, 1, (path,), secrets_of(env, env_vars))
        assert "no such file" in line.lower() or "does not exist" in line.lower(), line
    assert_unchanged(env, kubectl, ns, before)


def test_unknown_context(env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path) -> None:
    _, before = prepare(env, kubectl, ns)
    workdir = tmp_path / "wd"
    for proc in both_commands(env_vars, ns, workdir, "--context", "no-such-context"):
        assert_failed(proc, 1, ('context "no-such-context"',), secrets_of(env, env_vars))
        assert proc.stdout == "", show(proc)
    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


def unreachable_runs(
    env: cluster.Env, env_vars: dict[str, str], ns: str, tmp_path: Path
) -> tuple[str, Path, list[tuple[float, subprocess.CompletedProcess[str]]]]:
    server = f"https://127.0.0.1:{closed_port()}"
    kubeconfig = write_kubeconfig(tmp_path / "closed.conf", env.info()["user_kubeconfig"], server=server)
    workdir = tmp_path / "wd"
    runs = []
    for args in (preflight_args(ns, workdir), sts_args(ns, workdir)):
        started = time.monotonic()
        proc = plugin(env_vars, *args, "--kubeconfig", kubeconfig, "--request-timeout", "5s")
        runs.append((time.monotonic() - started, proc))
    return server, workdir, runs


def test_unreachable_api_server(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    _, before = prepare(env, kubectl, ns)
    server, workdir, runs = unreachable_runs(env, env_vars, ns, tmp_path)
    for elapsed, proc in runs:
        (line,) = assert_failed(proc, 1, (server,), secrets_of(env, env_vars), only_error_lines=False)
        assert "cannot reach" in line or "refused" in line.lower(), line
        assert elapsed < 15, f"{elapsed:.1f}s to give up on a closed port (--request-timeout 5s)"
        assert proc.stdout == "", show(proc)
    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


def test_unreachable_api_server_prints_only_the_error(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    _, before = prepare(env, kubectl, ns)
    server, _, runs = unreachable_runs(env, env_vars, ns, tmp_path)
    for _, proc in runs:
        assert_failed(proc, 1, (server,), secrets_of(env, env_vars), only_error_lines=True)
    assert_unchanged(env, kubectl, ns, before)


def test_user_without_permissions(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    _, before = prepare(env, kubectl, ns)
    token = env.info()["tokens"]["viewer"]
    kubeconfig = write_kubeconfig(tmp_path / "viewer.conf", env.info()["user_kubeconfig"], token=token)
    workdir = tmp_path / "wd"
    secrets = secrets_of(env, env_vars)
    for proc in both_commands(env_vars, ns, workdir, "--kubeconfig", kubeconfig):
        errors = assert_failed(proc, 1, ("forbidden",), secrets)
        assert any("viewer" in line for line in errors), show(proc)
        if proc.stdout.strip():  # preflight may report an rbac FAIL instead of failing outright
            failing(preflight_report(proc), "rbac")
    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


@pytest.mark.parametrize(
    "args, named",
    [
        (["preflight", STS, "--no-such-flag"], "--no-such-flag"),
        (["sts", STS, "--csi-storageclass", "standard-rwo", "--yes", "--no-such-flag"], "--no-such-flag"),
        (["sts", STS, "--yes"], "--csi-storageclass"),
        (["sts", STS, "--all", "--csi-storageclass", "standard-rwo", "--yes"], "--all"),
        (["sts", STS, "-A", "--csi-storageclass", "standard-rwo", "--yes"], "--all-namespaces"),
        (["sts", "--all", "--parallel", "0", "--csi-storageclass", "standard-rwo", "--yes"], "--parallel"),
        (["rollback", STS, "--dry-run=server"], "--dry-run"),
    ],
    ids=[
        "preflight-unknown-flag", "sts-unknown-flag", "sts-missing-csi-storageclass", "sts-names-and-all",
        "sts-all-namespaces-alone", "sts-parallel-0", "rollback-server-dry-run",
    ],
)  # fmt: skip
def test_usage_errors(
    env: cluster.Env,
    env_vars: dict[str, str],
    ns: str,
    kubectl: Kubectl,
    tmp_path: Path,
    args: list[str],
    named: str,
) -> None:
    _, before = prepare(env, kubectl, ns)
    workdir = tmp_path / "wd"
    proc = plugin(env_vars, *args, "-n", ns, "--working-directory", str(workdir))
    assert_failed(proc, 2, (named,), secrets_of(env, env_vars))
    assert proc.stdout == "", show(proc)
    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


def test_sts_without_yes_and_without_terminal(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    _, before = prepare(env, kubectl, ns)
    workdir = tmp_path / "wd"
    args = ["sts", STS, "-n", ns, "--csi-storageclass", "standard-rwo", "--working-directory", str(workdir)]
    proc = run_plugin(env_vars, *args, stdin="y\n", timeout=120)  # a pipe, even one saying yes
    assert_failed(proc, 2, ("--yes",), secrets_of(env, env_vars))
    assert proc.stdout == "", show(proc)
    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


# -- 9: GKE on VMware: no such user cluster --------------------------------------------------


def test_unknown_user_cluster(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    _, before = prepare(env, kubectl, ns)
    workdir = tmp_path / "wd"
    flags = ("--kubeconfig", env.info()["admin_kubeconfig"], "--cluster-name", "no-such-cluster")
    for proc in both_commands(env_vars, ns, workdir, *flags):
        (line,) = assert_failed(proc, 1, ("no-such-cluster",), secrets_of(env, env_vars))
        assert "tried" in line, line
        for place in ("no-such-cluster/admin", "no-such-cluster-kubeconfig"):
            assert place in line, f"the error does not say it tried {place}: {line}"
        assert "--user-kubeconfig-secret" in line, line
        assert proc.stdout == "", show(proc)
    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


def test_read_only_user_gets_rbac_fail_listing_missing_verbs(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """A user who may read everything the preflight reads, but change nothing: preflight runs,
    and its rbac check names the verbs the migration would need."""
    _, before = prepare(env, kubectl, ns)
    read = {"verbs": ["get", "list", "watch"]}
    role = f"csi-migrate-reader-{ns}"
    cluster_rules = [
        {"apiGroups": [""], "resources": ["persistentvolumes", "nodes"], **read},
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses", "csidrivers", "csinodes"], **read},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    ]
    ns_rules = [
        {"apiGroups": [""], "resources": ["pods", "persistentvolumeclaims"], **read},
        {"apiGroups": ["apps"], "resources": ["statefulsets"], **read},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], **read},
    ]
    subject = [{"kind": "User", "name": "reader", "apiGroup": "rbac.authorization.k8s.io"}]
    rbac = "rbac.authorization.k8s.io"

    def bound(kind: str, rules: list[dict[str, Any]], namespace: str | None) -> list[dict[str, Any]]:
        meta: dict[str, Any] = {"name": role, **({"namespace": namespace} if namespace else {})}
        binding = "RoleBinding" if kind == "Role" else "ClusterRoleBinding"
        return [
            {"apiVersion": f"{rbac}/v1", "kind": kind, "metadata": meta, "rules": rules},
            {
                "apiVersion": f"{rbac}/v1", "kind": binding, "metadata": meta, "subjects": subject,
                "roleRef": {"apiGroup": rbac, "kind": kind, "name": role},
            },
        ]  # fmt: skip

    docs = bound("ClusterRole", cluster_rules, None) + bound("Role", ns_rules, ns)
    for doc in docs:
        kubectl.apply(doc)
    before = Before(settled(kubectl, ns), before.vmdks, migration_records(kubectl, before.vmdks))
    try:
        token = env.info()["tokens"]["reader"]
        kubeconfig = write_kubeconfig(tmp_path / "reader.conf", env.info()["user_kubeconfig"], token=token)
        workdir = tmp_path / "wd"
        proc = plugin(env_vars, *preflight_args(ns, workdir, "--kubeconfig", kubeconfig, "-o", "json"))
        assert proc.returncode == 1, show(proc)
        messages = failing(preflight_report(proc), "rbac")
        assert any("delete statefulsets" in m and "create persistentvolumes" in m for m in messages), messages
        # The CSI driver's records, which the run backs up and watches, are asked for too.
        assert any("list cnsvspherevolumemigrations" in m for m in messages), messages
        assert not workdir.exists()
        assert_unchanged(env, kubectl, ns, before)
    finally:
        kubectl("delete", "clusterrolebinding,clusterrole", role, "--ignore-not-found")


def test_item_5_a_managed_statefulset_is_named_by_preflight(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """A StatefulSet from a Helm release that Argo CD syncs: preflight WARNs, naming both, so
    the user pauses them before the run deletes the StatefulSet."""
    prepare(env, kubectl, ns)
    kubectl(
        "-n", ns, "label", "statefulset", STS, "app.kubernetes.io/managed-by=Helm", "argocd.argoproj.io/instance=shop"
    )
    kubectl("-n", ns, "annotate", "statefulset", STS, "meta.helm.sh/release-name=shop-db")
    proc = plugin(env_vars, *preflight_args(ns, tmp_path / "wd"))
    assert proc.returncode == 0, show(proc)
    (check,) = [c for c in json.loads(proc.stdout)["checks"] if c["name"] == "managed-by"]
    assert check["status"] == "WARN"
    assert "Argo CD application shop" in check["message"] and "Helm release shop-db" in check["message"]
    assert "(app.kubernetes.io/managed-by)" not in check["message"]
    assert "standard-rwo" in check["message"]


@pytest.mark.slow
def test_a_role_lacking_any_one_verb_the_run_needs_fails_before_any_change(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """For every entry of what a StatefulSet's run needs (`access_for`, iterated, not picked;
    REQUIRED_ACCESS is that of every kind): a user granted all the others
    (and what preflight reads) runs `sts`, which refuses before any change, naming the verb and
    resource: preflight's `rbac` FAIL, or, for a read preflight itself makes, its `forbidden`
    error. The same user with every entry then migrates (so the list is also sufficient)."""
    from kubectl_csi_migrate.kube.client import RESOURCES
    from kubectl_csi_migrate.migration.kinds import access_for
    from tests.e2e.rbac import exact_roles

    required = access_for("StatefulSet")

    made, before = prepare(env, kubectl, ns, replicas=1, pdb=False)
    token = env.info()["tokens"]["verbs"]
    kubeconfig = write_kubeconfig(tmp_path / "verbs.conf", env.info()["user_kubeconfig"], token=token)
    environ = {**env_vars, "KUBECONFIG": kubeconfig}
    secrets = secrets_of(env, env_vars)
    applied: list[dict[str, Any]] = []
    try:
        for entry in required:
            verb, kind, sub = entry
            applied = exact_roles(ns, [a for a in required if a != entry], "verbs")
            for doc in applied:
                kubectl.apply(doc)
            before = Before(settled(kubectl, ns), before.vmdks, migration_records(kubectl, before.vmdks))
            workdir = tmp_path / f"wd-{verb}-{kind}-{sub}"
            proc = plugin(environ, *sts_args(ns, workdir))
            plural = RESOURCES[kind][1] + (f"/{sub}" if sub else "")
            named = f"{verb} {plural}" in proc.stderr or (
                "forbidden" in proc.stderr and f'cannot {verb} resource "{RESOURCES[kind][1]}"' in proc.stderr
            )
            assert proc.returncode == 1 and named, f"without {verb} {plural}:\n{show(proc)}"
            assert_failed(proc, 1, (), secrets)
            assert_unchanged(env, kubectl, ns, before)
        applied = exact_roles(ns, list(required), "verbs")
        for doc in applied:
            kubectl.apply(doc)
        done = plugin(environ, *sts_args(ns, tmp_path / "wd-all"))
        assert done.returncode == 0, show(done)
        assert kubectl.get("pv", made.volumes[0].pv)["spec"]["csi"]["driver"] == "csi.vsphere.vmware.com"
    finally:
        for doc in applied:
            where = ["-n", doc["metadata"]["namespace"]] if "namespace" in doc["metadata"] else []
            kubectl(*where, "delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found")


@pytest.mark.leg
@pytest.mark.parametrize("command", ["rollback", "status"])
def test_rollback_and_status_without_a_run_say_so(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path, command: str
) -> None:
    """No run recorded (neither a working directory nor the record in the cluster): one error line
    naming where it looked, exit 1, nothing changed, no folder created."""
    _, before = prepare(env, kubectl, ns)
    workdir = tmp_path / "wd"
    extra = ["--yes"] if command == "rollback" else []
    proc = plugin(env_vars, command, STS, "-n", ns, "--working-directory", str(workdir), *extra)
    assert_failed(proc, 1, (str(workdir),), secrets_of(env, env_vars))
    assert not workdir.exists()
    assert_unchanged(env, kubectl, ns, before)


def test_a_run_recorded_by_a_later_release_is_refused_by_every_command_with_nothing_changed(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """The record in the cluster of web's run was written by a later release (record format 3):
    this one may misread it, so `sts`, `rollback` and `status` each refuse it with one error line
    naming it and what to do, exit 1, no folder made, the record and the workload untouched."""
    _, before = prepare(env, kubectl, ns)
    name = "csi-migrate-statefulset-web"
    run = {"format": 3, "run_id": "later", "plan": {"kind": "StatefulSet", "name": STS, "namespace": ns}}
    kubectl.apply({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": {"csi-migrate.kubectl.io/record": "statefulset-web"}},
        "data": {"run.json": json.dumps(run), "steps.json": "{}"},
    })  # fmt: skip
    version = kubectl.get("configmap", name, ns)["metadata"]["resourceVersion"]
    workdir = tmp_path / "wd"
    where = ["-n", ns, "--working-directory", str(workdir)]
    for args in (
        ["sts", STS, *where, "--csi-storageclass", "standard-rwo", "--yes"],
        ["rollback", STS, *where, "--yes"],
        ["status", STS, *where],
    ):
        proc = plugin(env_vars, *args)
        lines = assert_failed(proc, 1, (f"configmap/{name}", "recorded by a later release"), secrets_of(env, env_vars))
        assert len(lines) == 1, show(proc)
        assert not workdir.exists(), args
    assert kubectl.get("configmap", name, ns)["metadata"]["resourceVersion"] == version
    assert_unchanged(env, kubectl, ns, before)
