"""Reads of the USER cluster for the tests, straight from its API server over a kept connection.

A `kubectl get` costs about 0.1 s of CPU (a Go program starting, its kubeconfig and discovery);
the e2e tests read objects thousands of times while the suite's workers share two cores, so
reads of the kinds below go to the API server directly (the admin's client certificate, one
connection per thread). Everything else, and any write, still goes through kubectl."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from typing import Any

from testenv import cluster

# kubectl's names of a kind -> (API group path, resource, namespaced)
_CORE, _APPS, _STORAGE = "api/v1", "apis/apps/v1", "apis/storage.k8s.io/v1"
_CNS, _SNAP = "apis/cns.vmware.com/v1alpha1", "apis/snapshot.storage.k8s.io/v1"
RESOURCES: dict[str, tuple[str, str, bool]] = {}
for names, where in (
    (("pod", "pods"), (_CORE, "pods", True)),
    (("pvc", "pvcs", "persistentvolumeclaim", "persistentvolumeclaims"), (_CORE, "persistentvolumeclaims", True)),
    (("pv", "pvs", "persistentvolume", "persistentvolumes"), (_CORE, "persistentvolumes", False)),
    (("secret", "secrets"), (_CORE, "secrets", True)),
    (("configmap", "configmaps", "cm"), (_CORE, "configmaps", True)),
    (("event", "events"), (_CORE, "events", True)),
    (("node", "nodes"), (_CORE, "nodes", False)),
    (("namespace", "namespaces", "ns"), (_CORE, "namespaces", False)),
    (("statefulset", "statefulsets", "sts"), (_APPS, "statefulsets", True)),
    (("deployment", "deployments", "deploy"), (_APPS, "deployments", True)),
    (("replicaset", "replicasets", "rs"), (_APPS, "replicasets", True)),
    (("lease", "leases"), ("apis/coordination.k8s.io/v1", "leases", True)),
    (("poddisruptionbudget", "poddisruptionbudgets", "pdb"), ("apis/policy/v1", "poddisruptionbudgets", True)),
    (("csinode", "csinodes"), (_STORAGE, "csinodes", False)),
    (("csidriver", "csidrivers"), (_STORAGE, "csidrivers", False)),
    (("volumeattachment", "volumeattachments"), (_STORAGE, "volumeattachments", False)),
    (("storageclass", "storageclasses", "sc"), (_STORAGE, "storageclasses", False)),
    (("cnsvspherevolumemigration", "cnsvspherevolumemigrations"), (_CNS, "cnsvspherevolumemigrations", False)),
    (("volumesnapshot", "volumesnapshots"), (_SNAP, "volumesnapshots", True)),
    (("volumesnapshotcontent", "volumesnapshotcontents"), (_SNAP, "volumesnapshotcontents", False)),
):
    for name in names:
        RESOURCES[name] = where


class NotFound(RuntimeError):
    pass


_local = threading.local()


def _connection(env: cluster.Env) -> http.client.HTTPSConnection:
    port = int(env.info()["ports"]["user"])
    conn: http.client.HTTPSConnection | None = getattr(_local, "conn", None)
    if conn is None or getattr(_local, "port", None) != port:
        context = ssl.create_default_context(cafile=str(env.pki / "ca.crt"))
        context.load_cert_chain(env.pki / "admin.crt", env.pki / "admin.key")
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=60)
        _local.conn, _local.port = conn, port
    return conn


def knows(kind: str) -> bool:
    return kind.lower() in RESOURCES


def _request(env: cluster.Env, path: str) -> tuple[int, bytes]:
    for attempt in (1, 2):
        conn = _connection(env)
        try:
            conn.request("GET", path, headers={"Accept": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        except (http.client.HTTPException, OSError):
            conn.close()
            _local.conn = None  # the API server restarted, or the connection was idle too long
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def get(env: cluster.Env, kind: str, name: str = "", namespace: str | None = None) -> Any:
    """As `kubectl get KIND [NAME] [-n NAMESPACE] -o json`: one object, or a list whose items
    carry their apiVersion and kind as kubectl shows them. NotFound for a missing object."""
    group, resource, namespaced = RESOURCES[kind.lower()]
    path = f"/{group}/"
    if namespaced:
        path += f"namespaces/{namespace or 'default'}/"
    path += resource + (f"/{name}" if name else "")
    deadline = time.monotonic() + 60
    while True:
        status, body = _request(env, path)
        if status in (429, 503) and time.monotonic() < deadline:
            # as client-go does: "storage is (re)initializing" (a CRD just created), a restart
            time.sleep(1)
            continue
        break
    if status == 404:
        raise NotFound(f"{kind} {name} not found")
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {body[:500]!r}")
    data = json.loads(body)
    if not name:  # a list: its items carry no apiVersion and kind; kubectl's output does
        item_kind = data.get("kind", "").removesuffix("List")
        for item in data.get("items") or []:
            item.setdefault("apiVersion", data.get("apiVersion"))
            item.setdefault("kind", item_kind)
        data["items"] = data.get("items") or []
    return data
