"""Roles for the e2e tests' limited users (token users of the test environment, one per test that
grants something, so that such tests run side by side), built
from the code's own list of what a migration needs (REQUIRED_ACCESS)."""

from __future__ import annotations

from typing import Any

from kubectl_csi_migrate.kube.client import RESOURCES
from kubectl_csi_migrate.migration.driver import DRIVER_NAMESPACES
from kubectl_csi_migrate.migration.kinds import REQUIRED_ACCESS

RBAC = "rbac.authorization.k8s.io"
Access = tuple[str, str, str]


def _rule(verbs: list[str], kind: str, sub: str = "") -> dict[str, Any]:
    prefix, plural, _ = RESOURCES[kind]
    group = "" if prefix == "/api/v1" else prefix.split("/")[2]
    return {"apiGroups": [group], "resources": [plural + (f"/{sub}" if sub else "")], "verbs": verbs}


def bound_roles(ns: str, name: str, cluster_rules: list[Any], ns_rules: list[Any], user: str) -> list[dict[str, Any]]:
    """A ClusterRole and a Role in `ns` with these rules, each bound to `user`."""
    subject = [{"kind": "User", "name": user, "apiGroup": RBAC}]
    docs = []
    for kind, rules, where in (("ClusterRole", cluster_rules, None), ("Role", ns_rules, ns)):
        meta: dict[str, Any] = {"name": name, **({"namespace": where} if where else {})}
        binding = "RoleBinding" if kind == "Role" else "ClusterRoleBinding"
        docs.append({"apiVersion": f"{RBAC}/v1", "kind": kind, "metadata": meta, "rules": rules})
        docs.append(
            {"apiVersion": f"{RBAC}/v1", "kind": binding, "metadata": meta, "subjects": subject,
             "roleRef": {"apiGroup": RBAC, "kind": kind, "name": name}}
        )  # fmt: skip
    return docs


def preflight_reads() -> list[dict[str, Any]]:
    """What preflight reads beyond REQUIRED_ACCESS (cluster-wide rules)."""
    return [
        _rule(["get", "list"], "Node"),
        _rule(["get"], "Secret"),
        _rule(["get", "list"], "CSIDriver"),
        _rule(["get", "list"], "CSINode"),
        _rule(["create"], "SelfSubjectAccessReview"),
        _rule(["create"], "SelfSubjectRulesReview"),
    ]


def exact_roles(ns: str, access: list[Access], user: str) -> list[dict[str, Any]]:
    """Exactly `access` (one verb per rule) plus what preflight reads, and `get leases` in the
    CSI driver's namespace (a Role there, so that it grants no lease verb in `ns`)."""
    cluster_rules, ns_rules = preflight_reads(), []
    for verb, kind, sub in access:
        (ns_rules if RESOURCES[kind][2] else cluster_rules).append(_rule([verb], kind, sub))
    docs = bound_roles(ns, f"csi-migrate-exact-{ns}", cluster_rules, ns_rules, user)
    driver = bound_roles(DRIVER_NAMESPACES[0], f"csi-migrate-driver-{ns}", [], [_rule(["get"], "Lease")], user)
    return docs + [d for d in driver if d["kind"] in ("Role", "RoleBinding")]


def full_access_role(ns: str, user: str) -> list[dict[str, Any]]:
    """Everything a migration needs (reads of every kind it touches, the changes it makes)."""
    read = ["get", "list", "watch"]
    cluster_rules: list[dict[str, Any]] = []
    ns_rules: list[dict[str, Any]] = []
    for verb, kind, sub in REQUIRED_ACCESS:
        (ns_rules if RESOURCES[kind][2] else cluster_rules).append(_rule([verb, *read], kind, sub))
    cluster_rules += [*preflight_reads(), _rule(read, "Lease")]
    return bound_roles(ns, f"csi-migrate-full-{ns}", cluster_rules, ns_rules, user)
