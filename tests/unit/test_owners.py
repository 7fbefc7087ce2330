"""Issue 19, item 3: owners as types. Each kind of owner gathers its objects by one path, whether
asked for by name or found by the survey; is named by its kind (key, command, kubectl reference,
the argument `status` and `rollback` take); and names the steps that stop and start it."""

from __future__ import annotations

from typing import Any

import pytest

from kubectl_csi_migrate.errors import NotFoundError
from kubectl_csi_migrate.migration import owners
from kubectl_csi_migrate.migration.plan import OwnerKind, Strategy, parse_ref
from kubectl_csi_migrate.migration.steps import StepKind
from tests.unit.fakes import FakeKube

Obj = dict[str, Any]


def pv(name: str, path: str) -> Obj:
    return {
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {"vsphereVolume": {"volumePath": path}, "persistentVolumeReclaimPolicy": "Delete"},
    }


def claim(name: str, volume: str) -> Obj:
    return {"kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": {"volumeName": volume}}


def pod(name: str, labels: Obj, claims: list[str], controller: Obj | None = None) -> Obj:
    meta: Obj = {"name": name, "labels": labels}
    if controller:
        meta["ownerReferences"] = [{**controller, "controller": True}]
    volumes = [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)]
    return {"kind": "Pod", "metadata": meta, "spec": {"volumes": volumes}}


def template(labels: Obj, claims: list[str]) -> Obj:
    volumes = [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)]
    return {"metadata": {"labels": labels}, "spec": {"volumes": volumes}}


def namespace() -> FakeKube:
    """A StatefulSet `web` (2 replicas, replica 1's claim missing), a Deployment `api` with its
    ReplicaSet, a ReplicaSet `solo` of its own, a Deployment mounting no claim, a claim `data`
    mounted by a bare pod, an unmounted claim `spare`, and another namespace's claim."""
    web = {
        "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template({"app": "web"}, []),
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}],
        },
    }
    api = {
        "kind": "Deployment",
        "metadata": {"name": "api"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "api"}},
            "template": template({"app": "api"}, ["logs"]),
        },
    }
    api_rs = {
        "kind": "ReplicaSet",
        "metadata": {"name": "api-1", "ownerReferences": [{"kind": "Deployment", "name": "api", "controller": True}]},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "api"}},
            "template": template({"app": "api"}, ["logs"]),
        },
    }
    solo = {
        "kind": "ReplicaSet",
        "metadata": {"name": "solo"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "solo"}},
            "template": template({"app": "solo"}, ["cache", "gone"]),
        },
    }
    stateless = {
        "kind": "Deployment",
        "metadata": {"name": "stateless"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}}, "template": template({"app": "x"}, [])},
    }
    other = claim("elsewhere", "pv-other")
    other["metadata"]["namespace"] = "other"
    return FakeKube(
        web, api, api_rs, solo, stateless, other,
        pod("web-0", {"app": "web"}, ["data-web-0"], {"kind": "StatefulSet", "name": "web"}),
        pod("web-1", {"app": "web"}, ["data-web-1"], {"kind": "StatefulSet", "name": "web"}),
        pod("api-1-x", {"app": "api"}, ["logs"], {"kind": "ReplicaSet", "name": "api-1"}),
        pod("solo-y", {"app": "solo"}, ["cache", "gone"], {"kind": "ReplicaSet", "name": "solo"}),
        pod("bare", {"app": "tool"}, ["data"]),
        claim("data-web-0", "pv-web-0"), claim("logs", "pv-logs"), claim("cache", "pv-cache"),
        claim("data", "pv-data"), claim("spare", "pv-spare"),
        *(pv(n, f"[ds] kubevols/{n}.vmdk") for n in ("pv-web-0", "pv-logs", "pv-cache", "pv-data", "pv-spare")),
        pv("pv-other", "[ds] kubevols/pv-other.vmdk"),
    )  # fmt: skip


def shape(snap: Any) -> tuple[Any, ...]:
    return (
        snap.namespace,
        snap.kind,
        snap.name,
        sorted(snap.pods),
        sorted(snap.pvcs),
        sorted(snap.pvs),
        snap.missing_pvcs,
    )


