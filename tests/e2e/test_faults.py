"""Faults in the middle of a run (issue 9 item 13), each on the real environment: the component
fails while `kubectl csi-migrate sts` runs, the run either rides it out or stops with one
error line and nothing lost, and the same command then finishes the migration with every disk's
marker bytes intact."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testenv import cluster, scenario, vc
from tests.e2e.conftest import REPO, Kubectl, run_plugin
from tests.e2e.rbac import full_access_role
from tests.e2e.test_errors import write_kubeconfig
from tests.e2e.test_migration import assert_migrated

pytestmark = pytest.mark.e2e


class Run:
    """`kubectl csi-migrate ARGS` in the background; `until(marker)` reads its output up to a
    line containing marker, `finish()` waits for it (bounded) and returns what it printed."""

    def __init__(self, env_vars: dict[str, str], args: list[str]) -> None:
        path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env_vars['PATH']}"
        self.proc = subprocess.Popen(
            ["kubectl", "csi-migrate", *args],
            env={**env_vars, "PATH": path}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.out: list[str] = []
        self.err = ""
        self._stderr = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.err = self.proc.stderr.read()

    def until(self, marker: str) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.append(line)
            if marker in line:
                return
        self.proc.wait()
        self._stderr.join()
        raise AssertionError(f"the run ended before {marker!r}:\n{''.join(self.out)}{self.err}")

    def finish(self, timeout: float = 300) -> int:
        assert self.proc.stdout is not None
        self.out.append(self.proc.stdout.read())
        code = self.proc.wait(timeout=timeout)
        self._stderr.join()
        return code

    def text(self) -> str:
        return "".join(self.out) + "\n--- stderr:\n" + self.err


def migrate_args(ns: str, workdir: Path, *extra: str) -> list[str]:
    return [
        "sts",
        "web",
        "-n",
        ns,
        "--csi-storageclass",
        "standard-rwo",
        "--yes",
        "--working-directory",
        str(workdir),
        *extra,
    ]


def finish_with_the_same_command(
    env: cluster.Env, env_vars: dict[str, str], kubectl: Kubectl, made: scenario.Scenario, sts_uid: str,
    run: Run, args: list[str],
) -> int:  # fmt: skip
    """After a fault: the run ended 0, or 1 with error lines only (stopped, nothing lost); then
    the same command finishes. Returns the first run's exit code."""
    code = run.finish()
    assert code in (0, 1), run.text()
    if code == 1:
        errors = [line for line in run.err.splitlines() if line.strip()]
        assert errors and all(line.startswith(("error:", "warning:")) for line in errors), run.text()
        for v in made.volumes:
            assert vc.read_marker(env, v.vmdk, len(v.marker)) == v.marker
        again = run_plugin(env_vars, *args)
        assert again.returncode == 0, again.stderr
    assert_migrated(env, kubectl, made, sts_uid)
    return code


@contextlib.contextmanager
def paused(env: cluster.Env, name: str) -> Iterator[int]:
    pid = env.processes()[name]
    assert pid, f"{name} is not running"
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.killpg(pid, signal.SIGCONT)


def first_volume(made: scenario.Scenario) -> Any:
    """The volume the rolling run migrates first (the highest ordinal)."""
    return max(made.volumes, key=lambda v: v.ordinal)


def released(kubectl: Kubectl, vmdk: str, timeout: float = 60) -> None:
    """Until the CSI syncer has dropped the disk's CnsVSphereVolumeMigration record."""
    deadline = time.monotonic() + timeout
    while any(r["spec"]["volumepath"] == vmdk for r in kubectl.get("cnsvspherevolumemigrations")["items"]):
        assert time.monotonic() < deadline, f"the syncer did not release {vmdk}"
        time.sleep(0.5)


