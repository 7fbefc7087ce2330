"""Pure logic on fixtures: the plan, wait predicates, disruption budgets, the working directory."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from kubectl_csi_migrate.kube import predicates as p
from kubectl_csi_migrate.migration.budget import budget_allows
from kubectl_csi_migrate.migration.owners import build_plan, describe_steps
from kubectl_csi_migrate.migration.plan import MIGRATE, SKIP_CSI, SKIP_OTHER, Plan, Snapshot
from kubectl_csi_migrate.migration.workdir import WorkDir, default_name


def pv(name: str, kind: str, claim: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "capacity": {"storage": "1Gi"},
        "persistentVolumeReclaimPolicy": "Delete",
        "claimRef": {"name": claim, "namespace": "ns"},
    }
    if kind == "intree":
        spec["vsphereVolume"] = {"volumePath": f"[ds] kubevols/{name}.vmdk", "fsType": "ext4"}
    elif kind == "csi":
        spec["csi"] = {"driver": "csi.vsphere.vmware.com", "volumeHandle": f"fcd-{name}"}
    else:
        spec["nfs"] = {"server": "x", "path": "/"}
    return {"metadata": {"name": name}, "spec": spec}


def snapshot(name: str = "web", replicas: int = 2) -> Snapshot:
    templates = [
        {"metadata": {"name": "data"}, "spec": {"storageClassName": "standard"}},
        {"metadata": {"name": "logs"}, "spec": {"storageClassName": "standard-rwo"}},
        {"metadata": {"name": "nfs"}, "spec": {"storageClassName": "nfs"}},
    ]
    sts = {"metadata": {"name": name, "uid": "u1"}, "spec": {"replicas": replicas, "volumeClaimTemplates": templates}}
    pvcs, pvs = {}, {}
    for ordinal in range(replicas):
        for template, kind, klass in (
            ("data", "intree", "standard"),
            ("logs", "csi", "standard-rwo"),
            ("nfs", "nfs", "nfs"),
        ):
            claim = f"{template}-{name}-{ordinal}"
            volume = f"pv-{claim}"
            pvcs[claim] = {"metadata": {"name": claim}, "spec": {"volumeName": volume, "storageClassName": klass}}
            pvs[volume] = pv(volume, kind, claim)
    return Snapshot("ns", name, sts, {}, pvcs, pvs, [])


def test_plan_migrates_only_intree_volumes_and_orders_replicas_down() -> None:
    plan = build_plan(snapshot(), "ctx", "https://k", "standard-rwo", None, "rolling")
    actions = {v.pvc: v.action for v in plan.volumes}
    assert actions == {
        "data-web-0": MIGRATE, "data-web-1": MIGRATE,
        "logs-web-0": SKIP_CSI, "logs-web-1": SKIP_CSI,
        "nfs-web-0": SKIP_OTHER, "nfs-web-1": SKIP_OTHER,
    }  # fmt: skip
    assert plan.migrate_templates == ("data",)
    assert plan.ordinals_descending() == [1, 0]
    assert plan.to_migrate(1)[0].vmdk == "[ds] kubevols/pv-data-web-1.vmdk"
    assert Plan.from_dict(plan.to_dict()) == plan


def test_plan_with_intree_class_filter_skips_other_classes() -> None:
    plan = build_plan(snapshot(), "ctx", "https://k", "standard-rwo", "other-class", "rolling")
    assert plan.to_migrate() == []
    assert plan.migrate_templates == ()


def test_steps_describe_offline_downtime() -> None:
    plan = build_plan(snapshot(), "ctx", "https://k", "standard-rwo", None, "offline")
    steps = describe_steps(plan)
    assert any("scale statefulset.apps/web to 0" in s for s in steps)
    assert not any(s.startswith("evict") for s in steps)


@pytest.mark.parametrize(
    ("spec", "replicas", "ready", "allowed"),
    [
        ({"maxUnavailable": 1}, 3, 3, True),
        ({"maxUnavailable": 1}, 3, 2, False),
        ({"minAvailable": 2}, 3, 3, True),
        ({"minAvailable": 2}, 3, 2, False),
        ({"maxUnavailable": "34%"}, 3, 3, True),
        ({"minAvailable": "100%"}, 3, 3, False),
        ({}, 1, 1, True),
    ],
)
def test_budget_allows(spec: dict[str, Any], replicas: int, ready: int, allowed: bool) -> None:
    assert budget_allows(spec, replicas, ready) is allowed


def ready_pod(name: str, owner: str | None = None, ready: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if owner:
        meta["ownerReferences"] = [{"uid": owner, "controller": True}]
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return {"metadata": meta, "status": status}


def test_predicates() -> None:
    assert p.gone("a")({})
    assert not p.gone("a")({"a": {"metadata": {"uid": "1"}}})
    assert p.gone("a", "1")({"a": {"metadata": {"uid": "2"}}}), "a new incarnation is not the old one"
    assert p.pod_ready("a")({"a": ready_pod("a")})
    assert not p.pod_ready("a")({"a": ready_pod("a", ready=False)})
    va = {"spec": {"source": {"persistentVolumeName": "pv1"}}}
    assert not p.no_attachment("pv1")({"x": va})
    assert p.no_attachment("pv2")({"x": va})
    assert p.not_owned_by("u", {"a"})({"a": ready_pod("a", owner="other")})
    assert not p.not_owned_by("u", {"a"})({"a": ready_pod("a", owner="u")})
    pods = {"a": ready_pod("a", "u"), "b": ready_pod("b", "u")}
    assert p.statefulset_adopted_and_ready("u", 2, {"a", "b"}, pods)
    assert not p.statefulset_adopted_and_ready("u", 2, {"a", "b"}, {**pods, "b": ready_pod("b")})
    bound = {"c": {"spec": {"volumeName": "v"}, "status": {"phase": "Bound"}}}
    assert p.pvc_bound("c", "v")(bound) and not p.pvc_bound("c", "w")(bound)
    # By uid: the object the run just created, not the one of that name a view a moment old shows.
    old = {"a": {**ready_pod("a"), "metadata": {"name": "a", "uid": "old"}}}
    assert p.pod_ready("a", "old")(old) and not p.pod_ready("a", "new")(old)
    old_claim = {"c": {**bound["c"], "metadata": {"name": "c", "uid": "old"}}}
    assert p.pvc_bound("c", "v", "old")(old_claim) and not p.pvc_bound("c", "v", "new")(old_claim)


def test_workdir_accepts_new_empty_or_same_unfinished_run(tmp_path: Path) -> None:
    plan = build_plan(snapshot(), "ctx", "https://k", "standard-rwo", None, "rolling")
    key = ("https://k", "ns", "StatefulSet", "web")
    assert WorkDir(tmp_path / "new").problem(key) is None
    (tmp_path / "empty").mkdir()
    assert WorkDir(tmp_path / "empty").problem(key) is None
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    assert "not empty" in (WorkDir(tmp_path / "used").problem(key) or "")

    wd = WorkDir(tmp_path / "run")
    wd.create(plan)
    assert wd.problem(key) is None, "this StatefulSet's unfinished run resumes"
    assert "holds the run of statefulset ns/web" in (wd.problem(("https://k", "ns", "StatefulSet", "db")) or "")
    assert "not of deployment ns/web" in (wd.problem(("https://k", "ns", "Deployment", "web")) or "")
    assert stat.S_IMODE(os.stat(wd.path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(wd.run_file).st_mode) == 0o600
    wd.mark_finished({"done": True})
    assert "finished" in (wd.problem(key) or "")


def test_workdir_backup_is_never_overwritten_and_torn_records_are_ignored(tmp_path: Path) -> None:
    wd = WorkDir(tmp_path / "run")
    wd.create(build_plan(snapshot(), "ctx", "https://k", "standard-rwo", None, "rolling"))
    original = {"kind": "Pod", "metadata": {"name": "web-0", "uid": "old"}}
    wd.save_backup(original)
    wd.save_backup({"kind": "Pod", "metadata": {"name": "web-0", "uid": "new"}})
    assert wd.load_backup("Pod", "web-0")["metadata"]["uid"] == "old"
    wd.record("a", "start")
    wd.record("a", "done", fcd_id="x")
    wd.record("b", "start")
    with open(wd.steps_file, "a") as handle:
        handle.write('{"step": "c", "ev')  # a kill in the middle of a write
    steps = wd.steps()
    assert steps["a"]["event"] == "done" and steps["a"]["fcd_id"] == "x"
    assert steps["b"]["event"] == "start"
    assert "c" not in steps


def test_default_working_directory_name_is_safe() -> None:
    assert default_name("gke_proj/zone:user", "ns", "web") == "csi-migrate-gke_proj_zone_user-ns-web"


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({"matchLabels": {"app": "web"}}, {"app": "web"}, True),
        ({"matchLabels": {"app": "web"}}, {"app": "web-2"}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}, {"app": "db"}, True),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, {"app": "web"}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {"app": "web"}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {"app": "web"}, True),
        (
            {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]},
            {"app": "web"},
            False,
        ),
        # As the API server reads a LabelSelector: empty selects everything, none selects nothing.
        ({}, {"app": "web"}, True),
        ({"matchLabels": {}, "matchExpressions": []}, {}, True),
        (None, {"app": "web"}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}, {}, False),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, {}, True),
        ({"matchExpressions": [{"key": "app", "operator": "Near", "values": ["web"]}]}, {"app": "web"}, False),
    ],
)
def test_selector_matches(selector: dict[str, Any] | None, labels: dict[str, str], matches: bool) -> None:
    assert p.selector_matches(selector, labels) is matches


def test_disk_key_names_the_same_disk_the_same_way() -> None:
    from kubectl_csi_migrate.vsphere.paths import disk_key

    assert disk_key("[ds]  kubevols/a.vmdk") == disk_key("[ds] kubevols/a.vmdk")
    assert disk_key("[folder/ds] kubevols/a.vmdk") == disk_key("[ds] kubevols/a.vmdk")
    assert disk_key("[ds] kubevols/a.vmdk") != disk_key("[ds] kubevols/b.vmdk")


def test_private_folders_of_dead_processes_are_removed(tmp_path: Path) -> None:
    """Only folders of processes this one can see (host.tag: this machine, this pid namespace);
    an earlier release's untagged folder once a day old (issue 17, item 10)."""
    import subprocess
    import sys

    from kubectl_csi_migrate.host import tag
    from kubectl_csi_migrate.kube import client

    dead = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    )
    gone = tmp_path / f"kubectl-csi-migrate-{tag()}.{dead}-abc"
    alive = tmp_path / f"kubectl-csi-migrate-{tag()}.{os.getpid()}-def"
    elsewhere = tmp_path / f"kubectl-csi-migrate-0badc0de.{dead}-ghi"  # another container's live run
    old_gone = tmp_path / f"kubectl-csi-migrate-{dead}-jkl"
    old_recent = tmp_path / f"kubectl-csi-migrate-{dead}-mno"
    other = tmp_path / "kubectl-csi-migrate-notapid"
    for folder in (gone, alive, elsewhere, old_gone, old_recent, other):
        folder.mkdir()
        (folder / "key").write_text("secret")
    day_old = time.time() - client.OLD_FORMAT_AGE - 60
    os.utime(old_gone, (day_old, day_old))
    client._remove_dead_temp_dirs(str(tmp_path))
    assert not gone.exists() and not old_gone.exists()
    assert alive.exists() and elsewhere.exists() and old_recent.exists() and other.exists()


