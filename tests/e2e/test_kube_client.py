"""The tool's Kubernetes client against the real API servers of the environment: the user
cluster's (Kubernetes 1.36: a watch streams its initial state) and the admin cluster's, started
with WatchList off as API servers before 1.34 run."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from kubectl_csi_migrate.kube.client import Kube
from testenv import cluster

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("which, streams", [("user_kubeconfig", True), ("admin_kubeconfig", False)])
def test_a_wait_is_one_request_where_the_server_streams_the_initial_state_else_a_list_and_a_watch(
    env: cluster.Env, which: str, streams: bool
) -> None:
    kube = Kube.from_kubeconfig(env.info()[which])
    ns = "default"
    present = f"present-{uuid.uuid4().hex[:6]}"
    later = f"later-{uuid.uuid4().hex[:6]}"
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": present, "namespace": ns}})
    try:
        # An object already there: one watch (its initial state), or a refused watch list and a list.
        before = kube.requests
        found = kube.watch_until(
            "ConfigMap", lambda objs: present in objs, "the config map", 20, ns, f"metadata.name={present}"
        )
        assert present in found
        assert kube.watch_list == {"ConfigMap": streams}
        assert kube.requests - before == (1 if streams else 2)

        # An object that comes a moment later: one watch, or a list and a watch.
        def create_later() -> None:
            time.sleep(1)
            creator = Kube.from_kubeconfig(env.info()[which])
            creator.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": later, "namespace": ns}})

        thread = threading.Thread(target=create_later)
        thread.start()
        before = kube.requests
        found = kube.watch_until(
            "ConfigMap", lambda objs: later in objs, "the later config map", 20, ns, f"metadata.name={later}"
        )
        thread.join()
        assert later in found
        assert kube.requests - before == (1 if streams else 2)

        # Gone: the wait sees the deletion.
        kube.delete("ConfigMap", later, ns)
        gone = kube.watch_until(
            "ConfigMap", lambda objs: later not in objs, "the deletion", 20, ns, f"metadata.name={later}"
        )
        assert later not in gone
    finally:
        for name in (present, later):
            if kube.get("ConfigMap", name, ns) is not None:
                kube.delete("ConfigMap", name, ns)
