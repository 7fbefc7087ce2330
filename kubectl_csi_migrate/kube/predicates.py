"""Predicates for `Kube.watch_until`: each takes the current objects by name and says whether
the wait is over. Pure functions, so they are unit-tested on plain dicts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Objects = dict[str, dict[str, Any]]
Predicate = Callable[[Objects], bool]


def condition(obj: dict[str, Any], kind: str) -> str | None:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def is_pod_ready(pod: dict[str, Any]) -> bool:
    return (
        pod.get("status", {}).get("phase") == "Running"
        and condition(pod, "Ready") == "True"
        and not pod["metadata"].get("deletionTimestamp")
    )


def gone(name: str, uid: str | None = None) -> Predicate:
    """`name` does not exist (or, with `uid`, that incarnation of it does not)."""

    def check(objects: Objects) -> bool:
        obj = objects.get(name)
        return obj is None or (uid is not None and obj["metadata"].get("uid") != uid)

    return check


def _is(obj: dict[str, Any] | None, uid: str | None) -> bool:
    """`obj` exists and, when a uid is given, is that object (not an older one of its name a
    view a moment old may still show)."""
    return obj is not None and (uid is None or obj["metadata"].get("uid") == uid)


def pod_ready(name: str, uid: str | None = None) -> Predicate:
    return lambda objects: _is(objects.get(name), uid) and is_pod_ready(objects[name])


def pvc_bound(name: str, volume: str, uid: str | None = None) -> Predicate:
    def check(objects: Objects) -> bool:
        pvc = objects.get(name)
        return bool(
            _is(pvc, uid)
            and pvc is not None
            and pvc.get("status", {}).get("phase") == "Bound"
            and pvc["spec"].get("volumeName") == volume
        )

    return check


def no_attachment(pv_name: str) -> Predicate:
    """No VolumeAttachment refers to the PV: the attach/detach controller has let go of it."""

    def check(objects: Objects) -> bool:
        return not any(
            va.get("spec", {}).get("source", {}).get("persistentVolumeName") == pv_name for va in objects.values()
        )

    return check


def not_owned_by(uid: str, names: set[str]) -> Predicate:
    """None of the named pods carries an ownerReference to `uid` (the garbage collector has
    orphaned them)."""

    def check(objects: Objects) -> bool:
        return all(
            not any(ref.get("uid") == uid for ref in objects[n]["metadata"].get("ownerReferences") or [])
            for n in names
            if n in objects
        )

    return check


def statefulset_adopted_and_ready(uid: str, replicas: int, pod_names: set[str], pods: Objects) -> bool:
    """Every pod is Ready and owned by the StatefulSet `uid`."""
    for name in pod_names:
        pod = pods.get(name)
        if pod is None or not is_pod_ready(pod):
            return False
        if not any(
            ref.get("uid") == uid and ref.get("controller") for ref in pod["metadata"].get("ownerReferences") or []
        ):
            return False
    return len(pod_names) == replicas


def statefulset_ready(replicas: int) -> Predicate:
    def check(objects: Objects) -> bool:
        for sts in objects.values():
            status = sts.get("status", {})
            return bool(
                status.get("observedGeneration", 0) >= sts["metadata"].get("generation", 0)
                and status.get("readyReplicas", 0) == replicas
                and status.get("replicas", 0) == replicas
            )
        return False

    return check


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against an object's labels, as the API
    server reads one (metav1.LabelSelectorAsSelector): no selector at all (None, a null
    `selector`) selects nothing; an empty one (`{}`: no matchLabels, no matchExpressions) selects
    everything, as a PodDisruptionBudget's in policy/v1 does every pod of its namespace;
    otherwise every requirement must hold. An operator it does not know selects nothing (the API
    server rejects such a selector)."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            ok = False
        if not ok:
            return False
    return True


def writer_of(obj: dict[str, Any], path: tuple[str, ...] = ()) -> str | None:
    """Who last wrote `obj` (its managedFields): of the entries whose fields hold `path` (as
    fieldsV1 names it, `("f:spec", "f:replicas")`; empty: any), the latest's manager; None when
    the object carries no such entry (a backup, a server that keeps no managedFields)."""
    entries = []
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        fields: Any = entry.get("fieldsV1") or {}
        for key in path:
            fields = fields.get(key) if isinstance(fields, dict) else None
        if fields is not None and entry.get("manager"):
            entries.append(entry)
    if not entries:
        return None
    latest = max(entries, key=lambda e: e.get("time") or "")
    return str(latest["manager"])