def test_a_process_is_judged_alive_or_gone_only_where_its_pid_means_it() -> None:
    import subprocess
    import sys

    from kubectl_csi_migrate.host import alive, this_host

    dead = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    )
    assert alive(this_host(), os.getpid()) is True
    assert alive(this_host(), dead) is False
    hostname = this_host().split("~")[0]
    assert alive(hostname, dead) is None, "the bare hostname (another container's, an earlier release's)"
    assert alive(f"{hostname}~0badc0de", dead) is None


def test_every_kind_of_step_is_one_object_with_its_needs_and_a_way_to_do_and_undo_it() -> None:
    from kubectl_csi_migrate.migration import disks, volumes, workload
    from kubectl_csi_migrate.migration.kinds import KINDS
    from kubectl_csi_migrate.migration.owners import steps_for
    from kubectl_csi_migrate.migration.steps import StepKind, parse_id

    assert list(KINDS) == [k.name for k in KINDS.values()]
    assert set(KINDS) == set(StepKind), "every kind of step has exactly one Kind"
    defined = [*workload.KINDS, *volumes.KINDS, *disks.KINDS]
    assert sorted(k.name for k in defined) == sorted(KINDS), "each Kind is defined once, beside its do and undo"
    assert all(KINDS[k.name] is k and callable(k.do) and callable(k.undo) for k in defined)
    for strategy in ("rolling", "offline"):
        plan = build_plan(snapshot(), "ctx", "https://k", "standard-rwo", None, strategy)
        steps = steps_for(plan)
        assert {s.kind for s in steps} <= set(KINDS)
        assert len({s.id for s in steps}) == len(steps), "step ids must be unique: the record is keyed by them"
        assert all(parse_id(s.id)[0] == s.kind for s in steps), "an id names its kind"
        assert all(k.owners is None or plan.kind in k.owners for k in map(KINDS.__getitem__, {s.kind for s in steps}))


