"""Every boundary of `steps_for(plan)`, both strategies, a 3-replica StatefulSet with two
templates (one already CSI): killed right after that step is recorded, (a) the same command
finishes the migration, and (b) `rollback` restores the in-tree state. The boundaries are the
plan's own steps (iterated, not picked); `rollback` is itself killed at every undo boundary.
Driven as `kubectl csi-migrate ...` (the kills through tests/e2e/killer.py, the plugin's main)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubectl_csi_migrate.migration.kinds import KINDS
from kubectl_csi_migrate.migration.owners import steps_for
from kubectl_csi_migrate.migration.plan import Plan
from kubectl_csi_migrate.migration.steps import Step
from testenv import cluster, scenario, vc
from tests.e2e.conftest import REPO, Kubectl, run_plugin
from tests.e2e.test_migration import assert_migrated

pytestmark = pytest.mark.e2e


def killed(env_vars: dict[str, str], step: str, event: str, *args: str) -> None:
    """`kubectl csi-migrate ARGS`, SIGKILLed right after it records `event` of `step`."""
    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env_vars['PATH']}"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.e2e.killer", step, event, *args],
        cwd=REPO,
        env={**env_vars, "PATH": path},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, (
        f"not killed after {event} {step}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    )


def recorded(workdir: Path) -> dict[str, str]:
    """step id -> its last event in the working directory's record."""
    path = workdir / "steps.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {e["step"]: e["event"] for e in events}


def migrate_args(ns: str, strategy: str, workdir: Path) -> list[str]:
    return [
        "sts", "web", "-n", ns, "--csi-storageclass", "standard-rwo", "--strategy", strategy, "--yes",
        "--working-directory", str(workdir),
    ]  # fmt: skip


def rollback_args(ns: str, workdir: Path) -> list[str]:
    return ["rollback", "web", "-n", ns, "--yes", "--timeout", "90s", "--working-directory", str(workdir)]


