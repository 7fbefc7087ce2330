"""Issue 17, items 4 and 7: before every step of a run, the owner as the run left it. A
StatefulSet put back by someone else stops the run at the next step, naming any claim its
controller made anew in a replica's window (claim deleted, not yet created again) and how to
recover; a Deployment scaled up while the run keeps it at 0 stops it too, and the same command
then scales it to 0 again. A scale to 0 waits on the owner's own pods only. On Migration.step
with a fake API (the e2e tests in test_interference drive the real sequence)."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kubectl_csi_migrate.errors import PermanentError
from kubectl_csi_migrate.kube.predicates import writer_of
from kubectl_csi_migrate.migration import kinds, workload
from kubectl_csi_migrate.migration.owners import build_plan, steps_for
from kubectl_csi_migrate.migration.plan import DEPLOYMENT, MIGRATE, Plan, VolumePlan
from kubectl_csi_migrate.migration.run import Migration
from kubectl_csi_migrate.migration.steps import StepKind
from kubectl_csi_migrate.migration.workdir import WorkDir
from tests.unit.test_logic import snapshot

Obj = dict[str, Any]


class FakeKube:
    def __init__(self, *objs: Obj) -> None:
        self.objs = {(o["kind"], o["metadata"]["name"]): o for o in objs}
        self.gets: list[tuple[str, str]] = []

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        self.gets.append((kind, name))
        return copy.deepcopy(self.objs.get((kind, name)))

    def items(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        return [copy.deepcopy(o) for (k, _), o in self.objs.items() if k == kind]

    def cache(self, kind: str, namespace: str | None = None) -> Any:
        return SimpleNamespace(items=lambda: self.items(kind), stop=lambda: None)


class BehindKube(FakeKube):
    """The run's caches a moment behind the API server: they have not seen the pods yet."""

    def cache(self, kind: str, namespace: str | None = None) -> Any:
        return SimpleNamespace(items=lambda: [] if kind == "Pod" else self.items(kind), stop=lambda: None)


def managed(manager: str, time: str, fields: Obj) -> Obj:
    return {"manager": manager, "time": time, "fieldsV1": fields}


def statefulset(uid: str, *managers: Obj) -> Obj:
    return {"kind": "StatefulSet", "metadata": {"name": "web", "uid": uid, "managedFields": list(managers)}, "spec": {}}


def migration(tmp_path: Path, kube: FakeKube, plan: Plan, done: list[str]) -> Migration:
    wd = WorkDir(tmp_path / "run")
    wd.create(plan)
    m = Migration(kube, None, plan, wd, lambda _line: None)  # type: ignore[arg-type]
    for step in done:
        wd.record(step, "done")
        m.done[step] = {"step": step, "event": "done"}
    return m


def test_writer_of_names_the_latest_manager_of_a_field() -> None:
    obj = {
        "metadata": {
            "managedFields": [
                managed("kubectl-client-side-apply", "2026-01-01T00:00:00Z", {"f:spec": {"f:replicas": {}}}),
                managed("argocd-controller", "2026-01-02T00:00:00Z", {"f:spec": {"f:replicas": {}}}),
                managed("kube-controller-manager", "2026-01-03T00:00:00Z", {"f:status": {}}),
            ]
        }
    }
    assert writer_of(obj, ("f:spec", "f:replicas")) == "argocd-controller"
    assert writer_of(obj) == "kube-controller-manager"
    assert writer_of({"metadata": {}}) is None