def test_a_rollback_undoes_what_was_recorded_and_the_steps_that_may_have_run_after_it() -> None:
    from kubectl_csi_migrate.migration.kinds import KINDS, steps_to_undo
    from kubectl_csi_migrate.migration.owners import steps_for

    recorded_after = {k for k, kind in KINDS.items() if kind.recorded_after}
    plan = build_plan(snapshot(), "ctx", "https://k", "standard-rwo", None, "rolling")
    steps = steps_for(plan)
    kinds = [s.kind for s in steps]
    evict = kinds.index("evict")  # then detach, delete-pvc, delete-pv, cns-release, fcd (recorded after)
    fcd = kinds.index("fcd")
    assert all(k not in recorded_after for k in kinds[evict:fcd]) and kinds[fcd] in recorded_after
    for done, may_have_run in (
        (2, kinds.index("delete-statefulset") + 1),  # the retains are not written one by one
        (evict, fcd + 1),
        (evict + 3, fcd + 1),
        (fcd + 1, kinds.index("fcd", fcd + 1) + 1),  # up to the next replica's FCD
    ):
        record = {s.id: {"event": "done"} for s in steps[:done]}
        undo = steps_to_undo(plan, record)
        assert [s.id for s in undo] == [s.id for s in reversed(steps[:may_have_run])], done
    record = {s.id: {"event": "done"} for s in steps[:5]}
    record.update({s.id: {"event": "undone"} for s in steps[3:6]})  # a rollback stopped there
    assert [s.id for s in steps_to_undo(plan, record)] == [s.id for s in reversed(steps[:3])]


