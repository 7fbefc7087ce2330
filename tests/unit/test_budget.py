"""Disruption budgets (migration/budget.py) on fakes: which budgets cover a pod (an empty selector
every pod of the namespace, a null one none; a pod judged by its own live labels), preflight's
`disruption` check, and the budget Leases a run holds for its whole run: taken in name order
after the run's own Lease, waited for while another live run holds one (bounded by --timeout),
taken over by the run Lease's rules, renewed and checked with the run's Lease, given back with it."""

from __future__ import annotations

import copy
import itertools
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kubectl_csi_migrate.errors import ConflictError, NotFoundError, NothingChanged, PermanentError, TemporaryError
from kubectl_csi_migrate.host import this_host
from kubectl_csi_migrate.kube import lock
from kubectl_csi_migrate.kube.lock import Lease
from kubectl_csi_migrate.migration import budget
from kubectl_csi_migrate.migration.budget import covering, hold_leases, lease_name, pod_labels, wait_for
from kubectl_csi_migrate.migration.plan import CLAIM, DEPLOYMENT, STATEFULSET, Plan, Snapshot
from kubectl_csi_migrate.migration.preflight import FAIL, PASS, WARN, check_disruption_budget

NS = "ns"
Obj = dict[str, Any]
POD_NAME = "statefulset.kubernetes.io/pod-name"


def pdb(name: str, selector: Obj | None, status: Obj | None = None, **spec: Any) -> Obj:
    body: Obj = {"metadata": {"name": name, "namespace": NS}, "spec": dict(spec), "status": status or {}}
    if selector is not None:
        body["spec"]["selector"] = selector
    return body


def pod(name: str, labels: Obj) -> Obj:
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    return {"metadata": {"name": name, "namespace": NS, "labels": labels, "uid": f"uid-{name}"}, "status": status}


def sts_pods(name: str, replicas: int = 3, **extra: str) -> list[Obj]:
    return [pod(f"{name}-{i}", {"app": name, POD_NAME: f"{name}-{i}", **extra}) for i in range(replicas)]


# -- which budgets cover a pod ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "covers"),
    [
        ({}, {"app": "web"}, True),  # policy/v1: an empty selector covers every pod of the namespace
        ({}, {}, True),
        (None, {"app": "web"}, False),  # no selector at all: none
        ({"matchLabels": {"app": "web"}}, {"app": "web", "x": "y"}, True),
        ({"matchLabels": {"app": "web"}}, {"app": "db"}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}, {"app": "db"}, True),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, {"app": "db"}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {"app": "web"}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {"app": "web"}, True),
        ({"matchLabels": {POD_NAME: "web-1"}}, {"app": "web", POD_NAME: "web-1"}, True),
        ({"matchLabels": {POD_NAME: "web-1"}}, {"app": "web", POD_NAME: "web-0"}, False),
    ],
)
def test_covering_reads_a_selector_as_policy_v1_does(selector: Obj | None, labels: Obj, covers: bool) -> None:
    assert bool(covering([pdb("b", selector, maxUnavailable=1)], labels)) is covers


def test_covering_counts_the_empty_selector_budget_and_orders_by_name() -> None:
    budgets = [
        pdb("web", {"matchLabels": {"app": "web"}}, maxUnavailable=1),
        pdb("all", {}, minAvailable=1),
        pdb("none", None, minAvailable=1),
        pdb("db", {"matchLabels": {"app": "db"}}, maxUnavailable=1),
    ]
    assert [b["metadata"]["name"] for b in covering(budgets, {"app": "web"})] == ["all", "web"]
    assert [b["metadata"]["name"] for b in covering(budgets, {"app": "other"})] == ["all"]


def test_a_budget_lease_never_takes_a_run_lease_s_name() -> None:
    from kubectl_csi_migrate.migration.plan import object_name, run_key

    assert lease_name("web") == "csi-migrate.pdb.web"
    assert lease_name("web") != object_name(run_key(STATEFULSET, "pdb.web"))
    assert not lease_name("x" * 253).startswith("csi-migrate-") and len(lease_name("x" * 253)) <= 253
    assert lease_name("a" * 250) != lease_name("a" * 251)


# -- preflight: each pod with its live labels --------------------------------------------------


