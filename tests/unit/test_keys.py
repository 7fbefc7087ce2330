"""Run keys (issue 17, item 9): every owner's run has a key of its own, whatever its name; what a
command finds under a key (a working directory, a record, a Lease) is used only when it is the
run of the owner the command names; an earlier release's run of a StatefulSet, keyed by its bare
name, is still found. Pure logic: a fake cluster holding ConfigMaps and Leases."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kubectl_csi_migrate.errors import ConflictError, KeyClash
from kubectl_csi_migrate.migration import locate, record
from kubectl_csi_migrate.migration.plan import (
    CLAIM,
    DEPLOYMENT,
    REPLICASET,
    STATEFULSET,
    Plan,
    label_value,
    legacy_key,
    object_name,
    run_key,
)
from kubectl_csi_migrate.migration.workdir import WorkDir, default_name

SERVER, CONTEXT, NS = "https://k", "ctx", "ns"
KINDS = (STATEFULSET, DEPLOYMENT, REPLICASET, CLAIM)
NAMES = ("web", "deployment-web", "statefulset-web", "pvc-web", "replicaset-web", "web.v1", "deployment.web", "a-b")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def test_every_owner_has_a_key_of_its_own_whatever_its_name_holds() -> None:
    owners = list(itertools.product(KINDS, NAMES))
    keys = {run_key(kind, name) for kind, name in owners}
    assert len(keys) == len(owners), "two owners share a key"
    assert run_key(STATEFULSET, "deployment-web") != run_key(DEPLOYMENT, "web")
    assert run_key(STATEFULSET, "web") == "statefulset-web"
    # Deployments', ReplicaSets' and claims' keys are the ones earlier releases gave them.
    assert (run_key(DEPLOYMENT, "web"), run_key(REPLICASET, "web"), run_key(CLAIM, "web")) == (
        "deployment-web",
        "replicaset-web",
        "pvc-web",
    )
    assert legacy_key(STATEFULSET, "web") == "web"
    assert all(legacy_key(kind, "web") is None for kind in KINDS if kind != STATEFULSET)


def test_names_made_from_keys_are_valid_and_long_ones_stay_apart() -> None:
    long_a, long_b = "a" * 240 + "-one", "a" * 240 + "-two"
    for key in (run_key(DEPLOYMENT, long_a), run_key(DEPLOYMENT, long_b), run_key(STATEFULSET, "web.v1"), "web"):
        name, label = object_name(key), label_value(key)
        assert len(name) <= 253 and DNS_SUBDOMAIN.match(name), name
        assert len(label) <= 63 and LABEL_VALUE.match(label), label
        assert len(default_name("gke_" + "x" * 100, "n" * 63, key)) <= 255
    assert object_name(run_key(DEPLOYMENT, long_a)) != object_name(run_key(DEPLOYMENT, long_b))
    assert label_value(run_key(DEPLOYMENT, long_a)) != label_value(run_key(DEPLOYMENT, long_b))
    # Short names are as they read, an earlier release's included.
    assert object_name("statefulset-web") == "csi-migrate-statefulset-web"
    assert object_name("web") == "csi-migrate-web"
    assert default_name(CONTEXT, NS, "web") == "csi-migrate-ctx-ns-web"


def plan_of(kind: str, name: str, legacy: bool = False) -> Plan:
    plan = Plan(CONTEXT, SERVER, NS, name, "u", 1, "rolling", "standard-rwo", ("data",), kind=kind)
    if legacy:  # as an earlier release stored it: no key, a StatefulSet's name in `statefulset`
        data = plan.to_dict()
        del data["key"]
        plan = Plan.from_dict(data)
    return plan


def test_a_plan_keeps_its_key_and_an_earlier_release_s_plan_has_the_key_it_was_started_under() -> None:
    new = plan_of(STATEFULSET, "web")
    assert new.key == "statefulset-web" and Plan.from_dict(new.to_dict()).key == "statefulset-web"
    old = {k: v for k, v in new.to_dict().items() if k not in ("key", "name", "kind")}
    assert old["statefulset"] == "web"
    assert Plan.from_dict(old).key == "web"
    assert Plan.from_dict(old).owner == (SERVER, NS, STATEFULSET, "web")
    assert plan_of(DEPLOYMENT, "api", legacy=True).key == "deployment-api"
    assert plan_of(CLAIM, "data", legacy=True).key == "pvc-data"


def record_cm(plan: Plan, name: str | None = None, **run: Any) -> dict[str, Any]:
    data = {"run.json": json.dumps({"plan": plan.to_dict(), "run_id": "r1", **run}), "steps.json": "{}"}
    return {"metadata": {"name": name or object_name(plan.key), "namespace": NS}, "data": data}


class FakeKube:
    """ConfigMaps and Leases by name, read as the commands read them."""

    def __init__(self, *objects: tuple[str, dict[str, Any]]) -> None:
        self.info = SimpleNamespace(server=SERVER, context=CONTEXT, namespace=NS)
        self.objects = {(kind, obj["metadata"]["name"]): obj for kind, obj in objects}
        self.reads: list[tuple[str, str]] = []
        self.sent: list[str] = []

    def get_once(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self.get(kind, name, namespace)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        self.reads.append((kind, name))
        obj = self.objects.get((kind, name))
        return json.loads(json.dumps(obj)) if obj else None

    def request(self, method: str, path: str, query: Any = None, body: Any = None) -> Any:
        self.sent.append(method)
        if method == "POST" and ("Lease", body["metadata"]["name"]) in self.objects:
            raise ConflictError("exists")
        if body and "metadata" in body:
            body["metadata"].update(uid="u", resourceVersion="1")
        return body


def folder(tmp_path: Path, key: str, plan: Plan | None = None, backed_up: bool = True) -> WorkDir:
    workdir = WorkDir(tmp_path / default_name(CONTEXT, NS, key))
    if plan is not None:
        workdir.create(plan, "r1")
        if backed_up:
            workdir.record("backup", "done")
    return workdir


def find(kube: FakeKube, kind: str, name: str, directory: Path | None = None) -> locate.Found:
    return locate.locate(kube, NS, kind, name, str(directory) if directory else None)  # type: ignore[arg-type]


def test_a_statefulset_deployment_web_and_a_deployment_web_each_find_their_own_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sts, deploy = plan_of(STATEFULSET, "deployment-web"), plan_of(DEPLOYMENT, "web")
    folder(tmp_path, sts.key, sts)
    folder(tmp_path, deploy.key, deploy)
    kube = FakeKube(("ConfigMap", record_cm(sts)), ("ConfigMap", record_cm(deploy)))
    mine, theirs = find(kube, STATEFULSET, "deployment-web"), find(kube, DEPLOYMENT, "web")
    assert mine.workdir.path.name == "csi-migrate-ctx-ns-statefulset-deployment-web"
    assert theirs.workdir.path.name == "csi-migrate-ctx-ns-deployment-web"
    assert (mine.record_name, theirs.record_name) == (
        "csi-migrate-statefulset-deployment-web",
        "csi-migrate-deployment-web",
    )
    assert mine.record and record.owner_of(mine.record) == sts.owner
    assert theirs.record and record.owner_of(theirs.record) == deploy.owner


def test_an_earlier_release_s_run_keyed_by_the_bare_name_is_found_only_for_that_statefulset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    legacy = plan_of(STATEFULSET, "deployment-web", legacy=True)
    assert legacy.key == "deployment-web"
    folder(tmp_path, legacy.key, legacy)
    kube = FakeKube(("ConfigMap", record_cm(legacy)))
    found = find(kube, STATEFULSET, "deployment-web")
    assert found.workdir.path.name == "csi-migrate-ctx-ns-deployment-web", "the earlier release's folder"
    assert found.record_name == "csi-migrate-deployment-web" and found.record is not None
    # The same names for Deployment `web`: refused, whether by its default folder or by its record.
    with pytest.raises(KeyClash, match="holds the run of statefulset ns/deployment-web, not of deployment ns/web"):
        find(kube, DEPLOYMENT, "web")
    with pytest.raises(KeyClash, match="configmap/csi-migrate-deployment-web holds the record of the run of stateful"):
        find(kube, DEPLOYMENT, "web", tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()
    # Its folder lost: the record alone is found, and rebuilt into the folder of its new key.
    shutil.rmtree(tmp_path / "csi-migrate-ctx-ns-deployment-web")
    found = find(kube, STATEFULSET, "deployment-web")
    assert found.workdir.path.name == "csi-migrate-ctx-ns-statefulset-deployment-web"
    assert found.record_name == "csi-migrate-deployment-web"
    said: list[str] = []
    assert locate.rebuild(found, said.append, for_rollback=True)
    rebuilt = found.workdir.plan()
    assert rebuilt is not None and rebuilt.key == "deployment-web", "the run keeps its key (its Lease, its record)"
    assert "rebuilt it from configmap/csi-migrate-deployment-web" in said[0]


def test_a_bare_key_holding_another_owner_s_run_is_passed_over_not_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """StatefulSet `deployment-web` looks under `deployment-web` too (an earlier release's key),
    where Deployment `web`'s run is: not its own, so it finds nothing."""
    monkeypatch.chdir(tmp_path)
    deploy = plan_of(DEPLOYMENT, "web")
    folder(tmp_path, deploy.key, deploy)
    kube = FakeKube(("ConfigMap", record_cm(deploy)))
    found = find(kube, STATEFULSET, "deployment-web")
    assert found.workdir.path.name == "csi-migrate-ctx-ns-statefulset-deployment-web"
    assert found.record is None and found.record_name == "csi-migrate-statefulset-deployment-web"
    assert not found.workdir.has_run()
    assert not locate.rebuild(found, print, for_rollback=True)


def test_a_record_under_the_owner_s_own_key_of_another_owner_is_refused(tmp_path: Path) -> None:
    """An earlier release's StatefulSet `statefulset-web` recorded its run where StatefulSet
    `web`'s record now goes: a run of `web` would overwrite it."""
    other = plan_of(STATEFULSET, "statefulset-web", legacy=True)
    kube = FakeKube(("ConfigMap", record_cm(other)))
    with pytest.raises(
        KeyClash, match=re.escape("(`kubectl csi-migrate rollback statefulset-web -n ns`); nothing was changed")
    ):
        find(kube, STATEFULSET, "web", tmp_path / "wd")
    # ...and `statefulset-web` itself still finds it, by the stored kind and name.
    assert find(kube, STATEFULSET, "statefulset-web", tmp_path / "wd2").record_name == "csi-migrate-statefulset-web"


def test_a_working_directory_of_another_kind_is_refused(tmp_path: Path) -> None:
    sts = plan_of(STATEFULSET, "web")
    workdir = folder(tmp_path, "given", sts)
    with pytest.raises(KeyClash, match="holds the run of statefulset ns/web, not of pvc ns/web: choose another"):
        find(FakeKube(), CLAIM, "web", workdir.path)
    assert find(FakeKube(), STATEFULSET, "web", workdir.path).workdir.path == workdir.path


def test_default_working_directories_of_a_fleet_are_the_owners_own(tmp_path: Path) -> None:
    legacy = plan_of(STATEFULSET, "db", legacy=True)
    folder(tmp_path, legacy.key, legacy)
    found = locate.default_workdir(CONTEXT, NS, STATEFULSET, "db", SERVER, tmp_path)
    assert found.path == tmp_path / "csi-migrate-ctx-ns-db"
    assert locate.default_workdir(CONTEXT, NS, STATEFULSET, "web", SERVER, tmp_path).path.name == (
        "csi-migrate-ctx-ns-statefulset-web"
    )
    # Another server's run of that name is not this one's.
    assert locate.default_workdir(CONTEXT, NS, STATEFULSET, "db", "https://other", tmp_path).path.name == (
        "csi-migrate-ctx-ns-statefulset-db"
    )


def test_a_lease_locking_another_owner_is_refused_before_anything_is_sent() -> None:
    from kubectl_csi_migrate.kube.lock import OWNER, Lease

    held = {
        "metadata": {"name": "csi-migrate-deployment-web", "annotations": {OWNER: "StatefulSet/deployment-web"}},
        "spec": {"holderIdentity": "elsewhere/run/1", "leaseDurationSeconds": 60},
    }
    kube = FakeKube(("Lease", held))
    lease = Lease(kube, NS, "csi-migrate-deployment-web", "r2", owner="Deployment/web")  # type: ignore[arg-type]
    with pytest.raises(KeyClash, match="locks the runs of StatefulSet/deployment-web, not of deployment ns/web"):
        lease.acquire("deployment ns/web")
    assert kube.sent == ["POST"], "refused, not waited for or taken over"
    # A free Lease is created naming its owner.
    free = Lease(FakeKube(), NS, "csi-migrate-statefulset-web", "r3", owner="StatefulSet/web")  # type: ignore[arg-type]
    free.acquire("statefulset ns/web")
    free.release()
    assert free._held is not None and free._held["metadata"]["annotations"] == {OWNER: "StatefulSet/web"}


def test_another_owner_s_finished_or_rolled_back_record_is_refused_saying_how_to_free_its_name(tmp_path: Path) -> None:
    other = plan_of(STATEFULSET, "deployment-web", legacy=True)
    for flags, advice in (({"rolled_back": True}, "that run was rolled back: delete its record"),
                          ({"finished": True}, "that run finished")):  # fmt: skip
        kube = FakeKube(("ConfigMap", record_cm(other, **flags)))
        with pytest.raises(KeyClash, match=advice) as refused:
            find(kube, DEPLOYMENT, "web", tmp_path / "wd")
        assert "`kubectl -n ns delete configmap csi-migrate-deployment-web` once it is no longer needed" in str(
            refused.value
        )


def test_status_refuses_a_lease_of_the_run_s_name_that_locks_another_owner(tmp_path: Path) -> None:
    from kubectl_csi_migrate.kube.lock import OWNER
    from kubectl_csi_migrate.migration.status import status_of

    deploy = plan_of(DEPLOYMENT, "web")
    workdir = folder(tmp_path, deploy.key, deploy)
    lease = {"metadata": {"name": "csi-migrate-deployment-web", "annotations": {OWNER: "StatefulSet/deployment-web"}}}
    kube = FakeKube(("Lease", {**lease, "spec": {"holderIdentity": "h/r/1"}}))
    kube.server_date = None  # type: ignore[attr-defined]
    with pytest.raises(KeyClash, match="locks the runs of StatefulSet/deployment-web, not of deployment ns/web"):
        status_of(kube, NS, workdir, None, "csi-migrate-deployment-web")
    lease["metadata"]["annotations"] = {OWNER: "Deployment/web"}
    kube = FakeKube(("Lease", {**lease, "spec": {"holderIdentity": "h/r/1"}}))
    kube.server_date = None  # type: ignore[attr-defined]
    shown = status_of(kube, NS, workdir, None, "csi-migrate-deployment-web")
    assert shown is not None and shown["owner"] == {"kind": DEPLOYMENT, "namespace": NS, "name": "web"}
    assert shown["lease"]["holder"] == "h/r/1"
