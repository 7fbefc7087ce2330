"""RBAC: the access each request needs, whether a request may change the cluster, and the
questions asked of the API server about this user's access (SelfSubjectAccessReview and
SelfSubjectRulesReview) with the evaluation of the rules it lists."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubectl_csi_migrate.errors import PermanentError
from kubectl_csi_migrate.kube.resources import RESOURCES, Obj, resource_path

Request = Callable[..., Any]
"""Kube.request: (method, path, query, body) -> the decoded answer."""

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def access_of(method: str, path: str, query: dict[str, Any] | None = None) -> tuple[str, str, str] | None:
    """The RBAC (verb, kind, subresource) a request needs, as REQUIRED_ACCESS names them; None
    for discovery and version requests, which every user may make."""
    parts = path.strip("/").split("/")
    # Namespaced kinds first: /api/v1/namespaces/NS/pods is a pod path, not namespace NS.
    for kind, (prefix, plural, namespaced) in sorted(RESOURCES.items(), key=lambda item: not item[1][2]):
        base = prefix.strip("/").split("/")
        if parts[: len(base)] != base:
            continue
        rest = parts[len(base) :]
        if namespaced and rest[:1] == ["namespaces"] and len(rest) > 2:
            rest = rest[2:]
        if rest[:1] != [plural]:
            continue
        named, sub = len(rest) > 1, rest[2] if len(rest) > 2 else ""
        if method == "GET":
            verb = "watch" if (query or {}).get("watch") else "get" if named else "list"
        else:
            verb = _VERBS.get(method, method.lower())
        return verb, kind, sub
    return None


NOT_A_CHANGE = frozenset({"Lease", "SelfSubjectAccessReview", "SelfSubjectRulesReview"})
"""Kinds a command writes without changing the cluster for its user: its own run's Lease (given
back at its end) and the questions preflight asks the API server."""


def may_change(method: str, access: tuple[str, str, str] | None, query: dict[str, Any] | None) -> bool:
    """Whether a request (its method, access_of, query) may change the cluster for the user."""
    if method == "GET" or (query or {}).get("dryRun"):
        return False
    return access is None or access[1] not in NOT_A_CHANGE


def can_i(request: Request, verb: str, kind: str, namespace: str | None = None, subresource: str = "") -> bool:
    prefix, plural, _ = RESOURCES[kind]
    group = "" if prefix == "/api/v1" else prefix.split("/")[2]
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "verb": verb,
                "group": group,
                "resource": plural,
                "namespace": namespace or "",
                "subresource": subresource,
            }
        },
    }
    result = request("POST", resource_path("SelfSubjectAccessReview"), None, review)
    return bool(result.get("status", {}).get("allowed"))


def rules(request: Request, namespace: str) -> list[Obj]:
    """The resource rules the API server lists for this user in `namespace` (one
    SelfSubjectRulesReview); [] when it cannot list them all (another authorizer than RBAC,
    or the review refused): then each access is asked about on its own (can_i)."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    try:
        result = request("POST", resource_path("SelfSubjectRulesReview"), None, review)
    except PermanentError:  # refused (forbidden): ask access by access
        return []
    status = result.get("status", {})
    return [] if status.get("incomplete") else list(status.get("resourceRules") or [])


def allows(rules: list[Obj], verb: str, kind: str, subresource: str = "") -> bool:
    """Whether one of `rules` (RBAC resource rules) grants `verb` on `kind` (by any name)."""
    prefix, plural, _ = RESOURCES[kind]
    group = "" if prefix == "/api/v1" else prefix.split("/")[2]
    resource = f"{plural}/{subresource}" if subresource else plural
    for rule in rules:
        if rule.get("resourceNames"):
            continue  # granted for some names only
        if not {"*", verb} & set(rule.get("verbs") or []):
            continue
        if not {"*", group} & set(rule.get("apiGroups") or []):
            continue
        resources = set(rule.get("resources") or [])
        if {"*", resource} & resources or (subresource and f"{plural}/*" in resources):
            return True
    return False
