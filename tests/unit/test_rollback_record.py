"""Issue 17, item 3: a rollback stopped part-way and started again, from its working directory or
from the record in the cluster alone (the working directory lost and rebuilt from it, however
often), carries on exactly where the one before stopped: every step that may have run and is not
undone yet, the ones the record never showed included (kinds.may_have_run), last first, and no
step past them. Before, once a rollback had recorded an "undone", the next one left out the
steps that may have run: rebuilt from the record, it stopped at a PV the run had created that
still named its claim, with the StatefulSet deleted.

Simulated on fake working directories (steps.jsonl's events as WorkDir.steps reads them) and the
real rebuild from the record (record.py: kept_steps, rebuild): the run and each rollback record
their events and write the record where run.py does (Migration.step, Migration.rollback), and a
kill is the last event recorded (tests/e2e/killer.py kills right after the working directory
records it). The case of the e2e test is also played on real working directories."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubectl_csi_migrate.migration import record
from kubectl_csi_migrate.migration.kinds import KINDS, steps_to_undo
from kubectl_csi_migrate.migration.owners import build_plan, steps_for
from kubectl_csi_migrate.migration.plan import Plan
from kubectl_csi_migrate.migration.runrecord import Run, RunRecord
from kubectl_csi_migrate.migration.status import summarize
from kubectl_csi_migrate.migration.steps import Step
from kubectl_csi_migrate.migration.workdir import WorkDir
from tests.unit.test_logic import snapshot

Obj = dict[str, Any]


def merged(events: list[Obj]) -> dict[str, Obj]:
    """step -> its last event, with the data recorded with it (WorkDir.steps)."""
    result: dict[str, Obj] = {}
    for entry in events:
        result[entry["step"]] = {**result.get(entry["step"], {}), **entry}
    return result


class Folder:
    """A working directory in memory: run.json and the events of steps.jsonl (WorkDir's API,
    as far as the run, the rollback and record.rebuild use it)."""

    plans: dict[tuple[str, str], Obj] = {}  # Plan.to_dict, once per plan: thousands of runs

    def __init__(self) -> None:
        self.run: Obj = {}
        self.events: list[Obj] = []

    def create(
        self, plan: Plan, run_id: str | None = None, options: Obj | None = None, started: float | None = None
    ) -> str:
        stored = self.plans.setdefault((plan.key, plan.strategy), plan.to_dict())
        self.run = {"run_id": run_id or "r1", "plan": stored, "options": options or {}, "finished": False}
        self.run["started"] = started or 1.0
        self.events = []
        return str(self.run["run_id"])

    def record(self, step: str, event: str, **data: Any) -> None:
        self.events.append({"step": step, "event": event, **data})

    def steps(self) -> dict[str, Obj]:
        return merged(self.events)

    def load_run(self) -> Obj:
        return dict(self.run)  # the plan in it is never changed

    def has_run(self) -> bool:
        return bool(self.run)

    def update_run(self, **fields: Any) -> None:
        self.run.update(fields)

    def mark_rolling_back(self) -> None:
        self.update_run(rolling_back=True)

    def mark_rolled_back(self, report: Obj) -> None:
        self.update_run(rolled_back=True)

    def save_backup(self, obj: Obj, overwrite: bool = False) -> None:
        pass

    save_record = WorkDir.save_record  # written from the record as a real folder is


AnyFolder = Any  # Folder, or a real WorkDir


class Killed(Exception):
    pass


class Cluster:
    """The run's record in the cluster, as ClusterRecord.save writes it and record.read reads it
    (of a Folder: its events so far, read when the record is)."""

    def __init__(self) -> None:
        self._saved: Obj | None = None
        self._events: tuple[list[Obj], int] | None = None

    def save(self, wd: AnyFolder) -> None:
        if isinstance(wd, Folder):  # its list of events is only ever appended to
            self._saved, self._events = {"run": wd.load_run()}, (wd.events, len(wd.events))
        else:
            self._saved, self._events = {"run": wd.load_run(), "steps": record.kept_steps(wd.steps())}, None

    @property
    def cm(self) -> RunRecord | None:
        if self._saved is None:
            return None
        if self._events is not None:
            events, count = self._events
            self._saved["steps"], self._events = record.kept_steps(merged(events[:count])), None
        self._saved["steps"] = json.loads(json.dumps(self._saved["steps"]))
        return RunRecord(Run.from_dict(self._saved["run"], "the record"), self._saved["steps"])

    def rebuild(self, wd: AnyFolder | None = None) -> AnyFolder:
        """The working directory lost, then written again from the record (`rollback`)."""
        found = self.cm
        assert found is not None
        wd = wd or Folder()
        record.rebuild(wd, found)
        return wd


def run(wd: AnyFolder, cluster: Cluster, plan: Plan, order: list[Step], kill: tuple[int, str]) -> set[str]:
    """A run taking the steps in `order`, killed right after the kill[0]-th records kill[1]
    ("start" or "done"); the steps that may have changed something."""
    wd.create(plan, "r1")
    index = kill[0]
    for i, step in enumerate(order[: index + 1]):
        wd.record(step.id, "start")
        if (i, "start") == kill:
            break
        wd.record(step.id, "done", **({"fcd_id": f"fcd-{step.pv}"} if step.kind == "fcd" else {}))
        if (i, "done") == kill:
            break
        if KINDS[step.kind].recorded_after:
            cluster.save(wd)
    return {s.id for s in order[: index + 1]}


def rollback(wd: AnyFolder, cluster: Cluster, plan: Plan, undone: set[str], kill: tuple[int, str] | None) -> list[str]:
    """Migration.rollback: killed right after its kill[0]-th undo records kill[1] ("undo-start"
    or "undone"), or to the end. `undone`: the steps whose undo finished, updated. Returns the
    steps it set out to undo, in order."""
    todo = [s.id for s in steps_to_undo(plan, wd.steps())]
    wd.mark_rolling_back()
    cluster.save(wd)
    for n, step in enumerate(todo):
        wd.record(step, "undo-start")
        if (n, "undo-start") == kill:
            raise Killed(todo)
        undone.add(step)
        wd.record(step, "undone")
        if (n, "undone") == kill:
            raise Killed(todo)
        cluster.save(wd)
    wd.mark_rolled_back({})
    cluster.save(wd)
    return todo


def shown_undone(wd: AnyFolder) -> set[str]:
    return {step for step, entry in wd.steps().items() if entry.get("event") == "undone"}


def plans() -> Iterator[Any]:
    """(plan, the order its run takes the steps): rolling in the plan's order; offline in the
    plan's order and with its volumes moving side by side, one step of each in turn."""
    for strategy in ("rolling", "offline"):
        plan = build_plan(snapshot(replicas=2), "ctx", "https://k", "standard-rwo", None, strategy)
        steps = steps_for(plan)
        yield pytest.param(plan, steps, id=f"{strategy}-in-order")
        if strategy == "offline":
            chains: dict[str, list[Step]] = {}
            for s in steps:
                if s.pv and s.ordinal is not None:
                    chains.setdefault(s.pv, []).append(s)
            moving = [s for chain in chains.values() for s in chain]
            head = steps[: steps.index(moving[0])]
            tail = [s for s in steps if s not in head and s not in moving]
            turns = [
                chain[i] for i in range(max(map(len, chains.values()))) for chain in chains.values() if i < len(chain)
            ]
            yield pytest.param(plan, head + turns + tail, id=f"{strategy}-side-by-side")