def test_an_offline_rollback_from_the_record_undoes_each_volume_s_step_in_progress() -> None:
    """Offline, the volumes move side by side: each volume's chain may have a step in progress
    that the record does not show yet."""
    from kubectl_csi_migrate.migration.kinds import steps_to_undo
    from kubectl_csi_migrate.migration.owners import steps_for

    plan = build_plan(snapshot(), "ctx", "https://k", "standard-rwo", None, "offline")
    steps = steps_for(plan)
    chains: dict[str, list[str]] = {}
    for s in steps:
        if s.pv and s.ordinal is not None:
            chains.setdefault(s.pv, []).append(s.id)
    assert len(chains) >= 2
    first, second = list(chains.values())[:2]
    shared = [s.id for s in steps if s.id not in first and s.id not in second and s.ordinal is None]
    shared = shared[: next(i for i, s in enumerate(steps) if s.id == first[0])]
    # Volume 1 recorded up to its FCD, volume 2 nothing yet (its steps until its FCD may have run).
    fcd = next(i for i, step in enumerate(first) if step.startswith("fcd/"))
    record = {i: {"event": "done"} for i in [*shared, *first[: fcd + 1]]}
    undo = {s.id for s in steps_to_undo(plan, record)}
    assert first[fcd + 1] in undo and first[fcd + 2] in undo, "volume 1's create-pv and create-pvc may have run"
    assert set(second[: fcd + 1]) <= undo and second[fcd + 1] not in undo, "volume 2's steps up to its FCD"
    assert set(record) <= undo


