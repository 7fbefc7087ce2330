"""Issue 17, item 8: a working directory older than the run's record in the cluster is not
trusted. The newer of the two wins, told apart by the run's id and its steps' events
(record.ahead): the same run carried on or rolled back from elsewhere brings the folder up to the
record (record.catch_up, at the command's start); a later run in the record refuses the folder
(OutOfDate); and once the Lease is held, a folder the record has overtaken since is refused
(record.check_current). On real working directories; the record as ClusterRecord writes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kubectl_csi_migrate.errors import OutOfDate
from kubectl_csi_migrate.migration import record
from kubectl_csi_migrate.migration.kinds import KINDS, steps_to_undo
from kubectl_csi_migrate.migration.owners import build_plan, steps_for
from kubectl_csi_migrate.migration.plan import Plan
from kubectl_csi_migrate.migration.steps import Step
from kubectl_csi_migrate.migration.workdir import WorkDir
from tests.unit.test_logic import snapshot
from tests.unit.test_rollback_record import Cluster, rollback, run


def _stopped_run(tmp_path: Path) -> tuple[Plan, list[Step], Cluster, WorkDir, Step]:
    """A Deployment-like in-order run stopped right after its first delete-pvc (the record written
    at the last recorded_after step before it), and a copy of its folder kept aside (`old`)."""
    plan = build_plan(snapshot(replicas=2), "ctx", "https://k", "standard-rwo", None, "rolling")
    steps = steps_for(plan)
    target = next(s for s in steps if s.kind == "delete-pvc")
    cluster = Cluster()
    run(WorkDir(tmp_path / "run"), cluster, plan, steps, (steps.index(target), "done"))
    shutil.copytree(tmp_path / "run", tmp_path / "old")
    return plan, steps, cluster, WorkDir(tmp_path / "old"), target


def test_a_folder_behind_a_rollback_done_elsewhere_takes_it_and_is_refused_as_rolled_back(tmp_path: Path) -> None:
    """e2e: test_interference::test_item_8_a_working_directory_older_than_the_record_is_not_trusted."""
    plan, _steps, cluster, old, target = _stopped_run(tmp_path)
    assert steps_to_undo(plan, old.steps()), "the old folder has steps to undo"
    undone: set[str] = set()
    rollback(cluster.rebuild(WorkDir(tmp_path / "elsewhere")), cluster, plan, undone, None)
    found = cluster.cm
    assert found is not None and found.run.rolled_back

    with pytest.raises(OutOfDate, match=r"further on than .*old.*rolled back"):
        record.check_current(old, found, "csi-migrate-x")
    taken = record.catch_up(old, found, "csi-migrate-x")
    assert taken is not None and "undone" in taken and "rolled back" in taken
    assert old.load_run()["rolled_back"] and old.load_run()["rolling_back"]
    assert {s for s, e in old.steps().items() if e["event"] == "undone"} == undone
    assert steps_to_undo(plan, old.steps()) == [], "nothing is undone twice"
    assert "was rolled back" in (old.problem(plan.owner) or ""), "`sts`/`deploy` refuse the folder"
    record.check_current(old, found, "csi-migrate-x")  # up to date now
    assert record.catch_up(old, found, "csi-migrate-x") is None, "taken once"
    assert target.id in undone


def test_a_folder_behind_the_same_run_carried_on_elsewhere_takes_the_steps_done_there(tmp_path: Path) -> None:
    """The run resumed from the record elsewhere and stopped again further on: the old folder
    takes each step the record shows done (with what it recorded: the FCD ids), so a resume from
    it does not do them again; the steps since the record was last written it does again, as a
    resume from the record alone does (each finds its work done)."""
    plan, steps, cluster, old, target = _stopped_run(tmp_path)
    elsewhere = cluster.rebuild(WorkDir(tmp_path / "elsewhere"))
    further = steps[steps.index(target) + 1 :]
    stop = next(i for i, s in enumerate(further) if s.kind == "create-pvc")
    for step in further[: stop + 1]:
        elsewhere.record(step.id, "start")
        elsewhere.record(step.id, "done", **({"fcd_id": f"fcd-{step.pv}"} if step.kind == "fcd" else {}))
        if KINDS[step.kind].recorded_after:
            cluster.save(elsewhere)
    found = cluster.cm
    assert found is not None

    taken = record.catch_up(old, found, "csi-migrate-x")
    assert taken is not None and taken.endswith("done")
    done = {s for s, e in old.steps().items() if e["event"] == "done"}
    assert done >= {s for s, e in found.steps.items() if e["event"] == "done"}
    fcd = next(s for s in further if s.kind == "fcd")
    assert old.steps()[fcd.id]["fcd_id"] == f"fcd-{fcd.pv}"
    assert old.problem(plan.owner) is None, "the run resumes from the folder"
    assert not old.load_run().get("rolling_back")


def test_a_later_run_in_the_record_refuses_the_folder_and_an_earlier_one_does_not(tmp_path: Path) -> None:
    """The old folder's run was rolled back elsewhere and a new run began (the record is the new
    run's): resuming or rolling back from the old folder would act over the new run's objects and
    write its record over the new run's: refused. A record of an earlier run than the folder's
    (written over by an old command before this release) does not refuse the folder's run."""
    plan, _steps, cluster, old, _ = _stopped_run(tmp_path)
    later = Cluster()
    newer = WorkDir(tmp_path / "new")
    newer.create(plan, "r2", started=old.load_run()["started"] + 60)
    newer.record("backup", "done")
    later.save(newer)
    found = later.cm
    assert found is not None
    with pytest.raises(OutOfDate, match=r"records a later run .*r2.*unfinished.*never saw"):
        record.catch_up(old, found, "csi-migrate-x")
    with pytest.raises(OutOfDate):
        record.check_current(old, found, "csi-migrate-x")

    assert record.ahead(newer, cluster.cm or {}, "csi-migrate-x") == ([], {}), "the folder's run is the later one"


def test_a_folder_rebuilt_from_the_record_keeps_when_its_run_started(tmp_path: Path) -> None:
    _plan, _, cluster, old, _ = _stopped_run(tmp_path)
    rebuilt = cluster.rebuild(WorkDir(tmp_path / "rebuilt"))
    assert rebuilt.load_run()["started"] == old.load_run()["started"]
    assert rebuilt.load_run()["run_id"] == old.load_run()["run_id"]