@pytest.mark.parametrize("kube_class", [FakeKube, BehindKube], ids=["current", "caches-behind"])
def test_a_statefulset_put_back_in_a_replicas_window_stops_the_next_step_naming_the_new_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube_class: type[FakeKube]
) -> None:
    """caches-behind: the pod made a moment ago is not in the run's pod cache yet; the message
    still names it (suite run 6: it did not, the pod cache's watch having just resumed)."""
    plan = build_plan(snapshot(replicas=2), "ctx", "https://k", "standard-rwo", None, "rolling")
    steps = steps_for(plan)
    delete_pvc = next(s for s in steps if s.kind == "delete-pvc")
    before = [s.id for s in steps[: steps.index(delete_pvc) + 1]]
    foreign = statefulset(
        "u2",
        managed("argocd-controller", "2026-01-02T00:00:00Z", {"f:spec": {}}),
        # its controller's status write comes after (CI of stop 26 named kube-controller-manager)
        managed("kube-controller-manager", "2026-01-02T00:00:01Z", {"f:status": {}}),
    )
    claim = {"kind": "PersistentVolumeClaim", "metadata": {"name": delete_pvc.target.split("/")[1]}}
    claim["spec"] = {"volumeName": "pvc-new"}
    pod = {
        "kind": "Pod",
        "metadata": {"name": "web-1", "ownerReferences": [{"uid": "u2", "controller": True}]},
        "spec": {"volumes": [{"persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}]},
    }
    m = migration(tmp_path, kube_class(foreign, claim, pod), plan, before)
    acted: list[str] = []
    kind = kinds.KINDS[StepKind.DELETE_PV]
    monkeypatch.setitem(kinds.KINDS, StepKind.DELETE_PV, replace(kind, do=lambda _m, s: acted.append(s.id)))
    nxt = steps[steps.index(delete_pvc) + 1]
    with pytest.raises(PermanentError) as stopped:
        m.step(nxt)
    message = str(stopped.value)
    assert "created again by someone else" in message and "argocd-controller" in message
    assert f"persistentvolumeclaim {claim['metadata']['name']} is one its controller made anew" in message
    assert "persistentvolume/pvc-new, a new empty volume" in message and "mounted by pod web-1" in message
    volume = next(v for v in plan.to_migrate() if v.pvc == claim["metadata"]["name"])
    assert f"safe on {volume.vmdk}" in message
    assert "delete statefulset web --cascade=orphan" in message
    assert f"kubectl -n ns delete pod web-1`, `kubectl -n ns delete pvc {volume.pvc}`" in message
    assert acted == [] and nxt.id not in m.workdir.steps(), "stopped before the step started"


def test_the_statefulset_the_run_created_or_its_own_do_not_stop_it(tmp_path: Path) -> None:
    plan = build_plan(snapshot(replicas=1), "ctx", "https://k", "standard-rwo", None, "rolling")
    ours = statefulset("u3")
    ours["metadata"]["annotations"] = {workload.RECREATED_FROM: plan.uid}
    for live in (ours, statefulset(plan.uid)):
        kube = FakeKube(live)
        m = migration(tmp_path / live["metadata"]["uid"], kube, plan, ["delete-statefulset"])
        m._stop_if_changed_elsewhere(steps_for(plan)[-1])
        assert kube.gets == [("StatefulSet", "web")]


def deployment(replicas: int) -> Obj:
    fields = {"f:spec": {"f:replicas": {}}}
    return {
        "kind": "Deployment",
        "metadata": {
            "name": "api",
            "uid": "d1",
            "managedFields": [managed("hpa-controller", "2026-01-02T00:00:00Z", fields)],
        },
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "api"}}},
    }


def deploy_plan() -> Plan:
    volume = VolumePlan("data", 0, "api-data", "pv-api-data", MIGRATE, "[ds] kubevols/a.vmdk")
    return Plan(
        "ctx", "https://k", "ns", "api", "d1", 1, "offline", "standard-rwo", ("data",), (volume,), kind=DEPLOYMENT
    )


def test_a_deployment_scaled_up_while_at_zero_stops_the_run_and_the_same_command_scales_it_down_again(
    tmp_path: Path,
) -> None:
    plan = deploy_plan()
    steps = steps_for(plan)
    ids = [s.id for s in steps]
    detach = next(s for s in steps if s.kind == "detach")
    kube = FakeKube(deployment(2))
    m = migration(tmp_path, kube, plan, ids[: ids.index(detach.id)])
    with pytest.raises(PermanentError, match=r"was scaled to 2 by hpa-controller while the run kept it at 0"):
        m.step(detach)
    assert detach.id not in m.workdir.steps()

    resumed = migration(tmp_path / "again", kube, plan, ids[: ids.index(detach.id)])
    resumed._scale_to_zero_again()
    assert "scale-to-zero" not in resumed.done, "the resume scales it to 0 again"

    kube.objs[("Deployment", "api")] = deployment(0)
    m._stop_if_changed_elsewhere(detach)  # at 0: goes on
    scale_back = next(s for s in steps if s.kind == "scale-back")
    kube.objs[("Deployment", "api")] = deployment(2)
    m._stop_if_changed_elsewhere(scale_back)  # its own scale back is not checked
    started = migration(tmp_path / "back", kube, plan, ids[: ids.index(scale_back.id)])
    started.workdir.record("scale-back", "start")
    started._scale_to_zero_again()
    assert "scale-to-zero" in started.done, "scaled back by this run: not scaled to 0 again"


