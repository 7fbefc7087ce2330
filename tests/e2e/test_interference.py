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
from typing import Any

import pytest

from kubectl_csi_migrate.migration.owners import steps_for
from kubectl_csi_migrate.migration.plan import Plan
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


def test_item_8_a_working_directory_older_than_the_record_is_not_trusted(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """A `deploy` run killed once its claim is gone, a copy of its folder kept (a laptop's, a CI
    runner's). The run is rolled back elsewhere from the record in the cluster; then the old
    folder's `deploy` must not resume a run that was rolled back (before: it carried on from its
    own steps and deleted the in-tree PV the running pods use). A new run begins elsewhere and
    stops; then `rollback` from the old folder must not undo the first run again over the new one,
    nor write its record over the new run's. Each refused with one error line, nothing changed;
    the new run's own folder then rolls it back."""
    import shutil

    from tests.e2e.test_owners import assert_claim_in_tree, ready_pods
    from tests.e2e.test_rollback import killed

    made = scenario.deployment(env, "api", ns, replicas=1)
    (volume,) = made.volumes
    deploy = ["deploy", "api", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes"]
    back = ["rollback", "deploy/api", "-n", ns, "--yes"]
    run_dir, old, stale = tmp_path / "run", tmp_path / "old", tmp_path / "stale"
    killed(env_vars, next(s.id for s in plan_of_deploy(env_vars, ns) if s.kind == "delete-pvc"), "done",
           *deploy, "--working-directory", str(run_dir))  # fmt: skip
    assert not kubectl.exists("pvc", volume.pvc, ns)
    shutil.copytree(run_dir, old)
    shutil.copytree(run_dir, stale)

    elsewhere = run_plugin(env_vars, *back, "--working-directory", str(tmp_path / "elsewhere"))
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "rebuilt it from configmap/csi-migrate-deployment-api" in elsewhere.stdout
    assert_claim_in_tree(kubectl, ns, volume)
    kubectl("-n", ns, "rollout", "status", "deployment/api", "--timeout=120s")
    pv_before = kubectl.get("pv", volume.pv)

    resumed = run_plugin(env_vars, *deploy, "--working-directory", str(old))
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr
    assert "lagged the run's record in the cluster" in resumed.stdout, resumed.stdout
    assert "was rolled back" in resumed.stderr and "deployment api was not changed" in resumed.stderr, resumed.stderr
    pv = kubectl.get("pv", volume.pv)
    assert not pv["metadata"].get("deletionTimestamp"), "the in-tree PV the pods use is being deleted"
    assert pv["metadata"]["resourceVersion"] == pv_before["metadata"]["resourceVersion"], "the PV was changed"
    assert_claim_in_tree(kubectl, ns, volume)
    assert len(ready_pods(kubectl, ns, "api")) == 1

    new_dir = tmp_path / "new"
    killed(env_vars, next(s.id for s in plan_of_deploy(env_vars, ns) if s.kind == "delete-pvc"), "done",
           *deploy, "--working-directory", str(new_dir))  # fmt: skip
    new_run = json.loads((new_dir / "run.json").read_text())["run_id"]
    record_before = kubectl.get("configmap", "csi-migrate-deployment-api", ns)
    refused = run_plugin(env_vars, *back, "--working-directory", str(stale))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "records a later run" in refused.stderr and refused.stderr.count("error:") == 1, refused.stderr
    assert not kubectl.exists("pvc", volume.pvc, ns), "the old rollback acted over the new run"
    record_after = kubectl.get("configmap", "csi-migrate-deployment-api", ns)
    assert record_after["metadata"]["resourceVersion"] == record_before["metadata"]["resourceVersion"]
    assert json.loads(record_after["data"]["run.json"])["run_id"] == new_run

    rolled = run_plugin(env_vars, *back, "--working-directory", str(new_dir))
    assert rolled.returncode == 0, rolled.stderr
    assert_claim_in_tree(kubectl, ns, volume)
    kubectl("-n", ns, "rollout", "status", "deployment/api", "--timeout=120s")


def plan_of_deploy(env_vars: dict[str, str], ns: str) -> list[Any]:
    planned = run_plugin(
        env_vars, "deploy", "api", "-n", ns, "--csi-storageclass", "standard-rwo", "--dry-run", "-o", "json"
    )
    assert planned.returncode == 0, planned.stderr
    return steps_for(Plan.from_dict(json.loads(planned.stdout)["plan"]))


def paused(env_vars: dict[str, str], step: str, event: str, args: list[str]) -> subprocess.Popen[str]:
    """`kubectl csi-migrate ARGS` stopped (SIGSTOP) right after it records `event` of `step`, as a
    run stands between two steps while other work acts; SIGCONT lets it go on."""
    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env_vars['PATH']}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.killer", step, event, *args],
        cwd=REPO, env={**env_vars, "PATH": path, "KILLER_SIGNAL": "STOP"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return proc
        time.sleep(0.1)
    out, err = proc.communicate(timeout=60) if proc.poll() is None else proc.communicate()
    raise AssertionError(f"the run did not stop after {event} {step}: exit {proc.returncode}\n{out}{err}")


def go_on(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def wait_for(what: str, check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f}s"
        time.sleep(0.5)
    return found


def test_item_4_a_statefulset_put_back_while_a_claim_is_deleted_stops_the_run_at_its_next_step(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """A rolling run stands right after it deleted replica web-1's claim; meanwhile a GitOps sync
    puts the in-tree StatefulSet back (its manifest as before the run): the StatefulSet controller
    makes a new claim of that name and a pod web-1 on it. The run must stop at its next step (it
    checks before every step, not only between replicas), name the new claim and pod, say where
    the replica's data is and what to delete; following that, the same command finishes, the data
    intact. Before: it went on (in-tree PV deleted, disk registered, CSI PV created) to stop at
    "exists but is not bound", with no way named to finish."""
    made = scenario.create(env, "web", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    manifest = kubectl.get("statefulset", "web", ns)
    steps = plan_steps(env_vars, ns, "rolling")
    target = next(s for s in steps if s.kind == "delete-pvc")
    claim = target.target.split("/", 1)[1]
    workdir = tmp_path / "run"
    args = migrate_args(ns, "rolling", workdir)
    proc = paused(env_vars, target.id, "done", args)
    try:
        assert not kubectl.exists("pvc", claim, ns)
        doc = {
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": ns, "labels": manifest["metadata"].get("labels") or {}},
            "spec": manifest["spec"],
        }  # fmt: skip
        kubectl("apply", "--field-manager", "argocd-controller", "-f", "-", stdin=json.dumps(doc))
        wait_for(f"claim {claim} made by the StatefulSet's controller", lambda: kubectl.exists("pvc", claim, ns))
        wait_for("pod web-1 made by the StatefulSet's controller", lambda: kubectl.exists("pod", "web-1", ns))
    finally:
        code, out, err = go_on(proc)
    assert code == 1, f"exit {code}\n{out}{err}"
    assert "created again by someone else" in err and "argocd-controller" in err, err
    assert f"persistentvolumeclaim {claim} is one its controller made anew" in err, err
    assert "mounted by pod web-1" in err and f"kubectl -n {ns} delete pod web-1`" in err, err
    assert recorded(workdir).get(f"delete-pv/{target.pv}") is None, "a step ran after the StatefulSet came back"
    assert "vsphereVolume" in kubectl.get("pv", target.pv)["spec"], "the in-tree PV is kept"

    kubectl("-n", ns, "delete", "statefulset", "web", "--cascade=orphan")
    kubectl("-n", ns, "delete", "pod", "web-1", "--wait=true")
    kubectl("-n", ns, "delete", "pvc", claim, "--wait=true")
    done = run_plugin(env_vars, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_migrated(env, kubectl, made, sts_uid)


def test_item_7_a_deployment_scaled_up_during_its_run_stops_it_and_overlapping_selectors_do_not_stall_it(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """A Deployment `api` beside another (`api-canary`) whose pods carry the same labels: the
    scale to 0 waits on api's own pods (before: on every pod the selector matched, so it waited
    out --timeout with the application down). The run stands right after its disk is detached
    and an autoscaler scales api to 1: the run must stop before it deletes the claim a new pod
    mounts (before: the claim stuck in Terminating until the run timed out). The same command
    then scales api to 0 again and finishes."""
    from tests.e2e.test_owners import assert_claim_migrated

    made = scenario.deployment(env, "api", ns, replicas=1)
    (volume,) = made.volumes
    canary = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api-canary", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}}, "spec": scenario._pod_spec([])}},
    }  # fmt: skip
    kubectl.apply(canary)
    kubectl("-n", ns, "rollout", "status", "deployment/api-canary", "--timeout=120s")
    args = ["deploy", "api", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes", "--timeout", "60s"]
    args += ["--working-directory", str(tmp_path / "run")]
    proc = paused(env_vars, f"detach/{volume.pv}", "done", args)
    try:
        kubectl("-n", ns, "scale", "deployment/api", "--replicas=1")
        wait_for(
            "a new pod of api",
            lambda: _api_pods(kubectl, ns),
        )
    finally:
        code, out, err = go_on(proc)
    assert code == 1, f"exit {code}\n{out}{err}"
    assert "was scaled to 1 by kubectl" in err and "kept it at 0" in err, err
    assert recorded(tmp_path / "run").get(f"delete-pvc/{volume.pvc}") is None, "the claim's deletion started"
    assert not kubectl.get("pvc", volume.pvc, ns)["metadata"].get("deletionTimestamp")

    done = run_plugin(env_vars, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deployment.apps/api scaled to 0" in done.stdout, done.stdout
    assert_claim_migrated(env, kubectl, ns, volume)
    assert kubectl.get("deployment", "api", ns)["spec"]["replicas"] == 1
    assert kubectl.get("deployment", "api-canary", ns)["status"].get("readyReplicas") == 1


def _api_pods(kubectl: Kubectl, ns: str) -> list[str]:
    """The pods of Deployment `api` (not of `api-canary`, whose pods carry the same labels)."""
    names = kubectl("-n", ns, "get", "pods", "-l", "app=api", "-o", "name").split()
    return [n for n in names if n.startswith("pod/api-") and not n.startswith("pod/api-canary-")]
