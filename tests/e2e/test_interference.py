"""What a second review found where a run meets other work or a stop (issue 17): each test drives
`kubectl csi-migrate ...` into the sequence the review described and checks what the user sees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testenv import cluster, scenario
from tests.e2e.conftest import REPO, Kubectl, run_plugin
from tests.e2e.test_fleet import shared_budget
from tests.e2e.test_migration import PodMonitor, assert_migrated
from tests.e2e.test_rollback import migrate_args, plan_steps, recorded

pytestmark = pytest.mark.e2e


class LeaseWatch:
    """When the run's Lease (csi-migrate-*) in `ns` was first seen, and when it was gone again."""

    def __init__(self, kubectl: Kubectl, ns: str) -> None:
        self.kubectl, self.ns = kubectl, ns
        self.seen: float | None = None
        self.gone: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set() and self.gone is None:
            names = [lease["metadata"]["name"] for lease in self.kubectl.get("leases", namespace=self.ns)["items"]]
            held = any(n.startswith("csi-migrate-") for n in names)
            if held and self.seen is None:
                self.seen = time.time()
            elif not held and self.seen is not None:
                self.gone = time.time()
            time.sleep(0.05)

    def __enter__(self) -> LeaseWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_item_2_a_signal_during_an_offline_run_stops_every_volume_before_the_lease_is_given_back(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """An offline run moves its volumes on worker threads. One claim is held by a finalizer (its
    deletion waits), and SIGTERM arrives while that volume's worker waits for it: the run must stop
    every worker before its next change, leave the wait at once instead of sitting out --timeout,
    and give its Lease back only after the last step in flight has ended, so that nothing changes
    once `status` can say the run stopped. The same command then finishes the migration."""
    made = scenario.create(env, "web", ns, replicas=3)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    held = made.volumes[0]
    kubectl(
        "patch",
        "pvc",
        held.pvc,
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":["csi-migrate.test/hold"]}}',
    )
    steps = plan_steps(env_vars, ns, "offline")
    delete_held = next(s for s in steps if s.kind == "delete-pvc" and s.pv == held.pv)
    workdir = tmp_path / "run"
    args = [*migrate_args(ns, "offline", workdir), "--timeout", "120s"]
    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env_vars['PATH']}"
    with LeaseWatch(kubectl, ns) as lease:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "tests.e2e.killer", delete_held.id, "start", *args],
            cwd=REPO, env={**env_vars, "PATH": path, "KILLER_SIGNAL": "TERM", "KILLER_DELAY": "2"},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        took = time.monotonic() - started
        deadline = time.monotonic() + 10
        while lease.gone is None and time.monotonic() < deadline:
            time.sleep(0.1)
    print(proc.stdout, proc.stderr, sep="\n")
    assert proc.returncode == 143, f"exit {proc.returncode}: {proc.stderr}"
    assert "terminated" in proc.stderr
    assert took < 30, f"the stopped run took {took:.0f}s to end: a worker sat out its wait"
    assert recorded(workdir)[delete_held.id] == "start", "the held claim's deletion was not waited on"
    assert lease.seen is not None and lease.gone is not None, "the run's Lease was not seen taken and given back"
    events = [json.loads(line) for line in (workdir / "steps.jsonl").read_text().splitlines() if line.strip()]
    late = [f"{e['step']} {e['event']}" for e in events if e["time"] > lease.gone]
    assert not late, f"steps recorded after the Lease was given back: {late}"

    status = run_plugin(env_vars, "status", "web", "-n", ns, "--working-directory", str(workdir), "-o", "json")
    assert status.returncode == 0, status.stderr
    kubectl("patch", "pvc", held.pvc, "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    done = run_plugin(env_vars, *args)
    assert done.returncode == 0, done.stderr
    assert "resuming the run" in done.stdout
    assert_migrated(env, kubectl, made, sts_uid)


def wait_stopped(proc: subprocess.Popen[str], timeout: float = 180) -> None:
    """Until `proc` is stopped (SIGSTOP: state T), failing if it ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it was stopped: exit {proc.returncode} {proc.communicate()}")
        if Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
            return
        time.sleep(0.05)
    raise AssertionError("the run was not stopped")


def test_item_6_a_run_waits_for_a_shared_budget_held_by_a_stopped_run_then_stops_with_nothing_changed(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """One budget (maxUnavailable 1) over alpha's and beta's pods. `sts alpha` is stopped
    (SIGSTOP: alive, its Leases unrenewed but younger than their duration) right after it deleted
    its first pod. `sts beta --timeout 15s` must not take a second pod down under the budget: it
    waits for the budget's Lease, naming the budget and alpha's run, and stops with one `error:`
    line, nothing changed (its StatefulSet, pods, claims and PVs as they were, no working
    directory). alpha, continued, finishes; `sts beta` then finishes too; never two of the
    budget's pods not Ready."""
    names = ("alpha", "beta")
    made = {n: scenario.create(env, n, ns, replicas=3, pdb=False) for n in names}
    uids = {n: kubectl.get("statefulset", n, ns)["metadata"]["uid"] for n in names}
    shared_budget(kubectl, ns, names)
    first_evict = next(s for s in plan_steps(env_vars, ns, "rolling", "alpha") if s.kind == "evict")
    common = ["-n", ns, "--csi-storageclass", "standard-rwo", "--yes"]
    alpha_args = ["sts", "alpha", *common, "--working-directory", str(tmp_path / "alpha")]
    beta_args = ["sts", "beta", *common, "--working-directory", str(tmp_path / "beta")]

    def beta_objects() -> dict[str, str]:
        found = {"statefulset": kubectl.get("statefulset", "beta", ns)}
        for v in made["beta"].volumes:
            found[f"pod/beta-{v.ordinal}"] = kubectl.get("pod", f"beta-{v.ordinal}", ns)
            found[f"pvc/{v.pvc}"] = kubectl.get("pvc", v.pvc, ns)
            found[f"pv/{v.pv}"] = kubectl.get("pv", v.pv)
        return {key: obj["metadata"]["resourceVersion"] for key, obj in found.items()}

    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env_vars['PATH']}"
    pods = {f"{n}-{i}" for n in names for i in range(3)}
    with PodMonitor(env, ns, pods) as monitor:
        alpha = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.killer", first_evict.id, "done", *alpha_args],
            cwd=REPO, env={**env_vars, "PATH": path, "KILLER_SIGNAL": "STOP"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_stopped(alpha)
            assert recorded(tmp_path / "alpha")[first_evict.id] == "done"
            assert not kubectl.exists("pod", first_evict.target.split("/")[1], ns), "alpha's first pod is not down"
            before = beta_objects()
            started = time.monotonic()
            refused = run_plugin(env_vars, *beta_args, "--timeout", "15s", timeout=180)
            took = time.monotonic() - started
            after = beta_objects()
        finally:
            os.kill(alpha.pid, signal.SIGCONT)
        out, err = alpha.communicate(timeout=300)
        assert alpha.returncode == 0, f"alpha, continued, did not finish: {out}{err}"
        done = run_plugin(env_vars, *beta_args, timeout=300)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, refused.stderr
    assert f"poddisruptionbudget {ns}/shared" in errors[0] and "nothing was changed" in errors[0], errors
    assert f"the csi-migrate run of statefulset {ns}/alpha" in errors[0], errors
    waiting = [line for line in refused.stdout.splitlines() if line.startswith("waiting for poddisruptionbudget")]
    assert waiting and f"{ns}/shared" in waiting[0] and f"statefulset {ns}/alpha" in waiting[0], refused.stdout
    assert 15 <= took < 60, f"beta gave up after {took:.0f}s, not after its --timeout"
    assert after == before, "beta changed its objects while alpha held the budget's Lease"
    assert not (tmp_path / "beta").exists(), "beta started a record"
    assert done.returncode == 0, done.stderr[-4000:]
    assert monitor.events > 0
    assert monitor.min_ready >= 5, f"{6 - monitor.min_ready} pods of poddisruptionbudget shared were down at once"
    for name in names:
        assert_migrated(env, kubectl, made[name], uids[name])
    leases = [item["metadata"]["name"] for item in kubectl.get("leases", namespace=ns)["items"]]
    assert not [n for n in leases if n.startswith("csi-migrate")], f"leases left behind: {leases}"