def test_the_survey_finds_each_owner_as_asking_for_it_by_name_gathers_it() -> None:
    kube = FakeKube()
    kube.objs = namespace().objs
    surveyed = owners.gather_all(kube, "ns")
    assert [(s.kind, s.name) for s in surveyed] == [
        ("StatefulSet", "web"),
        ("Deployment", "api"),
        ("ReplicaSet", "solo"),  # api-1 is api's; `stateless` mounts no claim
        ("PersistentVolumeClaim", "data"),
        ("PersistentVolumeClaim", "spare"),  # the other namespace's claim is not this survey's
    ]
    for snap in surveyed:
        assert shape(owners.gather(kube, "ns", snap.name, snap.kind)) == shape(snap)
    web, api, solo, data, spare = surveyed
    assert (sorted(web.pods), sorted(web.pvcs), web.missing_pvcs) == (
        ["web-0", "web-1"],
        ["data-web-0"],
        ["data-web-1"],
    )
    assert (sorted(api.pods), sorted(api.pvs)) == (["api-1-x"], ["pv-logs"])
    assert solo.missing_pvcs == ["gone"]
    assert (sorted(data.pods), sorted(spare.pods)) == (["bare"], [])
    assert [s.name for s in owners.gather_all(kube, None) if s.namespace == "other"] == ["elsewhere"]


@pytest.mark.parametrize("kind", list(OwnerKind))
def test_a_missing_owner_is_named_as_the_api_server_names_it(kind: OwnerKind) -> None:
    with pytest.raises(NotFoundError) as missing:
        owners.gather(FakeKube(), "ns", "nope", kind)
    assert str(missing.value) == f'{kind.plural} "nope" not found in namespace "ns"'


@pytest.mark.parametrize(
    ("kind", "command", "key", "ref", "arg"),
    [
        (OwnerKind.STATEFULSET, "sts", "statefulset-web", "statefulset.apps/web", "web"),
        (OwnerKind.DEPLOYMENT, "deploy", "deployment-web", "deployment.apps/web", "deploy/web"),
        (OwnerKind.REPLICASET, "deploy", "replicaset-web", "replicaset.apps/web", "rs/web"),
        (OwnerKind.CLAIM, "pvc", "pvc-web", "pvc/web", "pvc/web"),
    ],
)
def test_each_kind_names_its_command_key_and_reference(
    kind: OwnerKind, command: str, key: str, ref: str, arg: str
) -> None:
    assert (kind.command, kind.key("web"), kind.ref("web"), kind.arg("web")) == (command, key, ref, arg)
    assert parse_ref(kind.arg("web")) == (kind, "web") == parse_ref(ref)
    assert kind.legacy_key("web") == ("web" if kind is OwnerKind.STATEFULSET else None)


@pytest.mark.parametrize(
    ("kind", "strategy", "stop", "start", "per_pod"),
    [
        (OwnerKind.STATEFULSET, Strategy.ROLLING, ["delete-statefulset"], ["recreate-statefulset"], True),
        (
            OwnerKind.STATEFULSET,
            Strategy.OFFLINE,
            ["scale-down", "delete-statefulset"],
            ["recreate-statefulset"],
            False,
        ),
        (OwnerKind.DEPLOYMENT, Strategy.OFFLINE, ["scale-to-zero"], ["scale-back"], False),
        (OwnerKind.REPLICASET, Strategy.OFFLINE, ["scale-to-zero"], ["scale-back"], False),
        (OwnerKind.CLAIM, Strategy.ROLLING, [], [], True),
    ],
)
def test_each_owner_names_the_steps_that_stop_and_start_it_around_its_claims(
    kind: OwnerKind, strategy: Strategy, stop: list[str], start: list[str], per_pod: bool
) -> None:
    kube = namespace()
    name = {OwnerKind.STATEFULSET: "web", OwnerKind.DEPLOYMENT: "api", OwnerKind.REPLICASET: "solo"}.get(kind, "data")
    snap = owners.gather(kube, "ns", name, kind)
    plan = owners.build_plan(snap, "ctx", "https://k", "csi", None, strategy)
    assert plan.strategy == strategy, "a Deployment's is offline and a claim's rolling, whatever was asked"
    kinds = [s.kind for s in owners.steps_for(plan)]
    first = kinds.index(StepKind.DETACH)
    last = len(kinds) - 1 - kinds[::-1].index(StepKind.CREATE_PVC)
    before = [k for k in kinds[:first] if k not in (StepKind.BACKUP, StepKind.RETAIN, StepKind.EVICT)]
    after = [k for k in kinds[last + 1 :] if k not in (StepKind.RESTORE_RECLAIM_POLICY, StepKind.RECREATE_POD)]
    assert (before, after) == (stop, start)
    assert (StepKind.EVICT in kinds) == per_pod == (StepKind.RECREATE_POD in kinds)
    assert owners.owner(kind).pods(plan) == {"web": ["web-0", "web-1"], "data": ["bare"]}.get(name, [])