def check(
    plan: Plan, todo: list[str], first: list[str], wd: AnyFolder, ran: set[str], undone: set[str], exact: bool = True
) -> None:
    """A rollback's steps (`todo`), against the first rollback's (`first`, not stopped): last
    first; each a step of `first` not shown undone, and every one of those when `exact` (else
    the record in the cluster knows less than the folder the first read: it may leave out a step
    the folder showed never started); every step that may have run and is not undone."""
    order = [s.id for s in reversed(steps_for(plan))]
    assert todo == [s for s in order if s in todo], "last first"
    shown = shown_undone(wd)
    assert shown == set(first[: len(shown)]), "what is undone is the tail of the run"
    left = [s for s in first if s not in shown]
    assert todo == (left if exact else [s for s in left if s in todo]), "carries on where the rollback before stopped"
    assert ran - undone <= set(todo), f"left out steps that may have run: {sorted(ran - undone - set(todo))}"


PLANS = list(plans())


@pytest.mark.parametrize(("plan", "order"), PLANS)
def test_a_rollback_killed_at_any_undo_then_started_again_from_the_record_or_its_folder_carries_on(
    plan: Plan, order: list[Step]
) -> None:
    """A run killed after each step (started or done), its working directory lost (or not); a
    rollback killed after each undo (started or done); then another rollback, from the folder
    the first left, or from the record alone (the folder lost again)."""
    cases = 0
    for index in range(1, len(order)):
        for event in ("start", "done"):
            for first_from_record in (True, False):

                def killed_run(kill: tuple[int, str], from_record: bool) -> tuple[Folder, Cluster, set[str]]:
                    folder, cluster = Folder(), Cluster()
                    ran = run(folder, cluster, plan, order, kill)
                    return (cluster.rebuild() if from_record else folder), cluster, ran

                wd, _, ran = killed_run((index, event), first_from_record)
                first = rollback(wd, Cluster(), plan, set(), None)  # the one rollback, not stopped
                assert ran <= set(first), f"a rollback leaves out steps that may have run: {sorted(ran - set(first))}"
                for n in range(len(first)):
                    for undo_event, again_from_record in (("undo-start", False), ("undone", False), ("undone", True)):
                        wd, cluster, _ = killed_run((index, event), first_from_record)
                        undone: set[str] = set()
                        with pytest.raises(Killed):
                            rollback(wd, cluster, plan, undone, (n, undo_event))
                        if again_from_record:  # the record alone: the same, killed after undo-start
                            wd = cluster.rebuild()
                        todo = [s.id for s in steps_to_undo(plan, wd.steps())]
                        # The first from its folder, the next from the record: it knows less.
                        exact = first_from_record or not again_from_record
                        check(plan, todo, first, wd, ran, undone, exact)
                        assert rollback(wd, cluster, plan, undone, None) == todo
                        assert ran <= undone and wd.load_run().get("rolled_back")
                        cases += 1
    assert cases > 1000