def test_a_scale_to_zero_waits_on_the_owners_own_pods_only() -> None:
    live = deployment(0)

    def pod(name: str, rs: str, template_hash: str) -> Obj:
        labels = {"app": "api", "pod-template-hash": template_hash}
        refs = [{"kind": "ReplicaSet", "name": rs, "controller": True}]
        return {"metadata": {"name": name, "labels": labels, "ownerReferences": refs}}

    pods = {
        "api-7d-x": pod("api-7d-x", "api-7d", "7d"),
        "other-9f-y": pod("other-9f-y", "other-9f", "9f"),  # another Deployment, same labels
        "loose": {"metadata": {"name": "loose", "labels": {"app": "api"}}},
    }
    assert [o["metadata"]["name"] for o in workload._pods_of(live)(pods)] == ["api-7d-x"]
    rs = {"kind": "ReplicaSet", "metadata": {"name": "solo", "uid": "r1"}, "spec": {"selector": {}}}
    mine = {"metadata": {"name": "solo-a", "ownerReferences": [{"uid": "r1", "controller": True}]}}
    theirs = {"metadata": {"name": "x", "ownerReferences": [{"uid": "r2", "controller": True}]}}
    assert [o["metadata"]["name"] for o in workload._pods_of(rs)({"a": mine, "b": theirs})] == ["solo-a"]


def test_a_rollback_without_the_runs_fcd_id_still_finds_a_csi_pv_naming_the_disk(tmp_path: Path) -> None:
    """Issue 17, item 10: undoing `delete-pv` where the record never showed the `fcd` step (a
    rollback from the record alone) looks for CSI PVs by the FCD id the CSI driver recorded for
    the disk (its CnsVSphereVolumeMigration, in the backup), not by no id at all: a CSI PV of
    another name on that disk refuses the second PV."""
    from kubectl_csi_migrate.migration import volumes

    plan = build_plan(snapshot(replicas=1), "ctx", "https://k", "standard-rwo", None, "rolling")
    (volume,) = plan.to_migrate()
    wd = WorkDir(tmp_path / "run")
    wd.create(plan)
    in_tree = {"kind": "PersistentVolume", "metadata": {"name": volume.pv, "uid": "old"}, "spec": {}}
    in_tree["spec"]["vsphereVolume"] = {"volumePath": volume.vmdk}
    wd.save_backup(in_tree)
    wd.save_backup(
        {
            "kind": "CnsVSphereVolumeMigration",
            "metadata": {"name": "fcd-1234"},
            "spec": {"volumepath": volume.vmdk, "volumeid": "fcd-1234"},
        }
    )
    copy_pv = {"kind": "PersistentVolume", "metadata": {"name": "copied", "uid": "c"}, "spec": {}}
    copy_pv["spec"]["csi"] = {"driver": "csi.vsphere.vmware.com", "volumeHandle": "fcd-1234"}
    kube = FakeKube(copy_pv)
    created: list[Obj] = []
    kube.create = created.append  # type: ignore[attr-defined]
    m = SimpleNamespace(
        plan=plan,
        kube=kube,
        workdir=wd,
        done={},
        pvs=kube.cache("PersistentVolume"),
        volume=lambda _step: volume,
        say=lambda _line: None,
    )
    step = next(s for s in steps_for(plan) if s.kind == "delete-pv")
    with pytest.raises(PermanentError, match=r"persistentvolume copied still refers to .*second PV for the same disk"):
        volumes.undo_delete_pv(m, step)  # type: ignore[arg-type]
    assert created == []
