"""PodDisruptionBudgets: which budgets cover a pod, the run's own evaluation of a budget while
the StatefulSet is deleted, and the budget Leases that keep two runs from taking pods down under
one budget at once.

Which budgets cover a pod is decided in one place, `covering`, for preflight and the run alike:
a policy/v1 selector read as the API server reads it, `selector: {}` covering every pod of the
budget's namespace and no selector (null) none.

While the StatefulSet is deleted its pods have no controller, and the disruption controller
cannot count them for a maxUnavailable or percentage budget (it reports expectedPods 0 and allows
nothing), so the run evaluates such a budget itself (`orphan_budget`).

Two runs whose pods one budget covers (`--parallel`, or two commands) would each see room for one
pod down and each take one. So a run (or a rollback) that may take down a pod a budget covers
holds that budget's Lease (`lease_name`, in the budget's namespace) for its whole run: taken
right after the run's own Lease and before its first change, in the budgets' name order (two runs
never each hold what the other waits for), renewed by the run Lease's thread, given back with
it. Another run waits for it before changing anything, up to its `--timeout`. A holder that is
gone is taken over by the run Lease's own rules (kube/lock.py: its process gone from this host,
or the Lease unrenewed for a lease duration).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from kubectl_csi_migrate.errors import NothingChanged, TemporaryError
from kubectl_csi_migrate.kube import predicates as p
from kubectl_csi_migrate.kube.client import Kube
from kubectl_csi_migrate.kube.lock import LEASE_SECONDS, Lease
from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration import owners
from kubectl_csi_migrate.migration.context import Context
from kubectl_csi_migrate.migration.plan import Plan, fit_name

LEASE_PREFIX = "csi-migrate.pdb."
"""A budget's Lease is `csi-migrate.pdb.<budget>`: a run's own is `csi-migrate-<key>`, so the two
never share a name."""
RUN = "csi-migrate.kubectl.io/run"
"""On a budget's Lease: the run holding it (`statefulset ns/web`), as a waiting run names it."""
POLL_SECONDS = 2.0
"""A run waiting for a budget's Lease reads it this often (a GET; leases are never listed)."""
TICK = 30.0
"""Without a live line, a wait for a budget's Lease says so this often (seconds)."""


def lease_name(budget: str) -> str:
    return fit_name(LEASE_PREFIX + budget, 253)


def covering(budgets: Iterable[Obj], labels: dict[str, str]) -> list[Obj]:
    """The budgets (of the pod's namespace) that cover a pod labelled `labels`, by name: the one
    test of coverage (preflight, the run's own budget check, the budget Leases)."""
    return sorted(
        (b for b in budgets if p.selector_matches((b.get("spec") or {}).get("selector"), labels)),
        key=lambda b: str(b["metadata"]["name"]),
    )