def snapshot(pods: list[Obj], replicas: int = 3, kind: str = STATEFULSET) -> Snapshot:
    template = {"metadata": {"labels": {"app": "web"}}}
    owner = {"metadata": {"name": "web"}, "spec": {"replicas": replicas, "template": template}}
    return Snapshot(NS, "web", owner, {o["metadata"]["name"]: o for o in pods}, {}, {}, [], kind)


def disruption(budgets: list[Obj], pods: list[Obj], strategy: str = "rolling", kind: str = STATEFULSET) -> Any:
    return check_disruption_budget(FakeKube(budgets=budgets), snapshot(pods, kind=kind), strategy)  # type: ignore[arg-type]


def test_preflight_fails_on_two_budgets_counting_the_empty_selector_and_judges_it_alone() -> None:
    own = pdb("web", {"matchLabels": {"app": "web"}}, {"disruptionsAllowed": 1}, maxUnavailable=1)
    empty = pdb("everything", {}, {"disruptionsAllowed": 0}, maxUnavailable=0)
    null = pdb("nothing", None, {"disruptionsAllowed": 0}, maxUnavailable=0)
    pods = sts_pods("web")

    both = disruption([own, empty, null], pods)
    assert both.status == FAIL and "2 PodDisruptionBudgets" in both.message, both.message
    assert "poddisruptionbudget/web" in both.message and "poddisruptionbudget/everything" in both.message
    assert "every pod of the namespace" in both.message and "nothing" not in both.message
    alone = disruption([empty, null], pods)  # the empty-selector budget alone, allowing nothing: counted
    assert alone.status == FAIL and "poddisruptionbudget/everything" in alone.message
    assert "allows no disruption" in alone.message
    assert disruption([own, null], pods).status == PASS


def test_preflight_judges_each_pod_by_its_live_labels() -> None:
    """A budget on the pod-name label covers one pod: beside the StatefulSet's own it is a second
    budget over that pod only (the template's labels would never show it)."""
    own = pdb("web", {"matchLabels": {"app": "web"}}, {"disruptionsAllowed": 1}, maxUnavailable=1)
    one = pdb("web-1-only", {"matchLabels": {POD_NAME: "web-1"}}, {"disruptionsAllowed": 1}, maxUnavailable=1)
    pods = sts_pods("web")
    both = disruption([own, one], pods)
    assert both.status == FAIL, both.message
    assert "pod/web-1 is selected by 2 PodDisruptionBudgets" in both.message and "web-0" not in both.message
    # Alone, allowing nothing, it stops the run (web-1 could never be evicted).
    stuck = pdb("web-1-only", {"matchLabels": {POD_NAME: "web-1"}}, {"disruptionsAllowed": 0}, minAvailable=1)
    alone = disruption([stuck], pods)
    assert alone.status == FAIL and "covering pod/web-1" in alone.message, alone.message
    # A revision hash only some pods carry (a rollout half done) and a pod index, the same way.
    rev = pdb("old-rev", {"matchLabels": {"controller-revision-hash": "r1"}}, {"disruptionsAllowed": 1}, minAvailable=0)
    mixed = [*sts_pods("web", 2, **{"controller-revision-hash": "r1"}), pod("web-2", {"app": "web"})]
    assert "pod/web-0, pod/web-1 are each selected by 2" in disruption([own, rev], mixed).message
    idx = pdb("zero", {"matchLabels": {"apps.kubernetes.io/pod-index": "0"}}, {"disruptionsAllowed": 1}, minAvailable=0)
    indexed = [pod(f"web-{i}", {"app": "web", "apps.kubernetes.io/pod-index": str(i)}) for i in range(3)]
    assert disruption([idx], indexed).status == PASS
    assert "pod/web-0 is selected by 2" in disruption([own, idx], indexed).message


def test_preflight_counts_budgets_over_a_bare_pod_and_not_over_a_scaled_owner() -> None:
    own = pdb("web", {"matchLabels": {"app": "web"}}, {"disruptionsAllowed": 1}, maxUnavailable=1)
    empty = pdb("everything", {}, {"disruptionsAllowed": 1}, maxUnavailable=1)
    bare = [pod("tool", {"app": "web"})]
    assert disruption([own, empty], bare, kind=CLAIM).status == FAIL
    assert disruption([own], bare, kind=CLAIM).status == WARN
    assert disruption([own, empty], sts_pods("web"), strategy="offline").status == WARN  # scaled, not evicted
    assert disruption([own, empty], sts_pods("web"), kind=DEPLOYMENT).status == WARN


