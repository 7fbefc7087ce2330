"""What a second review found where a run meets other work or a stop (issue 17): each test drives
`kubectl csi-migrate ...` into the sequence the review described and checks what the user sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testenv import cluster, scenario
from tests.e2e.conftest import REPO, Kubectl, run_plugin
from tests.e2e.test_migration import assert_migrated
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


def test_item_5_a_fleet_child_whose_report_outgrows_a_pipe_does_not_block_the_fleet(
    env: cluster.Env, env_vars: dict[str, str], ns: str
) -> None:
    """`sts --all -o json --dry-run` of a StatefulSet with 48 in-tree volumes: its run prints a
    plan larger than a pipe holds (64 KiB). The fleet used to read a child's whole log before its
    report, so the child blocked writing the report and the fleet waiting for the log's end: both
    for ever. Now the fleet reports the plan."""
    templates = tuple(f"{'d' * 58}-{i}" for i in range(3))  # names as long as a pod's volume allows
    scenario.create(env, "web", ns, replicas=16, intree_templates=templates)
    single = run_plugin(
        env_vars, "sts", "web", "-n", ns, "--csi-storageclass", "standard-rwo", "--dry-run", "-o", "json"
    )
    assert single.returncode == 0, single.stderr
    assert len(single.stdout.encode()) > 65536, f"the plan is {len(single.stdout)} bytes: not more than a pipe holds"
    try:
        fleet = run_plugin(
            env_vars, "sts", "--all", "-n", ns, "--csi-storageclass", "standard-rwo", "--dry-run", "-o", "json",
            timeout=120,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("the fleet and its child blocked each other on a full pipe") from exc
    assert fleet.returncode == 0, fleet.stderr
    items = json.loads(fleet.stdout)["items"]
    assert [(i["name"], i["result"], i["volumes"]) for i in items] == [("web", "planned", 48)]
