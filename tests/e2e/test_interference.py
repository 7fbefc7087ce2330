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

from kubectl_csi_migrate.migration.plan import Plan
from kubectl_csi_migrate.migration.steps import steps_for
from testenv import api, cluster, scenario
from tests.e2e.conftest import REPO, Kubectl, run_plugin
from tests.e2e.test_fleet import assert_all_migrated_no_lease_left, shared_budget
from tests.e2e.test_migration import PodMonitor, assert_migrated
from tests.e2e.test_rollback import migrate_args, plan_steps, recorded

pytestmark = pytest.mark.e2e


class LeaseWatch:
    """When the run's Lease (csi-migrate-*, naming `owner`) in `ns` was first seen, and when it
    was gone again, polled every 20 ms."""

    def __init__(self, env: cluster.Env, ns: str, owner: str) -> None:
        self.env, self.ns, self.owner = env, ns, owner
        self.seen: float | None = None
        self.gone: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set() and self.gone is None:
            names = [lease["metadata"]["name"] for lease in api.get(self.env, "lease", namespace=self.ns)["items"]]
            held = any(n.startswith("csi-migrate-") and n.endswith(self.owner) for n in names)
            if held and self.seen is None:
                self.seen = time.time()
            elif not held and self.seen is not None:
                self.gone = time.time()
            time.sleep(0.02)

    def __enter__(self) -> LeaseWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        deadline = time.monotonic() + 10
        while self.seen is not None and self.gone is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(10)


def signalled(env_vars: dict[str, str], step: str, event: str, delay: float, args: list[str]) -> tuple[int, float, str]:
    """`kubectl csi-migrate ARGS` sent SIGTERM `delay` seconds after it records `event` of
    `step`: its exit code, how long it ran, its output."""
    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env_vars['PATH']}"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.e2e.killer", step, event, *args],
        cwd=REPO, env={**env_vars, "PATH": path, "KILLER_SIGNAL": "TERM", "KILLER_DELAY": str(delay)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return proc.returncode, time.monotonic() - started, proc.stdout + proc.stderr


def events_after(workdir: Path, moment: float) -> list[str]:
    events = [json.loads(line) for line in (workdir / "steps.jsonl").read_text().splitlines() if line.strip()]
    return [f"{e['step']} {e['event']}" for e in events if e["time"] > moment]


def test_item_2_a_signal_during_an_offline_run_stops_every_volume_before_the_lease_is_given_back(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """An offline run moves its volumes on worker threads; signals reach the main thread only.
    (a) SIGTERM while the workers move 6 volumes: no step may run once the run has given its Lease
    back (before: the main thread gave it back while the workers went on deleting and creating
    PVs and claims, and `status` could offer a rollback beside them). (b) SIGTERM while a worker
    waits (a claim held by a finalizer): the run ends at once, not after --timeout. The same
    command then finishes each migration."""
    web = scenario.create(env, "web", ns, replicas=6)
    web_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    steps = plan_steps(env_vars, ns, "offline")
    first_delete = next(s for s in steps if s.kind == "delete-pvc")
    web_args = [*migrate_args(ns, "offline", tmp_path / "web"), "--timeout", "120s"]
    with LeaseWatch(env, ns, "web") as lease:
        code, took, out = signalled(env_vars, first_delete.id, "done", 0, web_args)
    assert code == 143 and "terminated" in out, f"exit {code}: {out}"
    assert lease.seen is not None and lease.gone is not None, "the run's Lease was not seen taken and given back"
    late = events_after(tmp_path / "web", lease.gone)
    assert not late, f"steps that ran after the run gave its Lease back: {late}"

    db = scenario.create(env, "db", ns, replicas=2)
    db_uid = kubectl.get("statefulset", "db", ns)["metadata"]["uid"]
    held = db.volumes[0]
    hold = '{"metadata":{"finalizers":["csi-migrate.test/hold"]}}'
    kubectl("patch", "pvc", held.pvc, "-n", ns, "--type=merge", "-p", hold)
    db_args = ["sts", "db", *web_args[2:]]
    db_args[db_args.index(str(tmp_path / "web"))] = str(tmp_path / "db")
    delete_held = f"delete-pvc/{held.pvc}"
    with LeaseWatch(env, ns, "db") as lease:
        code, took, out = signalled(env_vars, delete_held, "start", 2, db_args)
    assert code == 143 and "terminated" in out, f"exit {code}: {out}"
    assert took < 30, f"the stopped run took {took:.0f}s to end: a worker sat out its wait\n{out}"
    assert recorded(tmp_path / "db")[delete_held] == "start", "the held claim's deletion was not waited on"
    assert lease.gone is not None and not events_after(tmp_path / "db", lease.gone)

    kubectl("patch", "pvc", held.pvc, "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    for args, made, uid in ((web_args, web, web_uid), (db_args, db, db_uid)):
        done = run_plugin(env_vars, *args)
        assert done.returncode == 0, done.stderr
        assert "resuming the run" in done.stdout
        assert_migrated(env, kubectl, made, uid)


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
            recorded_beta = (tmp_path / "beta").exists()
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
    assert not recorded_beta, "beta started a record"
    assert done.returncode == 0, done.stderr[-4000:]
    assert monitor.events > 0
    assert monitor.min_ready >= 5, f"{6 - monitor.min_ready} pods of poddisruptionbudget shared were down at once"
    assert_all_migrated_no_lease_left(env, kubectl, ns, {n: (made[n], uids[n]) for n in names})


def test_item_1_a_replicaset_of_its_own_killed_mid_run_is_resumed_with_its_working_directory(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """`deploy NAME` takes a ReplicaSet of its own (no Deployment of that name), and `all` runs it
    with a `--working-directory`, as does the resume command `status` and the fleet print. Killed
    once it is scaled to 0, and again once its claim is gone, the same command with that folder
    must resume the ReplicaSet's run (before: with the flag, the name was taken as a Deployment's:
    the run was refused as another owner's, which the fleet reported as 'nothing changed')."""
    from tests.e2e.test_owners import assert_claim_migrated
    from tests.e2e.test_rollback import killed

    (volume,) = scenario.intree_claims(env, ns, ["solo-data"], "solo")
    spec = scenario._pod_spec([volume.pvc])
    labels = {"app": "solo"}
    kubectl.apply(
        {
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "solo", "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": spec}},
        }
    )  # fmt: skip
    kubectl("-n", ns, "wait", "rs/solo", "--for=jsonpath={.status.readyReplicas}=1", "--timeout=120s")
    args = ["deploy", "solo", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes"]
    args += ["--working-directory", str(tmp_path / "run")]
    planned = run_plugin(env_vars, *args, "--dry-run", "-o", "json")
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["plan"]["kind"] == "ReplicaSet"
    steps = steps_for(Plan.from_dict(json.loads(planned.stdout)["plan"]))
    for kind in ("scale-to-zero", "delete-pvc"):
        step = next(s for s in steps if s.kind == kind)
        killed(env_vars, step.id, "done", *args)
        assert kubectl.get("rs", "solo", ns)["spec"]["replicas"] == 0
    done = run_plugin(env_vars, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming the run" in done.stdout, done.stdout
    assert_claim_migrated(env, kubectl, ns, volume)
    kubectl("-n", ns, "wait", "rs/solo", "--for=jsonpath={.status.readyReplicas}=1", "--timeout=120s")
    assert kubectl.get("rs", "solo", ns)["spec"]["replicas"] == 1, "the ReplicaSet was not scaled back to 1"
