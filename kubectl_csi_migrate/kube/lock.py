"""One run per StatefulSet: a coordination.k8s.io Lease in its namespace.

The holder is `<host>/<run id>`; the run id lives in the working directory, so a resumed run
(same directory) takes its own lease back at once, while another run is refused until the
holder's lease expires (60 s after its last renewal; a background thread renews it).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from datetime import UTC, datetime
from typing import Any

from kubectl_csi_migrate.errors import ConflictError, PermanentError
from kubectl_csi_migrate.kube.client import Kube, resource_path

LEASE_SECONDS = 60


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expired(spec: dict[str, Any]) -> bool:
    renew = spec.get("renewTime")
    if not renew:
        return True
    try:
        then = datetime.strptime(renew, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return True
    return (datetime.now(UTC) - then).total_seconds() > int(spec.get("leaseDurationSeconds") or LEASE_SECONDS)


class Lease:
    def __init__(self, kube: Kube, namespace: str, name: str, run_id: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name[:253]
        self.run_id = run_id
        self.host = socket.gethostname()
        self.holder = f"{self.host}/{run_id}/{os.getpid()}"
        self._stop = threading.Event()

    def acquire(self, what: str) -> None:
        ns, name, stamp = self.namespace, self.name, now()
        lease = self.kube.get("Lease", name, ns)
        spec = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": LEASE_SECONDS,
            "acquireTime": stamp,
            "renewTime": stamp,
        }
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": {"app.kubernetes.io/managed-by": "kubectl-csi-migrate"},
                },
                "spec": spec,
            }
            try:
                self.kube.create(body)
            except ConflictError as exc:
                raise PermanentError(f"another csi-migrate run on {what} just started") from exc
        else:
            current = lease.get("spec", {}).get("holderIdentity", "")
            if current and not self._may_take_over(current) and not expired(lease.get("spec", {})):
                raise PermanentError(
                    f"another csi-migrate run ({current}) holds lease {ns}/{name} on {what}; wait for it, or "
                    f"delete the lease if that run is dead (it expires {LEASE_SECONDS}s after its last renewal)"
                )
            lease["spec"] = {**lease.get("spec", {}), **spec}
            try:  # an update with the resourceVersion we read: a concurrent taker makes it fail
                self.kube.request("PUT", resource_path("Lease", ns, name), None, lease)
            except ConflictError as exc:
                raise PermanentError(f"lease {ns}/{name} was taken by another run") from exc
        threading.Thread(target=self._renew, daemon=True).start()

    def _may_take_over(self, current: str) -> bool:
        """A run on this host whose process is gone: it was killed, and nothing runs for it any
        more (this is its resume, or a new start with another working directory). A live
        process keeps the lease; a holder on another host keeps it until it expires."""
        host, _, rest = current.partition("/")
        _run_id, _, pid = rest.partition("/")
        if host != self.host or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return int(pid) == os.getpid()

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 4):
            with contextlib.suppress(Exception):  # the next renewal tries again
                self.kube.patch("Lease", self.name, {"spec": {"renewTime": now()}}, self.namespace)

    def release(self) -> None:
        """Give the lease back, if it is still ours (an expired one may have been taken)."""
        self._stop.set()
        with contextlib.suppress(Exception):  # an expired lease does no harm
            lease = self.kube.get("Lease", self.name, self.namespace)
            if lease is not None and lease.get("spec", {}).get("holderIdentity") == self.holder:
                self.kube.delete("Lease", self.name, self.namespace, uid=lease["metadata"]["uid"])