def test_a_live_line_says_what_is_waited_for_and_is_cleared_at_the_end() -> None:
    import io
    import time

    from kubectl_csi_migrate.cli.printers import LiveLine

    stream = io.StringIO()
    live = LiveLine(stream, quiet=0.0, every=0.01)
    with live.waiting("pvc data-web-0 to be Bound"):
        time.sleep(0.1)
    text = stream.getvalue()
    assert "\r\x1b[Kwaiting for pvc data-web-0 to be Bound: 0s" in text
    assert text.endswith("\r\x1b[K"), "the line must be cleared when the wait ends"
    quiet = io.StringIO()
    with LiveLine(quiet, quiet=5.0, every=0.01).waiting("a short wait"):
        time.sleep(0.05)
    assert quiet.getvalue() == "", "a wait shorter than `quiet` draws nothing"


def test_the_object_cache_follows_watch_events_and_lists_again_after_an_expired_version() -> None:
    from kubectl_csi_migrate.kube.cache import Cache

    class Lister:
        lists = 0

        def list_raw(self, kind: str, namespace: str | None = None) -> dict[str, Any]:
            self.lists += 1
            items = [{"metadata": {"name": f"pv-{i}", "resourceVersion": "1"}} for i in range(2)]
            return {"metadata": {"resourceVersion": str(self.lists)}, "items": items}

        def _watch(self, *args: Any) -> Any:  # the follower thread: nothing arrives
            return iter(())

    kube = Lister()
    cache = Cache(kube, "PersistentVolume", follow=False)  # type: ignore[arg-type]  # events applied by hand
    assert sorted(o["metadata"]["name"] for o in cache.items()) == ["pv-0", "pv-1"]

    def event(kind: str, name: str, version: str) -> dict[str, Any]:
        return {"type": kind, "object": {"metadata": {"name": name, "resourceVersion": version}}}

    cache._apply(event("ADDED", "pv-2", "5"))
    cache._apply(event("DELETED", "pv-0", "6"))
    cache._apply(event("MODIFIED", "pv-1", "7"))
    cache._apply(event("BOOKMARK", "", "9"))
    assert sorted(o["metadata"]["name"] for o in cache.items()) == ["pv-1", "pv-2"]
    assert cache._version == "9" and kube.lists == 1
    cache._apply({"type": "ERROR", "object": {"metadata": {}, "code": 410}})
    assert sorted(o["metadata"]["name"] for o in cache.items()) == ["pv-0", "pv-1"]
    assert kube.lists == 2, "an expired version is followed by a fresh list"


def test_a_wait_on_the_cache_ends_at_the_event_that_satisfies_it_and_times_out_otherwise() -> None:
    import threading

    from kubectl_csi_migrate.errors import TemporaryError
    from kubectl_csi_migrate.kube import predicates as p
    from kubectl_csi_migrate.kube.cache import Cache, selector

    class Lister:
        lists = 0

        def list_raw(self, kind: str, namespace: str | None = None) -> dict[str, Any]:
            self.lists += 1
            pods = [{"metadata": {"name": n, "uid": n, "labels": {"app": "web"}}} for n in ("web-0", "web-1")]
            return {"metadata": {"resourceVersion": "1"}, "items": pods}

        def _watch(self, *args: Any) -> Any:
            return iter(())

    kube = Lister()
    cache = Cache(kube, "Pod", "ns", follow=False)  # type: ignore[arg-type]
    gone = {"type": "DELETED", "object": {"metadata": {"name": "web-1", "resourceVersion": "2"}}}
    timer = threading.Timer(0.3, cache._apply, [gone])
    timer.start()
    started = time.monotonic()
    only = selector("metadata.name=web-1", None)
    assert only is not None
    seen = cache.wait_until(p.gone("web-1"), "web-1 to go", 10, only)
    assert seen == {} and 0.25 < time.monotonic() - started < 0.9, "woken by the event, not by the 1 s poll"
    assert kube.lists == 1, "no request of its own"
    ticks: list[float] = []
    with pytest.raises(TemporaryError, match="timed out after 1s waiting for web-0 to go"):
        cache.wait_until(p.gone("web-0"), "web-0 to go", 1.2, tick=ticks.append, tick_every=0.5)
    assert ticks, "a long wait says so"