@pytest.mark.parametrize(("plan", "order"), PLANS)
def test_any_number_of_rollbacks_each_killed_after_two_undos_end_with_every_step_undone(
    plan: Plan, order: list[Step]
) -> None:
    """A run killed after each step, its folder lost; then rollback after rollback, each killed
    right after its second undo, started from the record alone (the folder lost each time) or
    from the folder the one before left, in turns: each carries on where the one before stopped,
    and the last ends with every step that may have run undone, the run rolled back."""
    for index in range(1, len(order)):
        for turns in ((True,), (True, False), (False, True), (False, False, True)):
            cluster = Cluster()
            ran = run(Folder(), cluster, plan, order, (index, "done"))
            first = rollback(cluster.rebuild(), Cluster(), plan, set(), None)
            wd = cluster.rebuild()
            undone: set[str] = set()
            for attempt in range(len(first) + 1):
                if attempt and turns[attempt % len(turns)]:
                    wd = cluster.rebuild()  # the folder lost again
                todo = [s.id for s in steps_to_undo(plan, wd.steps())]
                check(plan, todo, first, wd, ran, undone)
                try:
                    rollback(wd, cluster, plan, undone, (1, "undone"))
                except Killed:
                    continue
                break
            else:
                pytest.fail("the rollbacks never ended")
            assert ran <= undone and wd.load_run().get("rolled_back"), index
            assert cluster.cm is not None and cluster.cm.run.rolled_back


def test_the_e2e_case_on_real_working_directories(tmp_path: Path) -> None:
    """e2e: test_rollback::test_a_rollback_from_the_record_alone_killed_then_run_again_from_the_record_
    restores_the_in_tree_state:
    3 replicas, rolling, killed right after the second replica's create-pv; the folder lost; the
    rollback killed right after its third undo; the folder lost again. The next rollback deletes
    that CSI PV (undoes create-pv) before it creates the in-tree one again. Before, it left out
    the steps the record never showed and stopped at `delete-pv` ("refusing to create a second
    PV for the same disk"), the StatefulSet still deleted."""
    plan = build_plan(snapshot(replicas=3), "ctx", "https://k", "standard-rwo", None, "rolling")
    steps = steps_for(plan)
    ids = [s.id for s in steps]
    create_pv = [s for s in steps if s.kind == "create-pv"][1]
    fcds = [i for i, s in enumerate(steps) if s.kind == "fcd"]
    cluster = Cluster()
    run(WorkDir(tmp_path / "run"), cluster, plan, steps, (steps.index(create_pv), "done"))
    assert cluster.cm is not None and create_pv.id not in cluster.cm.steps, "the record lags"
    first = [s.id for s in steps_to_undo(plan, cluster.rebuild(WorkDir(tmp_path / "a")).steps())]
    assert first == ids[: fcds[2] + 1][::-1], "up to the next replica's FCD may have run"
    with pytest.raises(Killed):
        rollback(cluster.rebuild(WorkDir(tmp_path / "b")), cluster, plan, set(), (2, "undone"))
    assert cluster.cm.run.rolling_back and create_pv.id not in cluster.cm.steps
    assert [s for s, e in cluster.cm.steps.items() if e["event"] == "undone"] == first[:2]
    # `status` from the record alone: the steps that may have run are still to undo.
    shown = summarize(cluster.cm.run.to_dict(), cluster.cm.steps, "configmap/x in the cluster", None, None, "/w")
    assert shown["phase"] == "rollback stopped" and create_pv.id in shown["mayHaveRun"]
    assert [r["state"] for r in shown["replicas"]] == ["to roll back", "to roll back", "rolling back"]
    again = [s.id for s in steps_to_undo(plan, cluster.rebuild(WorkDir(tmp_path / "c")).steps())]
    assert again == first[2:], "the third undo's `undone` was recorded, not yet written to the cluster"
    assert again.index(create_pv.id) < again.index(f"delete-pv/{create_pv.pv}")


def test_the_record_keeps_the_steps_done_and_undone_with_what_they_recorded(tmp_path: Path) -> None:
    wd = WorkDir(tmp_path / "w")
    wd.create(build_plan(snapshot(), "ctx", "https://k", "standard-rwo", None, "rolling"))
    for step, event in (("a", "start"), ("a", "done"), ("b", "start"), ("c", "done"), ("c", "undo-start")):
        wd.record(step, event, **({"fcd_id": "x"} if step == "a" else {}))
    wd.record("d", "undone")
    assert record.kept_steps(wd.steps()) == {"a": {"event": "done", "fcd_id": "x"}, "d": {"event": "undone"}}