# -- the budget Leases -------------------------------------------------------------------------


class FakeKube:
    """Leases (resourceVersions, create conflicts, update and delete preconditions), pods and
    budgets, as the API server keeps them; `sent` lists each request as (method, lease name)."""

    def __init__(self, pods: list[Obj] | None = None, budgets: list[Obj] | None = None) -> None:
        self.pods = pods or []
        self.budgets = budgets or []
        self.owners: dict[str, Obj] = {}
        self.leases: dict[str, Obj] = {}
        self.versions = itertools.count(1)
        self.lock = threading.Lock()
        self.sent: list[tuple[str, str]] = []

    def items(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        self.sent.append(("LIST", kind))
        if kind == "Pod":
            return copy.deepcopy(self.pods)
        if kind == "PodDisruptionBudget":
            return copy.deepcopy(self.budgets)
        raise AssertionError(kind)

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        self.sent.append(("GET", name))
        if kind == "Lease":
            with self.lock:
                return copy.deepcopy(self.leases.get(name))
        if kind in (DEPLOYMENT, "ReplicaSet"):
            return copy.deepcopy(self.owners.get(name))
        raise AssertionError(kind)

    def request(self, method: str, path: str, query: Any = None, body: Any = None) -> Any:
        assert "/leases" in path, path
        with self.lock:
            if method == "POST":
                name = body["metadata"]["name"]
                self.sent.append((method, name))
                if name in self.leases:
                    raise ConflictError(f"lease {name} exists")
                return self._store(body, uid=f"uid-{next(self.versions)}")
            name = path.rsplit("/", 1)[1]
            self.sent.append((method, name))
            current = self.leases.get(name)
            if current is None:
                raise NotFoundError(name)
            if method == "PUT":
                if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                    raise ConflictError(f"lease {name} changed")
                return self._store(body, uid=current["metadata"]["uid"])
            if method == "DELETE":
                wanted = (body or {}).get("preconditions") or {}
                if wanted.get("resourceVersion") not in (None, current["metadata"]["resourceVersion"]):
                    raise ConflictError(f"lease {name} changed")
                del self.leases[name]
                return None
        raise AssertionError(method)

    def _store(self, body: Obj, uid: str) -> Obj:
        obj = copy.deepcopy(body)
        obj["metadata"]["uid"] = uid
        obj["metadata"]["resourceVersion"] = str(next(self.versions))
        self.leases[obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)

    def renew_by_holder(self, name: str) -> None:
        """The holder's renewal thread (another process) writes its Lease again."""
        with self.lock:
            self.leases[name]["metadata"]["resourceVersion"] = str(next(self.versions))

    def lease_writes(self) -> list[tuple[str, str]]:
        return [(m, n) for m, n in self.sent if m in ("POST", "PUT", "DELETE")]


def budget_lease(
    kube: FakeKube, run: str, name: str = "shared", what: str = "statefulset ns/a", say: Any = None
) -> Lease:
    """A budget's Lease as run `run` takes it, from a process of its own on machine `elsewhere`
    (pid 1): the runs of one test are told apart as separate processes would be."""
    lease = Lease(
        kube,  # type: ignore[arg-type]
        NS,
        lease_name(name),
        run,
        say,
        owner=f"PodDisruptionBudget/{name}",
        annotations={budget.RUN: what},
    )
    lease.holder = f"elsewhere/{run}/1"
    return lease


def holder(kube: FakeKube, name: str = "shared") -> str:
    return str(kube.leases[lease_name(name)]["spec"].get("holderIdentity") or "")


class Clock:
    """time.monotonic for `wait_for`, and kube/lock.py's clock, moved only by `sleep`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, on_sleep: Any = None) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep
        monkeypatch.setattr(lock, "clock", lambda: self.now)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))

    def __call__(self) -> float:
        return self.now


def test_a_second_run_waits_for_a_live_holder_and_stops_at_its_timeout_with_nothing_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = FakeKube()
    first = budget_lease(kube, "run-a")
    assert first.try_acquire("poddisruptionbudget ns/shared") is None
    first_holder = holder(kube)
    clock = Clock(monkeypatch, on_sleep=lambda n: kube.renew_by_holder(lease_name("shared")))  # alive: renews
    said: list[str] = []
    second = budget_lease(kube, "run-b", what="statefulset ns/b")
    with pytest.raises(NothingChanged) as stopped:
        wait_for(second, "ns/shared", 15.0, said.append, sleep=clock.sleep, now=clock)
    message = str(stopped.value)
    assert "gave up after 15s waiting for poddisruptionbudget ns/shared" in message, message
    assert "nothing was changed" in message and "the csi-migrate run of statefulset ns/a" in message, message
    assert said[0].startswith("waiting for poddisruptionbudget ns/shared: its lease csi-migrate.pdb.shared is held by")
    assert "statefulset ns/a" in said[0] and first_holder in said[0], said
    assert holder(kube) == first_holder, "the waiting run took nothing"
    assert sum(clock.sleeps) == pytest.approx(15.0) and max(clock.sleeps) <= budget.POLL_SECONDS
    assert kube.lease_writes() == [("POST", lease_name("shared"))] * 2, "the waiting run: one create, then reads"
    # Resumed (something was changed before): a TemporaryError that says the run stopped.
    with pytest.raises(TemporaryError, match="this run stopped before its next change"):
        wait_for(budget_lease(kube, "run-c"), "ns/shared", 4.0, said.append, fresh=False, sleep=clock.sleep, now=clock)


def test_a_waiting_run_takes_the_lease_as_soon_as_the_holder_gives_it_back(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = FakeKube()
    first = budget_lease(kube, "run-a")
    first.try_acquire("x")
    clock = Clock(monkeypatch, on_sleep=lambda n: first.release() if n == 3 else None)
    said: list[str] = []
    second = budget_lease(kube, "run-b")
    wait_for(second, "ns/shared", 600.0, said.append, sleep=clock.sleep, now=clock)
    assert "run-b" in holder(kube) and len(clock.sleeps) == 3
    assert said[-1] == "poddisruptionbudget ns/shared: lease csi-migrate.pdb.shared taken after 6s"
    lease = kube.leases[lease_name("shared")]
    assert lease["metadata"]["annotations"] == {
        lock.OWNER: "PodDisruptionBudget/shared",
        budget.RUN: "statefulset ns/a",
    }


def test_an_unrenewed_holder_elsewhere_is_taken_over_after_a_lease_duration_as_a_run_lease_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = FakeKube()
    budget_lease(kube, "run-a").try_acquire("x")
    clock = Clock(monkeypatch)
    said: list[str] = []
    wait_for(
        budget_lease(kube, "run-b", say=said.append), "ns/shared", 600.0, said.append, sleep=clock.sleep, now=clock
    )
    assert "run-b" in holder(kube)
    assert lock.LEASE_SECONDS <= sum(clock.sleeps) <= lock.LEASE_SECONDS + budget.POLL_SECONDS
    assert any("was not renewed for 60s: its holder elsewhere/run-a/1 is gone; taking it" in s for s in said), said
    # Renewed meanwhile (another resourceVersion each time): never taken over, however long.
    kube.leases[lease_name("shared")]["spec"]["holderIdentity"] = "elsewhere/run-d/1"  # renewing, below
    clock.on_sleep = lambda n: kube.renew_by_holder(lease_name("shared"))
    with pytest.raises(NothingChanged):
        wait_for(budget_lease(kube, "run-e"), "ns/shared", 300.0, said.append, sleep=clock.sleep, now=clock)
    assert holder(kube) == "elsewhere/run-d/1"


def test_a_holder_whose_process_is_gone_from_this_machine_is_taken_over_at_once(tmp_path: Path) -> None:
    kube = FakeKube()
    budget_lease(kube, "run-a").try_acquire("x")
    dead = subprocess.Popen(["true"])  # a run of this machine, killed
    dead.wait()
    host = this_host()
    kube.leases[lease_name("shared")]["spec"]["holderIdentity"] = f"{host}/run-a/{dead.pid}"
    wait_for(budget_lease(kube, "run-b"), "ns/shared", 5.0, print, sleep=lambda s: pytest.fail("waited"))
    assert "run-b" in holder(kube)
    # A live process of this machine (this one, another run id): waited for.
    kube.leases[lease_name("shared")]["spec"]["holderIdentity"] = f"{host}/run-z/1"
    with pytest.raises(NothingChanged):
        wait_for(budget_lease(kube, "run-c"), "ns/shared", 0.05, print, sleep=lambda s: None)


def test_a_lease_of_that_name_locking_something_else_is_refused() -> None:
    kube = FakeKube()
    Lease(kube, NS, lease_name("shared"), "r", owner="StatefulSet/x").try_acquire("x")  # type: ignore[arg-type]
    with pytest.raises(PermanentError, match="locks the runs of StatefulSet/x"):
        wait_for(budget_lease(kube, "run-b"), "ns/shared", 5.0, print, sleep=lambda s: pytest.fail("waited"))


# -- a run's budget Leases: which, in what order, held how long --------------------------------


class FakeWorkDir:
    def __init__(self, backups: dict[tuple[str, str], Obj] | None = None) -> None:
        self.backups = backups or {}

    def has_backup(self, kind: str, name: str) -> bool:
        return (kind, name) in self.backups

    def has_run(self) -> bool:
        return False  # a fresh run: no record in the cluster to be older than

    def load_backup(self, kind: str, name: str) -> Obj:
        return copy.deepcopy(self.backups[(kind, name)])


def plan_of(name: str, kind: str = STATEFULSET, replicas: int = 3, pod_name: str = "") -> Plan:
    return Plan("ctx", "https://k", NS, name, f"uid-{name}", replicas, "rolling", "csi", (), kind=kind, pod=pod_name)


def run_of(kube: FakeKube, plan: Plan, said: list[str] | None = None, timeout: float = 600.0, **backups: Any) -> Any:
    cache = SimpleNamespace(items=lambda: copy.deepcopy(kube.pods))
    return SimpleNamespace(
        plan=plan,
        kube=kube,
        caches={("Pod", NS): cache},
        workdir=FakeWorkDir(backups.get("backups")),
        say=(said if said is not None else []).append,
        live=None,
        settings=SimpleNamespace(timeout=timeout),
        run_id=f"run-{plan.name}",
    )


def run_lease(kube: FakeKube, name: str) -> Lease:
    lease = Lease(kube, NS, f"csi-migrate-statefulset-{name}", f"run-{name}", owner=f"StatefulSet/{name}")  # type: ignore[arg-type]
    lease.acquire(f"statefulset ns/{name}")
    return lease


def test_a_run_holds_every_budget_covering_its_pods_in_name_order_with_one_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lock, "RENEW_SECONDS", 0.02)
    budgets = [
        pdb("zeta", {"matchLabels": {POD_NAME: "web-2"}}),  # one pod, by its live label
        pdb("alpha", {}),  # every pod of the namespace
        pdb("web", {"matchLabels": {"app": "web"}}),
        pdb("db", {"matchLabels": {"app": "db"}}),
        pdb("null", None),
    ]
    kube = FakeKube(pods=sts_pods("web") + sts_pods("db"), budgets=budgets)
    own = run_lease(kube, "web")
    names = [lease_name(n) for n in ("alpha", "web", "zeta")]
    try:
        kube.sent.clear()
        hold_leases(run_of(kube, plan_of("web")), own, fresh=True)
        assert [r.name for r in own.riders] == names
        assert kube.sent[:4] == [("LIST", "PodDisruptionBudget")] + [("POST", n) for n in names], (
            "one list of budgets, one create per budget: nothing per replica"
        )
        assert all("run-web" in holder(kube, n) for n in ("alpha", "web", "zeta"))
        # Renewed by the run Lease's own thread; a rider lost stops the run before its next change.
        deadline = time.monotonic() + 5
        while not all(("PUT", n) in kube.sent for n in names) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert all(("PUT", n) in kube.sent for n in [own.name, *names]), kube.sent
        kube.leases[lease_name("web")]["spec"]["holderIdentity"] = "elsewhere/thief/1"
        kube.renew_by_holder(lease_name("web"))
        while not own.riders[1]._lost and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(
            PermanentError, match=r"lost its lease ns/csi-migrate\.pdb\.web .*pods that poddisruptionbudget"
        ):
            own.check()
    finally:
        for rider in reversed(own.riders):
            rider.release()
        own.release()
    assert set(kube.leases) == {lease_name("web")}, "each Lease still the run's given back; the one taken left"


def test_runs_take_shared_budgets_in_one_order_and_never_hold_one_while_waiting_for_an_earlier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs a and b are both covered by budgets `one` and `two`: b, arriving while a holds them,
    waits for `one` holding nothing of a's (so no deadlock), and takes both once a is done."""
    monkeypatch.setattr(budget, "POLL_SECONDS", 0.01)
    budgets = [pdb("two", {"matchLabels": {"tier": "db"}}), pdb("one", {"matchExpressions": []})]
    kube = FakeKube(pods=sts_pods("a", tier="db") + sts_pods("b", tier="db"), budgets=budgets)
    with monkeypatch.context() as other:  # run a: a process of another machine
        other.setattr(lock, "this_host", lambda: "host-a~00000000")
        a = run_lease(kube, "a")
        hold_leases(run_of(kube, plan_of("a")), a, fresh=True)
    said: list[str] = []
    b = run_lease(kube, "b")
    waiting = threading.Thread(target=hold_leases, args=(run_of(kube, plan_of("b"), said), b, True))
    waiting.start()
    deadline = time.monotonic() + 5
    while not said and time.monotonic() < deadline:
        time.sleep(0.01)
    assert said and said[0].startswith("waiting for poddisruptionbudget ns/one"), said
    assert "the csi-migrate run of statefulset ns/a" in said[0]
    time.sleep(0.1)
    assert "run-a" in holder(kube, "one") and "run-a" in holder(kube, "two") and b.riders == []
    for rider in reversed(a.riders):
        rider.release()
    a.release()
    waiting.join(5)
    assert not waiting.is_alive()
    assert [r.name for r in b.riders] == [lease_name("one"), lease_name("two")]
    assert "run-b" in holder(kube, "one") and "run-b" in holder(kube, "two")


def test_a_run_whose_budget_wait_times_out_gives_back_what_it_took(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through Migration._locked: the run's Lease and the budgets taken before the one that
    timed out are given back; nothing else was sent."""
    from kubectl_csi_migrate.migration.run import Migration, Settings

    monkeypatch.setattr(budget, "POLL_SECONDS", 0.01)
    budgets = [pdb("one", {"matchLabels": {"app": "web"}}), pdb("two", {})]
    kube = FakeKube(pods=sts_pods("web"), budgets=budgets)
    budget_lease(kube, "run-other", "two", "statefulset ns/other").try_acquire("x")  # a live holder of `two`
    host = this_host()
    kube.leases[lease_name("two")]["spec"]["holderIdentity"] = f"{host}/run-other/1"  # pid 1: alive
    kube.cache = lambda kind, namespace=None: SimpleNamespace(  # type: ignore[attr-defined]
        items=lambda: copy.deepcopy(kube.pods), stop=lambda: None
    )
    said: list[str] = []
    m = Migration(kube, None, plan_of("web"), FakeWorkDir(), said.append, Settings(timeout=0.2))  # type: ignore[arg-type]
    m.run_id = "run-web"
    with pytest.raises(NothingChanged, match="poddisruptionbudget ns/two"), m._locked(fresh=True):
        pytest.fail("the run went on without the budget's Lease")
    assert set(kube.leases) == {lease_name("two")} and "run-other" in holder(kube, "two")
    assert m.kube.before_mutation is None


def test_which_pods_a_run_may_take_down() -> None:
    kube = FakeKube(pods=[*sts_pods("web", 2), pod("tool", {"app": "tool"}), pod("api-x", {"app": "api", "h": "1"})])
    gone = pod("web-2", {"app": "web", POD_NAME: "web-2", "was": "backed-up"})
    got = pod_labels(run_of(kube, plan_of("web"), backups={("Pod", "web-2"): gone}))  # web-2 down: its backup
    assert [g[POD_NAME] for g in got] == ["web-0", "web-1", "web-2"] and got[2]["was"] == "backed-up"
    assert pod_labels(run_of(kube, plan_of("data", CLAIM, 1, "tool"))) == [{"app": "tool"}]
    assert pod_labels(run_of(kube, plan_of("data", CLAIM, 0))) == [], "an unmounted claim stops nothing"
    api = {"spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {"metadata": {"labels": {"app": "api"}}}}}
    kube.owners["api"] = api
    assert pod_labels(run_of(kube, plan_of("api", DEPLOYMENT, 1))) == [{"app": "api", "h": "1"}, {"app": "api"}]
    kube.pods = []  # scaled to zero (a resumed run): its template, from the backup
    assert pod_labels(run_of(kube, plan_of("api", DEPLOYMENT, 1), backups={(DEPLOYMENT, "api"): api})) == [
        {"app": "api"}
    ]
