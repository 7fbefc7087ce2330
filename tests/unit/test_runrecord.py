"""A run as one typed, versioned value (migration/runrecord.py) kept by two stores, the working
directory and the record in the cluster: what one store holds, the other holds the same once
written from it; a record of the releases before the format field is read; one of a later
release is refused before anything changes, from either store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubectl_csi_migrate.errors import KeyClash, RecordTooNew
from kubectl_csi_migrate.migration import locate, record
from kubectl_csi_migrate.migration.plan import STATEFULSET
from kubectl_csi_migrate.migration.record import ClusterRecord
from kubectl_csi_migrate.migration.runrecord import FORMAT, Run, RunRecord
from kubectl_csi_migrate.migration.workdir import WorkDir
from tests.unit.test_keys import NS, FakeKube, find, folder, plan_of, record_cm


def test_a_folder_written_from_a_record_holds_the_same_run(tmp_path: Path) -> None:
    plan = plan_of(STATEFULSET, "web")
    first = WorkDir(tmp_path / "a")
    first.create(plan, "r1", {"keep_retain": True}, started=12.5)
    first.save_backup({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"}})
    first.record("backup", "done")
    first.record("retain/pv-1", "done", policy="Delete")
    first.record("retain/pv-1", "undone")
    first.record("detach/pv-1", "start")
    first.mark_rolling_back()
    kept = first.load_record()
    assert kept is not None and kept.run.format == FORMAT and kept.run.keep_retain and kept.run.rolling_back

    second = WorkDir(tmp_path / "b")
    second.save_record(kept)
    again = second.load_record()
    assert again is not None
    assert again.run == kept.run and again.backups == kept.backups
    assert {s: e["event"] for s, e in again.steps.items()} == {
        "backup": "done",
        "retain/pv-1": "undone",
        "detach/pv-1": "start",
    }
    assert again.steps["retain/pv-1"]["policy"] == "Delete"
    assert json.loads(second.run_file.read_text())["format"] == FORMAT


def test_a_record_of_an_earlier_release_has_format_1_and_is_read_the_same() -> None:
    plan = plan_of(STATEFULSET, "web", legacy=True)
    stored = {"run_id": "r1", "started": 3, "plan": plan.to_dict(), "finished": True}
    run = Run.from_dict(stored, "run.json")
    assert run.format == 1 and run.plan == plan and run.finished and run.state == "finished"
    assert run.owner == plan.owner and run.to_dict()["format"] == FORMAT


def test_a_record_of_a_later_release_is_refused_from_either_store_with_nothing_changed(tmp_path: Path) -> None:
    plan = plan_of(STATEFULSET, "web")
    kube = FakeKube(("ConfigMap", record_cm(plan, format=FORMAT + 1)))
    with pytest.raises(RecordTooNew, match=r"configmap/csi-migrate-statefulset-web holds a run recorded by a later"):
        find(kube, STATEFULSET, "web", tmp_path / "new")
    assert not (tmp_path / "new").exists()
    assert issubclass(RecordTooNew, KeyClash), "one error line, as another owner's run is"

    workdir = folder(tmp_path, plan.key, plan)
    data = json.loads(workdir.run_file.read_text())
    workdir.run_file.write_text(json.dumps({**data, "format": FORMAT + 1}))
    before = workdir.run_file.read_text()
    with pytest.raises(RecordTooNew, match=r"run.json holds a run recorded by a later release .* format 3"):
        locate.locate(FakeKube(), NS, STATEFULSET, "web", str(workdir.path))  # type: ignore[arg-type]
    assert workdir.run_file.read_text() == before


def test_a_configmap_without_a_run_is_no_record() -> None:
    assert record.parse({"metadata": {"name": "x"}, "data": {"run.json": "{}"}}) is None
    found = record.parse(record_cm(plan_of(STATEFULSET, "web")))
    assert isinstance(found, RunRecord) and found.run.run_id == "r1" and found.steps == {}


class ConfigMaps:
    """ConfigMaps kept in memory, as ClusterRecord reads and writes them."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        found = self.objects.get(name)
        return json.loads(json.dumps(found)) if found else None

    get_once = get

    def create(self, obj: dict[str, Any]) -> None:
        self.objects[obj["metadata"]["name"]] = obj

    def patch(self, kind: str, name: str, body: dict[str, Any], namespace: str | None = None) -> None:
        for field in ("data", "binaryData"):
            self.objects[name].setdefault(field, {}).update(body.get(field) or {})


def test_the_record_in_the_cluster_written_from_a_folder_reads_back_as_the_folder_s_run(tmp_path: Path) -> None:
    plan = plan_of(STATEFULSET, "web")
    workdir = WorkDir(tmp_path / "a")
    workdir.create(plan, "r1")
    workdir.save_backup({"kind": "StatefulSet", "metadata": {"name": "web", "managedFields": [{"x": 1}]}})
    workdir.record("backup", "done")
    workdir.record("delete-statefulset", "start")  # not kept by the record: it lags (kinds.may_have_run)
    kept = workdir.load_record()
    assert kept is not None
    store = ClusterRecord(ConfigMaps(), plan)  # type: ignore[arg-type]
    assert store.load_record() is None
    store.save_record(kept)
    found = store.load_record()
    assert found is not None and found.run == kept.run
    assert found.steps == {"backup": {"event": "done"}}
    assert found.backups == [{"kind": "StatefulSet", "metadata": {"name": "web"}}], "without managedFields"
    # The run's own incremental write from the folder gives the same record.
    store.save(workdir)
    again = store.load_record()
    assert (
        again is not None and again.run == found.run and again.steps == found.steps and again.backups == found.backups
    )


class Listed(FakeKube):
    """FakeKube that also lists its ConfigMaps by label (as `status` and `--all` do)."""

    server_date = None

    def items(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[Any]:
        return [json.loads(json.dumps(o)) for (k, _), o in self.objects.items() if k == kind]


def test_a_later_release_s_record_is_refused_even_without_a_plan_and_never_written_over(tmp_path: Path) -> None:
    later = {"metadata": {"name": "csi-migrate-statefulset-web"}, "data": {"run.json": json.dumps({"format": 3})}}
    with pytest.raises(RecordTooNew):
        record.parse(later)
    with pytest.raises(RecordTooNew):
        find(FakeKube(("ConfigMap", later)), STATEFULSET, "web", tmp_path / "new")


def test_status_of_every_run_and_all_leave_a_later_release_s_run_to_its_own_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubectl_csi_migrate.migration.status import every_status

    monkeypatch.chdir(tmp_path)
    web, api = plan_of(STATEFULSET, "web"), plan_of(STATEFULSET, "api")
    kube = Listed(("ConfigMap", record_cm(web)), ("ConfigMap", record_cm(api, format=FORMAT + 1)))
    statuses, warnings = every_status(kube, NS)
    assert [s["owner"]["name"] for s in statuses] == ["web"]
    assert len(warnings) == 1 and "configmap/csi-migrate-statefulset-api holds a run recorded by a later" in warnings[0]
    # `--all` takes both owners; api's own command then refuses its record, one owner of the many.
    assert sorted(record.unfinished(kube, NS)) == sorted([api.owner, web.owner])  # type: ignore[arg-type]