def test_a_cache_used_again_after_it_was_stopped_lists_again_and_follows_a_new_watch() -> None:
    """A stopped cache kept its last view and no watch: a second use in the same process (a
    second run, the tests) would have waited on a frozen view until its timeout."""
    from kubectl_csi_migrate.kube.cache import Cache

    class Lister:
        lists = watches = 0

        def list_raw(self, kind: str, namespace: str | None = None) -> dict[str, Any]:
            self.lists += 1
            return {"metadata": {"resourceVersion": "1"}, "items": []}

        def _watch(self, *args: Any) -> Any:
            self.watches += 1
            time.sleep(0.05)  # a watch window that ends with nothing new
            return iter(())

    kube = Lister()
    cache = Cache(kube, "Pod", "ns")  # type: ignore[arg-type]
    assert cache.items() == [] and kube.lists == 1
    cache.stop()
    time.sleep(0.1)
    watches = kube.watches
    time.sleep(0.2)
    assert kube.watches == watches, "a stopped cache watches no more"
    assert cache.items() == [] and kube.lists == 2, "used again: listed afresh"
    time.sleep(0.2)
    assert kube.watches > watches, "and followed by a new watch"
    cache.stop()


def test_a_selector_is_applied_to_a_view_as_the_server_would_or_left_to_the_server() -> None:
    from kubectl_csi_migrate.kube.cache import selector

    pod = {"metadata": {"name": "web-0", "labels": {"app": "web", "tier": "db"}}}
    assert selector(None, None)(pod)  # type: ignore[misc]
    assert selector("metadata.name=web-0", "app=web,tier=db")(pod)  # type: ignore[misc]
    assert not selector("metadata.name=web-1", None)(pod)  # type: ignore[misc]
    assert not selector(None, "app=api")(pod)  # type: ignore[misc]
    for field, label in (("status.phase=Running", None), (None, "app!=web"), (None, "app in (web)"), (None, "app")):
        assert selector(field, label) is None, (field, label)


def test_status_of_a_running_run_and_of_a_stopped_one_read_from_the_record() -> None:
    from kubectl_csi_migrate.migration.owners import steps_for
    from kubectl_csi_migrate.migration.status import render, summarize

    plan = build_plan(snapshot(), "ctx", "https://k", "standard-rwo", None, "rolling")
    steps = steps_for(plan)
    record = {s.id: {"event": "done"} for s in steps[: [s.kind for s in steps].index("evict")]}
    run = {"plan": plan.to_dict(), "run_id": "r1"}
    lease = {"spec": {"holderIdentity": "host/r1/42", "leaseDurationSeconds": 30}}
    running = summarize(run, record, "working directory", lease, 2.0, "/w", holder_alive=True)
    assert running["phase"] == "migrating" and running["mayHaveRun"] == []
    assert "that run is running: it finishes by itself" in render(running)
    stopped = summarize(run, record, "configmap/csi-migrate-web in the cluster", lease, 90.0, "/w")
    assert stopped["phase"] == "stopped"
    assert stopped["mayHaveRun"][0].startswith("evict/"), "steps after the record's last write may have run"
    assert stopped["replicas"][0]["state"] == "may have started"
    assert "that run is running" not in render(stopped) and "may have run since: evict/" in render(stopped)


def owner_snapshot(kind: str, pod: bool = True) -> Snapshot:
    """A Deployment mounting two claims (one in-tree, one CSI), or a claim on its own (with a bare pod)."""
    from kubectl_csi_migrate.migration.plan import CLAIM

    if kind == CLAIM:
        claim = {"metadata": {"name": "scratch", "uid": "c1"}, "spec": {"volumeName": "pv-scratch"}}
        pods = {"tool": {"metadata": {"name": "tool"}, "spec": {}}} if pod else {}
        return Snapshot(
            "ns",
            "scratch",
            claim,
            pods,
            {"scratch": claim},
            {"pv-scratch": pv("pv-scratch", "intree", "scratch")},
            [],
            CLAIM,
        )
    volumes = [{"name": "a", "persistentVolumeClaim": {"claimName": "api-a"}},
               {"name": "b", "persistentVolumeClaim": {"claimName": "api-b"}}]  # fmt: skip
    owner = {
        "metadata": {"name": "api", "uid": "d1"},
        "spec": {"replicas": 2, "template": {"spec": {"volumes": volumes}}},
    }
    pvcs = {c: {"metadata": {"name": c}, "spec": {"volumeName": f"pv-{c}"}} for c in ("api-a", "api-b")}
    pvs = {"pv-api-a": pv("pv-api-a", "intree", "api-a"), "pv-api-b": pv("pv-api-b", "csi", "api-b")}
    return Snapshot("ns", "api", owner, {}, pvcs, pvs, [], kind)