def plan_steps(env_vars: dict[str, str], ns: str, strategy: str, name: str = "web") -> list[Step]:
    proc = run_plugin(
        env_vars, "sts", name, "-n", ns, "--csi-storageclass", "standard-rwo", "--strategy", strategy,
        "--dry-run", "-o", "json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return steps_for(Plan.from_dict(json.loads(proc.stdout)["plan"]))


def in_tree_state(kubectl: Kubectl, ns: str, made: scenario.Scenario) -> dict[str, Any]:
    """What a rollback must give back: the StatefulSet's templates, the claims' and PVs' names,
    classes, reclaim policies, disks and phases."""
    sts = kubectl.get("statefulset", made.name, ns)
    state: dict[str, Any] = {
        "templates": [
            (t["metadata"]["name"], t["spec"].get("storageClassName")) for t in sts["spec"]["volumeClaimTemplates"]
        ],
        "replicas": sts["spec"]["replicas"],
        "retention": sts["spec"].get("persistentVolumeClaimRetentionPolicy"),
    }
    for v in made.volumes:
        pvc = kubectl.get("pvc", v.pvc, ns)
        pv = kubectl.get("pv", v.pv)
        state[v.pvc] = (pvc["spec"].get("storageClassName"), pvc["spec"]["volumeName"], pvc["status"]["phase"])
        disk = (
            pv["spec"]["vsphereVolume"]["volumePath"]
            if "vsphereVolume" in pv["spec"]
            else pv["spec"]["csi"]["volumeHandle"]
        )
        state[v.pv] = (
            pv["spec"].get("storageClassName"),
            pv["spec"]["persistentVolumeReclaimPolicy"],
            disk,
            pv["status"]["phase"],
            (pv["spec"].get("claimRef") or {}).get("name"),
        )
    return state


def assert_rolled_back(env: cluster.Env, kubectl: Kubectl, made: scenario.Scenario, before: dict[str, Any]) -> None:
    ns = made.namespace
    deadline = time.monotonic() + 60
    while (after := in_tree_state(kubectl, ns, made)) != before and time.monotonic() < deadline:
        time.sleep(1)  # a claim created again binds within a moment
    assert after == before
    sts = kubectl.get("statefulset", made.name, ns)
    for v in made.volumes:
        pvc = kubectl.get("pvc", v.pvc, ns)
        assert kubectl.get("pv", v.pv)["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
        assert vc.read_marker(env, v.vmdk, len(v.marker)) == v.marker, f"the data of {v.pvc} changed"
    pods = [p for p in kubectl.get("pods", namespace=ns)["items"] if p["metadata"]["name"].startswith("web-")]
    assert sorted(p["metadata"]["name"] for p in pods) == ["web-0", "web-1", "web-2"]
    for pod in pods:
        assert [o["uid"] for o in pod["metadata"].get("ownerReferences", [])] == [sts["metadata"]["uid"]]
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
    mine = [pv for pv in kubectl.get("pv")["items"] if (pv["spec"].get("claimRef") or {}).get("namespace") == ns]
    assert len(mine) == len(made.volumes), "a PV too many names a disk of this StatefulSet"
    assert not [pv["metadata"]["name"] for pv in mine if pv["status"]["phase"] != "Bound"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["rolling", "offline"])
def test_killed_at_every_step_the_same_command_finishes_and_a_rollback_killed_at_every_undo_finishes(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path, strategy: str
) -> None:
    made = scenario.create(env, "web", ns, replicas=3, intree_templates=("data",), csi_templates=("logs",))
    before = in_tree_state(kubectl, ns, made)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    steps = plan_steps(env_vars, ns, strategy)
    args = migrate_args(ns, strategy, tmp_path / "run")
    kills = 0
    for step in steps:
        # Offline, the volumes move side by side: a step of another volume may be done already
        # when the run is killed after this one; it was passed, not a kill point.
        if recorded(tmp_path / "run").get(step.id) == "done":
            continue
        killed(env_vars, step.id, "done", *args)
        kills += 1
    finished = run_plugin(env_vars, *args)
    assert finished.returncode == 0, finished.stderr
    assert f"({len(steps)} steps already done)" in finished.stdout
    if strategy == "rolling":
        assert kills == len(steps)
    intree = scenario.Scenario(made.name, ns, made.replicas, [v for v in made.volumes if not v.csi])
    assert_migrated(env, kubectl, intree, sts_uid)

    back = rollback_args(ns, tmp_path / "run")
    for step in reversed(steps):
        killed(env_vars, step.id, "undone", *back)
    rolled = run_plugin(env_vars, *back)
    assert rolled.returncode == 0, rolled.stderr
    assert_rolled_back(env, kubectl, made, before)
    print(f"{strategy}: {len(steps)} steps, killed at {kills} of them, then at each of the {len(steps)} undos")


@dataclass
class Boundary:
    """One step boundary of `for_each_boundary`: the StatefulSet killed right after `step`."""

    step: Step
    made: scenario.Scenario
    args: list[str]  # the command that was killed; run again, it resumes
    workdir: Path
    before: dict[str, Any]  # the in-tree state before the run
    sts_uid: str


def _boundary_kinds(strategy: str) -> list[str]:
    """The kinds of the steps of the boundary tests' StatefulSet (3 replicas; `data` in-tree,
    `logs` already CSI), planned from objects of that shape at collection time so that each
    boundary is a test of its own, which the xdist workers share out. Each test checks these
    against the live plan of its StatefulSet: the boundaries stay the plan's own."""
    from kubectl_csi_migrate.migration.owners import build_plan
    from kubectl_csi_migrate.migration.plan import Snapshot

    def pv(name: str, claim: str, csi: bool) -> dict[str, Any]:
        source = (
            {"csi": {"driver": "csi.vsphere.vmware.com", "volumeHandle": f"fcd-{name}"}}
            if csi
            else {"vsphereVolume": {"volumePath": f"[ds] kubevols/{name}.vmdk", "fsType": "ext4"}}
        )
        return {
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "persistentVolumeReclaimPolicy": "Delete",
                     "claimRef": {"name": claim, "namespace": "ns"}, **source},
        }  # fmt: skip

    templates = [
        {"metadata": {"name": "data"}, "spec": {"storageClassName": "standard"}},
        {"metadata": {"name": "logs"}, "spec": {"storageClassName": "standard-rwo"}},
    ]
    sts = {"metadata": {"name": "web", "uid": "u"}, "spec": {"replicas": 3, "volumeClaimTemplates": templates}}
    pvcs, pvs = {}, {}
    for ordinal in range(3):
        for template, klass in (("data", "standard"), ("logs", "standard-rwo")):
            claim = f"{template}-web-{ordinal}"
            spec = {"volumeName": f"pv-{claim}", "storageClassName": klass}
            pvcs[claim] = {"metadata": {"name": claim}, "spec": spec}
            pvs[f"pv-{claim}"] = pv(f"pv-{claim}", claim, template == "logs")
    plan = build_plan(Snapshot("ns", "web", sts, {}, pvcs, pvs, []), "ctx", "https://k", "standard-rwo", None, strategy)
    return [s.kind for s in steps_for(plan)]


def boundaries(*strategies: str, on_every_leg: tuple[str, ...] = ()) -> list[Any]:
    """(strategy, index) of every boundary of the plans, one test each; those whose id is in
    `on_every_leg` also run on the older legs (marked `leg`)."""
    params = []
    for strategy in strategies:
        for index, kind in enumerate(_boundary_kinds(strategy)):
            name = f"{strategy}-{index:02d}-{kind}"
            marks = [pytest.mark.leg] if name in on_every_leg else []
            params.append(pytest.param(strategy, index, id=name, marks=marks))
    missing = set(on_every_leg) - {p.id for p in params}
    assert not missing, f"no such boundary: {missing}"
    return params


def at_boundary(
    env: cluster.Env,
    env_vars: dict[str, str],
    kubectl: Kubectl,
    ns: str,
    tmp_path: Path,
    strategy: str,
    index: int,
    then: Callable[[Boundary], None],
) -> None:
    """A StatefulSet of its own (3 replicas, two templates, one already CSI) whose run is
    SIGKILLed right after step `index` of its plan is recorded; then `then` checks what follows."""
    made = scenario.create(env, "web", ns, replicas=3, intree_templates=("data",), csi_templates=("logs",))
    before = in_tree_state(kubectl, ns, made)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    workdir = tmp_path / "run"
    args = migrate_args(ns, strategy, workdir)
    killed(env_vars, f"#{index}", "done", *args)  # the index-th step of the plan the run made
    steps = steps_for(Plan.from_dict(json.loads((workdir / "run.json").read_text())["plan"]))
    assert [s.kind for s in steps] == _boundary_kinds(strategy), "the live plan is not the one the tests were made for"
    step = steps[index]
    assert recorded(workdir)[step.id] == "done"
    try:
        then(Boundary(step, made, args, workdir, before, sts_uid))
    except AssertionError as exc:
        raise AssertionError(f"killed after {step.id}: {exc}") from exc


@pytest.mark.parametrize(
    ("strategy", "index"),
    boundaries(
        "rolling", "offline", on_every_leg=("rolling-07-delete-pvc", "rolling-09-cns-release", "offline-08-delete-pv")
    ),
)
def test_killed_at_every_step_a_rollback_restores_the_in_tree_state(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path, strategy: str, index: int
) -> None:
    """(b) at every boundary: killed there, then `rollback` restores the in-tree state."""

    def rolled_back(b: Boundary) -> None:
        rolled = run_plugin(env_vars, *rollback_args(b.made.namespace, b.workdir))
        assert rolled.returncode == 0, rolled.stderr
        assert_rolled_back(env, kubectl, b.made, b.before)

    at_boundary(env, env_vars, kubectl, ns, tmp_path, strategy, index, rolled_back)


@pytest.mark.parametrize(("strategy", "index"), boundaries("offline", on_every_leg=("offline-06-detach",)))
def test_killed_at_every_offline_step_the_same_command_finishes(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path, strategy: str, index: int
) -> None:
    """(a) at every boundary of the offline plan. Offline, the volumes move side by side, so the
    chain above passes some boundaries without stopping there; here each boundary gets a
    StatefulSet of its own, killed right after that step, and the same command finishes it.
    (Rolling: the chain above stops at every one of its steps.)"""

    def finished(b: Boundary) -> None:
        done = run_plugin(env_vars, *b.args)
        assert done.returncode == 0, done.stderr
        assert "resuming the run" in done.stdout
        intree = scenario.Scenario(
            b.made.name, b.made.namespace, b.made.replicas, [v for v in b.made.volumes if not v.csi]
        )
        assert_migrated(env, kubectl, intree, b.sts_uid)

    at_boundary(env, env_vars, kubectl, ns, tmp_path, strategy, index, finished)


def status(env_vars: dict[str, str], ns: str, workdir: Path) -> dict[str, Any]:
    proc = run_plugin(env_vars, "status", "web", "-n", ns, "--working-directory", str(workdir), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    human = run_plugin(env_vars, "status", "web", "-n", ns, "--working-directory", str(workdir))
    print(f"$ kubectl csi-migrate status web\n{human.stdout}")
    return dict(json.loads(proc.stdout))


@pytest.mark.leg
@pytest.mark.slow
def test_a_lost_working_directory_is_rebuilt_from_the_record_in_the_cluster(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """Killed right after the first in-tree PV is deleted (its disk named by no PV), the working
    directory deleted: `status` reads the run's record in the cluster, `sts` rebuilds the
    directory from it and finishes; deleted again, `rollback` does the same."""
    import shutil

    made = scenario.create(env, "web", ns, replicas=3, intree_templates=("data",), csi_templates=("logs",))
    before = in_tree_state(kubectl, ns, made)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    steps = plan_steps(env_vars, ns, "rolling")
    target = next(s for s in steps if s.kind == "delete-pv")
    workdir = tmp_path / "run"
    args = migrate_args(ns, "rolling", workdir)
    killed(env_vars, target.id, "done", *args)
    killed_status = status(env_vars, ns, workdir)
    assert killed_status["phase"] == "stopped", killed_status
    assert killed_status["lastStep"] == target.id
    assert killed_status["source"] == "working directory"

    shutil.rmtree(workdir)
    lost = status(env_vars, ns, workdir)
    assert lost["source"].startswith("configmap/csi-migrate-statefulset-web"), lost
    # The record in the cluster is written after some kinds of step only: it shows the last of
    # those before the kill, and names the steps since as ones that may have run (the resume does
    # them again, finding the claim and PV gone).
    index = steps.index(target)
    shown = max(i for i in range(index) if KINDS[steps[i].kind].recorded_after)
    assert (lost["phase"], lost["lastStep"]) == ("stopped", steps[shown].id)
    assert steps[index].id in lost["mayHaveRun"] and steps[shown + 1].id == lost["mayHaveRun"][0]
    assert [r["state"] for r in lost["replicas"]] == ["may have started", "left", "left"]
    assert "resume" in lost["commands"] and "rollback" in lost["commands"]
    record = kubectl.get("configmap", "csi-migrate-statefulset-web", ns)
    assert "password" not in json.dumps(record).lower()

    finished = run_plugin(env_vars, *args)
    assert finished.returncode == 0, finished.stderr
    assert "rebuilt it from configmap/csi-migrate-statefulset-web" in finished.stdout
    assert "resuming the run" in finished.stdout
    intree = scenario.Scenario(made.name, ns, made.replicas, [v for v in made.volumes if not v.csi])
    assert_migrated(env, kubectl, intree, sts_uid)
    assert status(env_vars, ns, workdir)["phase"] == "finished"

    shutil.rmtree(workdir)
    rolled = run_plugin(env_vars, *rollback_args(ns, workdir))
    assert rolled.returncode == 0, rolled.stderr
    assert "rebuilt it from configmap/csi-migrate-statefulset-web" in rolled.stdout
    assert_rolled_back(env, kubectl, made, before)
    assert status(env_vars, ns, workdir)["phase"] == "rolled back"


def test_an_offline_rollback_from_the_record_alone_undoes_every_volume_in_flight(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """Offline, the volumes move side by side and the record in the cluster is written after some
    steps only: killed right after the second volume's claim is deleted, the working directory
    lost, `rollback` from the record must undo what may have run in every volume's chain (each
    deleted claim created again), not only the first step the record lacks."""
    import shutil

    made = scenario.create(env, "web", ns, replicas=3, intree_templates=("data",), csi_templates=("logs",))
    before = in_tree_state(kubectl, ns, made)
    steps = plan_steps(env_vars, ns, "offline")
    target = [s for s in steps if s.kind == "delete-pvc"][1]
    workdir = tmp_path / "run"
    killed(env_vars, target.id, "done", *migrate_args(ns, "offline", workdir))
    shutil.rmtree(workdir)
    rolled = run_plugin(env_vars, *rollback_args(ns, workdir))
    assert rolled.returncode == 0, rolled.stderr
    assert "rebuilt it from configmap/csi-migrate-statefulset-web" in rolled.stdout
    assert_rolled_back(env, kubectl, made, before)


@pytest.mark.slow
def test_a_rollback_from_the_record_alone_killed_then_run_again_from_the_record_restores_the_in_tree_state(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """Issue 17, item 3. A rolling run killed right after the second replica's CSI PV is created
    (the record in the cluster was last written after that replica's FCD), the working directory
    lost; `rollback` (rebuilt from the record) killed right after its third undo; the working
    directory lost again; `rollback` once more must carry on where the first stopped, the steps
    the record never showed included: that CSI PV deleted before the in-tree one is created
    again, the StatefulSet back. Before, it left them out and stopped at the second replica's
    `delete-pv` ("refusing to create a second PV for the same disk"), the StatefulSet deleted,
    and `sts` refused the run as being rolled back. Then `sts` behaves as documented: the
    rolled-back folder is refused, a new one plans a new run."""
    import shutil

    made = scenario.create(env, "web", ns, replicas=3)
    before = in_tree_state(kubectl, ns, made)
    steps = plan_steps(env_vars, ns, "rolling")
    target = [s for s in steps if s.kind == "create-pv"][1]  # the second replica's
    fcds = [i for i, s in enumerate(steps) if s.kind == "fcd"]
    assert fcds[0] < steps.index(target) < fcds[2]
    workdir = tmp_path / "run"
    killed(env_vars, target.id, "done", *migrate_args(ns, "rolling", workdir))
    assert "csi" in kubectl.get("pv", target.pv)["spec"], "the run created the CSI PV"
    shutil.rmtree(workdir)

    # From the record: every step up to the next replica's FCD may have run; undone last first.
    undos = steps[: fcds[2] + 1][::-1]
    killed(env_vars, undos[2].id, "undone", *rollback_args(ns, workdir))
    events = recorded(workdir)
    assert [events.get(s.id) for s in undos[:3]] == ["undone"] * 3
    assert target.id not in events, "the step the record never showed is still to undo"
    assert "csi" in kubectl.get("pv", target.pv)["spec"]
    assert not kubectl.exists("statefulset", "web", ns), "the StatefulSet is put back last"
    shutil.rmtree(workdir)

    rolled = run_plugin(env_vars, *rollback_args(ns, workdir))
    assert rolled.returncode == 0, rolled.stderr
    assert "rebuilt it from configmap/csi-migrate-statefulset-web" in rolled.stdout
    assert f"[{target.id}]" in rolled.stdout, "the steps to undo name the CSI PV the record never showed"
    assert f"[{undos[2].id}]" in rolled.stdout and f"[{undos[1].id}]" not in rolled.stdout
    assert_rolled_back(env, kubectl, made, before)
    assert status(env_vars, ns, workdir)["phase"] == "rolled back"

    refused = run_plugin(env_vars, *migrate_args(ns, "rolling", workdir))
    assert refused.returncode == 1 and "was rolled back" in refused.stderr, refused.stderr
    planned = run_plugin(env_vars, *migrate_args(ns, "rolling", tmp_path / "new"), "--dry-run", "-o", "json")
    assert planned.returncode == 0, planned.stderr
    assert len(Plan.from_dict(json.loads(planned.stdout)["plan"]).to_migrate()) == len(made.volumes)
