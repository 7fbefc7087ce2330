"""Disruption budgets while the StatefulSet is deleted: its pods have no controller then, and
the disruption controller cannot count them for a maxUnavailable or percentage budget (it
reports expectedPods 0 and allows nothing), so the run evaluates such a budget itself."""

from __future__ import annotations

from typing import Any

from kubectl_csi_migrate.kube import predicates as p
from kubectl_csi_migrate.kube.client import Kube
from kubectl_csi_migrate.migration.plan import Plan

Obj = dict[str, Any]


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
    for pdb in kube.items("PodDisruptionBudget", plan.namespace):
        if not p.selector_matches(pdb["spec"].get("selector") or {}, labels):
            continue
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