def test_a_deployment_is_scaled_to_zero_and_back_around_its_claims_moved_side_by_side() -> None:
    from kubectl_csi_migrate.migration.kinds import KINDS, may_have_run
    from kubectl_csi_migrate.migration.owners import steps_for
    from kubectl_csi_migrate.migration.plan import DEPLOYMENT
    from kubectl_csi_migrate.migration.steps import StepKind

    plan = build_plan(owner_snapshot(DEPLOYMENT), "ctx", "https://k", "standard-rwo", None, "rolling")
    assert (plan.kind, plan.strategy, plan.replicas, plan.key) == (DEPLOYMENT, "offline", 2, "deployment-api")
    assert [(v.pvc, v.template, v.action) for v in plan.volumes] == [("api-a", "a", MIGRATE), ("api-b", "b", SKIP_CSI)]
    kinds = [s.kind for s in steps_for(plan)]
    assert kinds == [
        "backup", "retain", "scale-to-zero", "detach", "delete-pvc", "delete-pv", "cns-release", "fcd",
        "create-pv", "create-pvc", "scale-back", "restore-reclaim-policy",
    ]  # fmt: skip
    assert KINDS[StepKind.SCALE_TO_ZERO].recorded_after and KINDS[StepKind.SCALE_BACK].recorded_after
    assert "scale deployment.apps/api back to 2" in steps_for(plan)[2].undoes
    assert Plan.from_dict(plan.to_dict()) == plan
    assert "statefulset" not in plan.to_dict()
    # Recorded up to the detach: that volume's steps up to its fcd may have run, and the next step
    # of the Deployment's own chain (scale-back: undoing it when it never ran finds it at 0 already).
    steps = steps_for(plan)
    record = {s.id: {"event": "done"} for s in steps[:4]}
    assert may_have_run(plan, record) == {s.id for s in steps[4:8]} | {"scale-back"}


def test_a_claims_bare_pod_is_evicted_and_created_again_and_an_unmounted_claim_needs_no_stop() -> None:
    from kubectl_csi_migrate.migration.owners import steps_for
    from kubectl_csi_migrate.migration.plan import CLAIM

    plan = build_plan(owner_snapshot(CLAIM), "ctx", "https://k", "standard-rwo", None, "offline")
    assert (plan.kind, plan.strategy, plan.pod, plan.key, plan.arg) == (
        CLAIM,
        "rolling",
        "tool",
        "pvc-scratch",
        "pvc/scratch",
    )
    steps = steps_for(plan)
    assert [s.id for s in steps if s.kind in ("evict", "recreate-pod")] == ["evict/tool", "recreate-pod/tool"]
    assert plan.pod_name(0) == "tool"
    alone = build_plan(owner_snapshot(CLAIM, pod=False), "ctx", "https://k", "standard-rwo", None, "rolling")
    assert [s.kind for s in steps_for(alone)] == [
        "backup", "retain", "detach", "delete-pvc", "delete-pv", "cns-release", "fcd", "create-pv", "create-pvc",
        "restore-reclaim-policy",
    ]  # fmt: skip