def budget_allows(spec: Obj, replicas: int, ready: int) -> bool:
    """Would a PodDisruptionBudget `spec` allow one more pod down, `ready` of `replicas` being
    Ready now? Percentages round up, as the disruption controller rounds them."""

    def count(value: Any) -> int:
        if isinstance(value, str) and value.endswith("%"):
            return -(-replicas * int(value[:-1]) // 100)
        return int(value)

    if "minAvailable" in spec:
        return ready - 1 >= count(spec["minAvailable"])
    if "maxUnavailable" in spec:
        return replicas - (ready - 1) <= count(spec["maxUnavailable"])
    return True


def orphan_budget(kube: Kube, plan: Plan, labels: dict[str, str]) -> tuple[bool, str] | None:
    """The budgets covering a pod labelled `labels` evaluated against the owner's replica count:
    (allowed, what to say), or None when the cluster evaluates every budget itself (or there is
    none). The Ready pods are counted from a list made now, not from the run's cache: a view a
    moment old (or a stalled watch) could count a replica that just failed as Ready."""
    budgets = []
    for pdb in covering(kube.items("PodDisruptionBudget", plan.namespace), labels):
        if pdb.get("status", {}).get("expectedPods", 0) != 0:
            return None
        budgets.append(pdb)
    if not budgets:
        return None
    replicas = {plan.pod_name(o) for o in range(plan.replicas)}
    pods = kube.items("Pod", plan.namespace)  # one list, not a read per replica
    ready = sum(1 for other in pods if other["metadata"]["name"] in replicas and p.is_pod_ready(other))
    verdicts = [(budget_allows(pdb["spec"], plan.replicas, ready), pdb["metadata"]["name"]) for pdb in budgets]
    names = ", ".join(n for _, n in verdicts)
    if all(a for a, _ in verdicts):
        return True, f"poddisruptionbudget {names} checked by csi-migrate: {ready}/{plan.replicas} Ready"
    return False, names


# -- the budget Leases ---------------------------------------------------------------------------


def pod_labels(m: Context) -> list[dict[str, str]]:
    """The labels of every pod the run (or the rollback) may take down: a StatefulSet's replicas
    and a claim's bare pod as they are now (the run's view of the namespace's pods) or, gone, as
    backed up; a Deployment's (ReplicaSet's) pods by its selector, and its pod template's labels
    (its pods are gone once it is scaled to zero)."""
    plan, ns, who = m.plan, m.plan.namespace, owners.owner(m.plan.kind)
    if not who.selects_pods and not who.pods(plan):
        return []  # an unmounted claim: nothing stops
    live = {o["metadata"]["name"]: o for o in m.caches[("Pod", ns)].items()}

    def labels(obj: Obj) -> dict[str, str]:
        return dict(obj["metadata"].get("labels") or {})

    if who.selects_pods:
        backed_up = m.workdir.has_backup(plan.kind, plan.name)
        owner = m.workdir.load_backup(plan.kind, plan.name) if backed_up else m.kube.get(plan.kind, plan.name, ns)
        if owner is None:
            return []  # gone: the run stops at its first step, saying so
        selector = owner["spec"].get("selector")
        found = [labels(o) for o in live.values() if p.selector_matches(selector, labels(o))]
        return [*found, dict(owner["spec"]["template"]["metadata"].get("labels") or {})]
    found = []
    for name in who.pods(plan):
        if name in live:
            found.append(labels(live[name]))
        elif m.workdir.has_backup("Pod", name):
            found.append(labels(m.workdir.load_backup("Pod", name)))
    return found


def hold_leases(m: Context, run_lease: Lease, fresh: bool) -> None:
    """Take the Lease of every budget covering a pod the run may take down, in name order,
    waiting for each (`wait_for`); each rides on the run's Lease from then on (renewed by its
    thread, checked before every change, given back with it). `fresh`: nothing was changed yet."""
    labels = pod_labels(m)
    if not labels:
        return
    ns = m.plan.namespace
    listed = m.kube.items("PodDisruptionBudget", ns)  # while holding the run's Lease
    for name in sorted({b["metadata"]["name"] for found in labels for b in covering(listed, found)}):
        lease = Lease(
            m.kube,
            ns,
            lease_name(name),
            m.run_id,
            m.say,
            owner=f"PodDisruptionBudget/{name}",
            annotations={RUN: m.plan.what},
            guards=f"pods that poddisruptionbudget {ns}/{name} covers",
        )
        wait_for(lease, f"{ns}/{name}", m.settings.timeout, m.say, m.live, fresh)
        run_lease.riders.append(lease)


def holder_of(lease: Obj) -> str:
    """Who holds a budget's Lease, in a sentence."""
    holder = str((lease.get("spec") or {}).get("holderIdentity") or "")
    run = str((lease.get("metadata", {}).get("annotations") or {}).get(RUN) or "")
    if run:
        return f"the csi-migrate run of {run} ({holder})" if holder else f"the csi-migrate run of {run}"
    return f"csi-migrate run {holder}" if holder else "another run"


def wait_for(
    lease: Lease,
    budget: str,
    timeout: float,
    say: Callable[[str], None],
    live: Callable[[str], contextlib.AbstractContextManager[None]] | None = None,
    fresh: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], float] = time.monotonic,
) -> None:
    """Take `lease`, the Lease of poddisruptionbudget `budget` (`ns/name`), waiting while another
    live run holds it, up to `timeout` seconds; then stop (NothingChanged when `fresh`: one
    `error:` line)."""
    what = f"poddisruptionbudget {budget}"
    seen = lease.try_acquire(what)
    if seen == {}:  # given back between this run's create and its read: once more
        seen = lease.try_acquire(what)
    if seen is None:
        return
    started = now()
    holder = holder_of(seen)
    say(
        f"waiting for {what}: its lease {lease.name} is held by {holder}, which may take down pods it covers; "
        f"this run changes nothing meanwhile ({timeout:.0f}s at most)"
    )
    next_tick = TICK
    with live(f"{what} (held by {holder})") if live else contextlib.nullcontext():
        while True:
            waited = now() - started
            if waited >= timeout:
                duration = float((seen.get("spec") or {}).get("leaseDurationSeconds") or LEASE_SECONDS)
                stopped = "nothing was changed" if fresh else "this run stopped before its next change"
                message = (
                    f"gave up after {waited:.0f}s waiting for {what}: its lease {lease.name} is held by {holder}; "
                    f"{stopped}. Run the same command again once that run is done (a lease its holder no longer "
                    f"renews is taken over after {duration:.0f}s, at once where its process is gone from this machine)"
                )
                raise NothingChanged(message) if fresh else TemporaryError(message)
            sleep(min(POLL_SECONDS, timeout - waited))
            seen = lease.try_acquire(what)
            if seen is None:
                say(f"{what}: lease {lease.name} taken after {now() - started:.0f}s")
                return
            if seen and holder_of(seen) != holder:
                holder = holder_of(seen)
                say(f"{what}: its lease {lease.name} is now held by {holder}")
            if live is None and now() - started >= next_tick:
                next_tick += TICK
                say(f"still waiting for {what} (held by {holder}): {now() - started:.0f}s of {timeout:.0f}s")