@pytest.mark.serial
def test_item_13_vcenter_stops_answering_mid_run(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """vCenter (vcsim, paused with SIGSTOP: its inventory lives in memory, so a process restart
    would be another vCenter) stops answering exactly when the run needs it: the first in-tree
    PV deleted and its disk released, the First Class Disk step next (the run itself is held
    with SIGSTOP for that moment). The run must not hang: it stops within its vCenter timeout
    with one error line, nothing lost; with vCenter back, the same command finishes."""
    made = scenario.create(env, "web", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    args = migrate_args(ns, tmp_path / "run", "--vsphere-timeout", "5s")  # the default, 30s, twice
    volume = first_volume(made)
    run = Run(env_vars, args)
    run.until(f"persistentvolume/{volume.pv} deleted")
    os.kill(run.proc.pid, signal.SIGSTOP)
    released(kubectl, volume.vmdk)
    with paused(env, "vcsim"):
        os.kill(run.proc.pid, signal.SIGCONT)
        started = time.monotonic()
        code = run.proc.wait(timeout=240)  # bounded, while vCenter is still down
        waited = time.monotonic() - started
        assert code == 1, run.text()
    run.finish()
    assert "vCenter" in run.err and "unreachable" in run.err, run.text()
    assert not kubectl.exists("pv", volume.pv)
    print(f"the run stopped {waited:.0f}s after vCenter stopped answering")
    finish_with_the_same_command(env, env_vars, kubectl, made, sts_uid, run, args)


@pytest.mark.serial
def test_item_13_vcenter_down_while_the_driver_releases_a_disk(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """vCenter stops answering right after the first in-tree PV was deleted: the syncer cannot
    release the disk, so the run's bounded wait ends with what to look at; with vCenter back,
    the same command finishes."""
    made = scenario.create(env, "web", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    args = migrate_args(ns, tmp_path / "run", "--timeout", "30s")
    volume = first_volume(made)
    with paused(env, "vsphere-syncer"):  # holds the release until vCenter is down
        run = Run(env_vars, args)
        run.until(f"persistentvolume/{volume.pv} deleted")
        vcsim = env.processes()["vcsim"]
        assert vcsim
        os.killpg(vcsim, signal.SIGSTOP)
    try:
        assert run.proc.wait(timeout=120) == 1, run.text()
    finally:
        os.killpg(vcsim, signal.SIGCONT)
    run.finish()
    assert "has not released" in run.err and "vCenter errors" in run.err, run.text()
    finish_with_the_same_command(env, env_vars, kubectl, made, sts_uid, run, args)


@pytest.mark.serial
def test_item_13_api_server_restarted_mid_run(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """The Kubernetes API server restarts (etcd keeps the state; here its graceful stop takes
    about 30 s) right after the run deleted a pod: its requests are refused, its watches break.
    The run rides the outage out (no "cannot reach" error). What the controllers do around the
    restart varies from run to run: the run may finish, or stop on a bounded wait (a detach
    that takes longer than --timeout; or a disk record the restarting CSI syncer missed, where
    the message says that deleting it is safe). Following what each message says, the same
    command finishes."""
    import re

    made = scenario.create(env, "web", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    args = migrate_args(ns, tmp_path / "run", "--timeout", "90s")
    run = Run(env_vars, args)
    run.until("pod/web-1 deleted")
    env.restart("kube-apiserver")
    code, err = run.finish(), run.err
    assert code in (0, 1), run.text()
    assert "cannot reach the Kubernetes API server" not in err, "the run did not ride out the restart"
    stops = []
    while code == 1:
        stops.append(err.splitlines()[0])
        assert len(stops) <= 3, stops
        lines = [line for line in err.splitlines() if line.strip()]
        assert all(line.startswith(("error:", "warning:")) for line in lines), err
        for v in made.volumes:
            assert vc.read_marker(env, v.vmdk, len(v.marker)) == v.marker
        missed = re.search(r"deleting (cnsvspherevolumemigration/\S+) is safe", err)
        if missed and "missed the PV's deletion" in err:
            record = kubectl.get(*missed[1].split("/"))
            named = [
                pv["metadata"]["name"]
                for pv in kubectl.get("pv")["items"]
                if (pv["spec"].get("vsphereVolume") or {}).get("volumePath") == record["spec"]["volumepath"]
            ]
            assert not named, f"the message said no PV names the disk: {named}"
            kubectl("delete", missed[1])  # the safe action the message names
        again = run_plugin(env_vars, *args)
        code, err = again.returncode, again.stderr
    print(f"stops before the migration finished: {stops}")
    assert_migrated(env, kubectl, made, sts_uid)


@pytest.mark.serial
def test_item_13_controller_manager_paused_mid_run(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """kube-controller-manager paused (SIGSTOP) for 40 s from the StatefulSet's orphan delete:
    the garbage collector does not remove the orphan finalizer, the attach/detach controller
    does not detach, the disruption controller does not update budgets. Then it resumes."""
    made = scenario.create(env, "web", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    args = migrate_args(ns, tmp_path / "run")
    run = Run(env_vars, args)
    run.until("reclaim policy set to Retain")
    with paused(env, "kube-controller-manager"):
        time.sleep(40)
    code = finish_with_the_same_command(env, env_vars, kubectl, made, sts_uid, run, args)
    print(f"first run exit code {code}")


@pytest.mark.serial
def test_item_13_a_verb_revoked_mid_run(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """The run's user may do everything a migration needs; while the first PV is being replaced,
    an admin edits the ClusterRole and takes `create persistentvolumes` away. The run stops
    with a 403 on one error line, the disk kept; with the verb given back, the same command
    finishes."""
    made = scenario.create(env, "web", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    docs = full_access_role(ns, "revoker")
    for doc in docs:
        kubectl.apply(doc)
    token = env.info()["tokens"]["revoker"]
    kubeconfig = write_kubeconfig(tmp_path / "user.conf", env.info()["user_kubeconfig"], token=token)
    environ = {**env_vars, "KUBECONFIG": kubeconfig}
    args = migrate_args(ns, tmp_path / "run")
    volume = first_volume(made)
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    revoked = json.loads(json.dumps(role))
    for rule in revoked["rules"]:
        if rule["resources"] == ["persistentvolumes"] and "create" in rule["verbs"]:
            rule["verbs"].remove("create")
    try:
        with paused(env, "vsphere-syncer"):  # holds the run in its wait for the release
            run = Run(environ, args)
            run.until(f"persistentvolume/{volume.pv} deleted")
            kubectl.apply(revoked)
        code = run.finish()
        assert code == 1, run.text()
        assert "forbidden" in run.err.lower() and "persistentvolumes" in run.err, run.text()
        assert not kubectl.exists("pv", volume.pv)
        assert vc.read_marker(env, volume.vmdk, len(volume.marker)) == volume.marker
        kubectl.apply(role)
        again = run_plugin(environ, *args)
        assert again.returncode == 0, again.stderr
        assert_migrated(env, kubectl, made, sts_uid)
    finally:
        for doc in docs:
            kind = doc["kind"].lower()
            where = ["-n", ns] if "namespace" in doc["metadata"] else []
            kubectl(*where, "delete", kind, doc["metadata"]["name"], "--ignore-not-found")


def terminate_vcenter_sessions(env: cluster.Env) -> int:
    """End every vCenter session but the caller's (the tool's and the driver's), as an idle
    timeout does; how many were ended."""
    si = vc.connect(env)
    manager = si.content.sessionManager
    mine = manager.currentSession.key
    others = [s.key for s in manager.sessionList or [] if s.key != mine]
    if others:
        manager.TerminateSession(sessionId=others)
    return len(others)


@pytest.mark.serial
def test_item_13_vcenter_session_expires_during_a_long_wait(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """The run logs in to vCenter at the start; while it waits for the driver to release a disk
    (a long wait: the syncer paused), its vCenter session ends (idle timeout, vCenter restart).
    Its next vCenter call must log in again rather than fail."""
    made = scenario.create(env, "web", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    args = migrate_args(ns, tmp_path / "run")
    volume = first_volume(made)
    with paused(env, "vsphere-syncer"):
        run = Run(env_vars, args)
        run.until(f"persistentvolume/{volume.pv} deleted")
        assert terminate_vcenter_sessions(env) >= 1
    code = run.finish()
    assert code == 0, run.text()
    assert "logged in to vCenter again" in run.text()
    assert_migrated(env, kubectl, made, sts_uid)


@pytest.mark.serial
def test_a_hanging_detach_says_what_it_waits_for_and_what_to_check(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """The CSI attacher paused: the first evicted pod's volume does not detach. The run says
    every 30 s what it waits for and, half way to its timeout, what to look at; once the
    attacher runs again, it finishes (issue 8: a stuck detach showed nothing for 10 minutes)."""
    made = scenario.create(env, "web", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    # 60s: the first line (at 30s) comes half way, with the hint (it once took a 90s timeout, 45s)
    args = migrate_args(ns, tmp_path / "run", "--timeout", "60s")
    volume = first_volume(made)
    with paused(env, "csi-attacher"):
        run = Run(env_vars, args)
        run.until(f"still waiting for volume {volume.pv} to be detached: ")
        assert run.out[-1].rstrip().endswith("s of 60s"), run.out[-1]
        run.until("hint: a detach that hangs")
    assert run.finish() == 0, run.text()
    assert_migrated(env, kubectl, made, sts_uid)