def test_each_kind_of_owner_is_checked_for_the_access_its_own_steps_need() -> None:
    from kubectl_csi_migrate.migration.kinds import REQUIRED_ACCESS, access_for

    sts, deploy, claim = access_for("StatefulSet"), access_for("Deployment"), access_for("PersistentVolumeClaim")
    assert ("delete", "StatefulSet", "") in sts and not any(k in ("Deployment", "ReplicaSet") for _, k, _ in sts)
    assert ("patch", "Deployment", "") in deploy and not any(k == "StatefulSet" for _, k, _ in deploy)
    assert ("patch", "ReplicaSet", "") in access_for("ReplicaSet")
    assert ("create", "Pod", "eviction") in claim and not any(k in ("StatefulSet", "Deployment") for _, k, _ in claim)
    assert set(sts) | set(deploy) | set(claim) <= set(REQUIRED_ACCESS)
    assert not any(k == "Owner" for _, k, _ in REQUIRED_ACCESS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("web", ("StatefulSet", "web")), ("sts/web", ("StatefulSet", "web")), ("deploy/api", ("Deployment", "api")),
     ("deployment.apps/api", ("Deployment", "api")), ("rs/api-1", ("ReplicaSet", "api-1")),
     ("pvc/data", ("PersistentVolumeClaim", "data"))],
)  # fmt: skip
def test_owners_are_named_as_kubectl_names_them(text: str, expected: tuple[str, str]) -> None:
    from kubectl_csi_migrate.migration.plan import parse_ref

    assert parse_ref(text) == expected


def test_an_unknown_kind_of_owner_is_a_usage_error() -> None:
    from kubectl_csi_migrate.errors import UsageError
    from kubectl_csi_migrate.migration.plan import parse_ref

    with pytest.raises(UsageError, match="deploy/NAME"):
        parse_ref("daemonset/x")


def test_a_survey_fed_back_runs_each_row_by_its_kind(tmp_path: Path) -> None:
    import json

    from kubectl_csi_migrate.cli.fleet import from_file
    from kubectl_csi_migrate.errors import UsageError

    survey = {"items": [
        {"kind": "StatefulSet", "namespace": "a", "name": "web", "migratable": True},
        {"kind": "Deployment", "namespace": "a", "name": "api", "migratable": True},
        {"kind": "PersistentVolumeClaim", "namespace": "a", "name": "scratch", "migratable": False, "problems": ["x"]},
        {"namespace": "b", "name": "db"},
    ]}  # fmt: skip
    path = tmp_path / "survey.json"
    path.write_text(json.dumps(survey))
    targets, refused = from_file(str(path), "StatefulSet")
    assert targets == [("a", "StatefulSet", "web"), ("a", "Deployment", "api"),
                       ("a", "PersistentVolumeClaim", "scratch"), ("b", "StatefulSet", "db")]  # fmt: skip
    assert list(refused) == [("a", "PersistentVolumeClaim", "scratch")]
    path.write_text(json.dumps({"items": [{"kind": "Pod", "namespace": "a", "name": "p"}]}))
    with pytest.raises(UsageError, match="item 0 is a Pod"):
        from_file(str(path), "StatefulSet")


def test_a_working_directory_under_folders_not_made_yet_is_usable_where_they_can_be_made(tmp_path: Path) -> None:
    key = ("https://k", "ns", "StatefulSet", "web")
    assert WorkDir(tmp_path / "runs" / "today" / "web").problem(key) is None
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user every folder is writable to")
        problem = WorkDir(locked / "runs" / "web").problem(key)
        assert problem is not None and f"{locked} is not writable" in problem
    finally:
        locked.chmod(0o700)


def test_a_server_dry_run_sends_each_kinds_first_change_and_one_eviction() -> None:
    from kubectl_csi_migrate.migration.kinds import check_on_server

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, ...]] = []

        def patch(self, kind: str, name: str, patch: object, namespace: str | None = None) -> None:
            self.calls.append(("patch", kind, name))

        def delete(self, kind: str, name: str, namespace: str | None = None, **_: object) -> None:
            self.calls.append(("delete", kind, name))

        def evict(self, name: str, namespace: str, uid: str | None = None) -> None:
            self.calls.append(("evict", "Pod", name))

    plan = build_plan(snapshot(replicas=2), "ctx", "https://k", "standard-rwo", None, "rolling")
    kube = Recorder()
    check_on_server(kube, plan)  # type: ignore[arg-type]
    volumes = plan.to_migrate()
    expected = [("patch", "PersistentVolume", v.pv) for v in volumes] + [("delete", "StatefulSet", "web")]
    expected.append(("evict", "Pod", "web-1"))  # the first replica's only: the next depends on it
    for v in sorted(volumes, key=lambda v: -v.ordinal):
        expected += [("delete", "PersistentVolumeClaim", v.pvc), ("delete", "PersistentVolume", v.pv)]
    assert kube.calls == expected
