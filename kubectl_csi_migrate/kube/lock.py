"""One run per owner: a coordination.k8s.io Lease in its namespace, named by the run's key.

The Lease names the owner it locks in an annotation (`csi-migrate.kubectl.io/owner:
StatefulSet/web`): a Lease of that name that names another owner (an earlier release's key,
which another owner's key may equal) is refused, never waited for or taken over. The holder is
`<host>/<run id>/<pid>`. No clock is compared with another machine's: a lease
held by someone else counts as abandoned only when this run has watched it go unrenewed for a
whole lease duration on its own clock (as client-go's leader election decides), and the holder
counts its own lease as held only for a lease duration after its last successful renewal, on its
own boot-time clock (which keeps counting while a laptop sleeps). A run that has lost its lease,
or cannot tell whether it still holds it, stops before its next change: `check` is called before
every mutation the client sends.

A run also holds the Lease of each disruption budget covering a pod it takes down
(migration/budget.py): those ride on the run's own (`riders`), renewed by its thread and checked
with it, and are taken with `try_acquire`, the same rules one attempt at a time, so that the run
can wait for a live holder, up to its `--timeout`, instead of refusing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubectl_csi_migrate.errors import ConflictError, CsiMigrateError, KeyClash, NotFoundError, PermanentError
from kubectl_csi_migrate.host import alive, this_host
from kubectl_csi_migrate.kube.client import Kube, resource_path

LEASE_SECONDS = 60
OWNER = "csi-migrate.kubectl.io/owner"
"""The Lease's annotation naming the owner it locks: `<kind>/<name>`."""
RENEW_SECONDS = LEASE_SECONDS / 4
log = logging.getLogger("kubectl_csi_migrate.lock")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def clock() -> float:
    """Seconds on a clock that never goes back and keeps counting through a suspend."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic()


class Lease:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        run_id: str,
        say: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        owner: str = "",
        annotations: dict[str, str] | None = None,
        guards: str = "this StatefulSet",
    ) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name[:253]
        self.owner = owner
        """`<kind>/<name>` of the owner this Lease locks (its OWNER annotation)."""
        self.annotations = {**({OWNER: owner} if owner else {}), **(annotations or {})}
        """Written on the Lease when this run creates or takes it (OWNER, and any given)."""
        self.guards = guards
        """What another run may be doing once this one lost the Lease (its stop message)."""
        self.riders: list[Lease] = []
        """Leases held as long as this one (a run's disruption budget Leases): renewed by this
        one's thread, checked with it before every change."""
        self._watched: tuple[Any, float] | None = None
        """try_acquire: (resourceVersion, clock()) of another holder's Lease as first seen unchanged."""
        self.run_id = run_id
        self.host = this_host()
        self.holder = f"{self.host}/{run_id}/{os.getpid()}"
        self.say = say or (lambda _line: None)
        self.sleep = sleep
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._renewed = 0.0  # clock() when the last successful renewal was sent
        self._lost = ""
        self._thread: threading.Thread | None = None
        self._held: dict[str, Any] | None = None
        """The Lease as this run last wrote it: renewed and given back with its resourceVersion
        as a precondition, so no read comes first (another writer's change makes it fail)."""

    # -- taking it ------------------------------------------------------------------------------

    def acquire(self, what: str) -> None:
        """Created first (no read: a Lease of that name there already answers 409, and is then
        read); another holder's is taken over only once seen abandoned."""
        ns, name = self.namespace, self.name
        sent = clock()
        if not self._create():
            lease = self.kube.get("Lease", name, ns)
            if lease is None:
                raise PermanentError(
                    f"another csi-migrate run on {what} just gave its lease back; run the same command again"
                ) from None
            self.check_owner(lease, what)
            current = lease.get("spec", {}).get("holderIdentity", "")
            if current and current != self.holder and not self._may_take_over(current):
                lease = self._wait_abandoned(lease, current, what)
            sent = clock()
            try:  # an update with the resourceVersion we read: a concurrent taker makes it fail
                self._take(lease)
            except ConflictError as exc:
                raise PermanentError(f"lease {ns}/{name} was taken by another run") from exc
        self._renewed = sent
        self._thread = threading.Thread(target=self._renew_loop, daemon=True)
        self._thread.start()

    def try_acquire(self, what: str) -> dict[str, Any] | None:
        """One attempt, never waiting, by `acquire`'s rules, for a run that waits on its own
        terms (migration/budget.py calls it again and again): None once the Lease is this run's
        (created; or taken over: one without a holder or whose holder's process is gone from
        this host at once, any other once these calls have seen it unchanged for a whole lease
        duration on this run's clock); else the Lease as read, held by another ({}: it was given
        back meanwhile). Starts no renewal thread: the run's own Lease renews it (`riders`)."""
        ns, name = self.namespace, self.name
        sent = clock()
        lease = self.kube.get("Lease", name, ns) if self._watched else None  # seen held: read first
        if lease is None:
            if self._create():
                self._renewed, self._watched = sent, None
                return None
            lease = self.kube.get("Lease", name, ns)
            if lease is None:
                self._watched = None
                return {}
        self.check_owner(lease, what)
        current = lease.get("spec", {}).get("holderIdentity", "")
        if current and current != self.holder and not self._may_take_over(current):
            version = lease["metadata"].get("resourceVersion")
            duration = float(lease.get("spec", {}).get("leaseDurationSeconds") or LEASE_SECONDS)
            if self._watched is None or self._watched[0] != version:
                self._watched = (version, clock())  # renewed (or first seen): watched afresh
                return lease
            if clock() - self._watched[1] < duration:
                return lease
            self.say(f"lease {ns}/{name} was not renewed for {duration:.0f}s: its holder {current} is gone; taking it")
        sent = clock()
        try:
            self._take(lease)
        except ConflictError:  # another run was quicker
            self._watched = None
            return lease
        self._renewed, self._watched = sent, None
        return None

    def _create(self) -> bool:
        """Create the Lease held by this run: False when one of that name exists (409)."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "kubectl-csi-migrate"},
                **({"annotations": dict(self.annotations)} if self.annotations else {}),
            },
            "spec": self._spec(acquired=True),
        }
        try:
            self._held = self.kube.request("POST", resource_path("Lease", self.namespace), None, body)
        except ConflictError:
            return False
        return True

    def _take(self, lease: dict[str, Any]) -> None:
        """Take `lease` as read (its resourceVersion a precondition: ConflictError if changed)."""
        if self.annotations:
            lease["metadata"].setdefault("annotations", {}).update(self.annotations)
        lease["spec"] = {**lease.get("spec", {}), **self._spec(acquired=True)}
        path = resource_path("Lease", self.namespace, self.name)
        self._held = self.kube.request("PUT", path, None, lease)

    def check_owner(self, lease: dict[str, Any], what: str) -> None:
        """Refuse a Lease of this name that locks another owner (its OWNER annotation; one
        without, an earlier release's, is taken as this owner's)."""
        theirs = owner_of_lease(lease)
        if self.owner and theirs and theirs != self.owner:
            raise KeyClash(
                f"lease {self.namespace}/{self.name} locks the runs of {theirs}, not of {what}: "
                "two owners' runs cannot share it; let that run finish or roll it back first; nothing was changed"
            )

    def _spec(self, acquired: bool = False) -> dict[str, Any]:
        stamp = now()
        spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": stamp,
        }
        if acquired:
            spec["acquireTime"] = stamp
        return spec

    def _wait_abandoned(self, lease: dict[str, Any], current: str, what: str) -> dict[str, Any]:
        """Watch another holder's lease for a lease duration on our own clock: renewed in that
        time, it is refused; left alone, it is abandoned and returned to be taken over."""
        ns, name = self.namespace, self.name
        duration = float(lease.get("spec", {}).get("leaseDurationSeconds") or LEASE_SECONDS)
        self.say(
            f"lease {ns}/{name} is held by {current}; watching whether it is still renewed (up to {duration:.0f}s)"
        )
        version = lease["metadata"].get("resourceVersion")
        started = clock()
        while clock() - started < duration:
            self.sleep(min(2.0, max(0.1, duration / 30)))
            seen = self.kube.get("Lease", name, ns)
            if seen is None:
                raise PermanentError(f"lease {ns}/{name} was released by {current}; run the same command again")
            if seen["metadata"].get("resourceVersion") != version:
                holder = seen.get("spec", {}).get("holderIdentity") or current
                raise PermanentError(
                    f"another csi-migrate run ({holder}) holds lease {ns}/{name} on {what} and renews it; wait "
                    f"for it to finish (a dead run's lease is taken over once unrenewed for {duration:.0f}s)"
                )
        self.say(f"lease {ns}/{name} was not renewed for {duration:.0f}s: its holder {current} is gone; taking it")
        return lease

    def _may_take_over(self, current: str) -> bool:
        """A run whose process this one can see (same machine, same pid namespace: host.alive)
        and that is gone: it was killed, and nothing runs for it any more (this is its resume, or
        a new start with another working directory). A live process keeps the lease; a holder
        elsewhere (another machine, another container of the same hostname) keeps it until seen
        abandoned."""
        holder_host, _, rest = current.partition("/")
        _run_id, _, pid = rest.partition("/")
        if not pid.isdigit():
            return False
        if int(pid) == os.getpid() and holder_host == self.host:
            return True
        return alive(holder_host, int(pid)) is False

    # -- keeping it -----------------------------------------------------------------------------

    def _renew_loop(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            self.renew()
            for rider in list(self.riders):
                rider.renew()

    def renew(self) -> None:
        """Renew if the lease is still ours: an update of the version this run last wrote (read
        first only when it has none, or someone else changed the Lease since); note it as lost
        when someone else holds it. Errors are logged; `check` judges their effect."""
        with self._lock:
            if self._lost or self._stop.is_set():
                return
            ns, name = self.namespace, self.name
            try:
                lease = self._held or self.kube.get("Lease", name, ns)
                holder = (lease or {}).get("spec", {}).get("holderIdentity")
                if lease is None or holder != self.holder:
                    self._lost = "deleted" if lease is None else f"held by {holder}"
                    return
                lease["spec"]["renewTime"] = now()
                sent = clock()
                self._held = None  # unknown until the update answers
                self._held = self.kube.request("PUT", resource_path("Lease", ns, name), None, lease)
                self._renewed = sent
            except NotFoundError:
                self._lost = "deleted"
            except ConflictError:
                log.info("lease %s/%s changed while renewing; reading it again next time", ns, name)
            except CsiMigrateError as exc:
                log.info("cannot renew lease %s/%s: %s", ns, name, exc)

    def check(self) -> None:
        """Raise unless the lease (and each rider) is still ours for a while: called before
        every change."""
        self._check()
        for rider in list(self.riders):
            rider._check()

    def _check(self) -> None:
        if clock() - self._renewed > RENEW_SECONDS:
            self.renew()  # the renewal thread is late (a stopped process, a slow API): ask now
        what = f"lease {self.namespace}/{self.name}"
        if self._lost:
            raise PermanentError(
                f"this run lost its {what} (now {self._lost}) and stopped before its next change; another "
                f"run may be migrating {self.guards}: let it finish, then run the same command again"
            )
        if clock() - self._renewed > LEASE_SECONDS * 0.8:
            raise PermanentError(
                f"{what} could not be renewed for {clock() - self._renewed:.0f}s; this run stopped before its "
                "next change, as another run may take the lease over. Run the same command again"
            )

    def release(self) -> None:
        """Give the lease back, if it is still ours (an abandoned one may have been taken)."""
        self._stop.set()
        with self._lock:
            path = resource_path("Lease", self.namespace, self.name)
            try:
                if self._held is not None:  # the version this run wrote last: deleted only if unchanged
                    try:
                        self.kube.request("DELETE", path, None, _preconditions(self._held))
                        return
                    except ConflictError:
                        pass  # changed since by someone else: is it still ours?
                lease = self.kube.get("Lease", self.name, self.namespace)
                if lease is not None and lease.get("spec", {}).get("holderIdentity") == self.holder:
                    self.kube.request("DELETE", path, None, _preconditions(lease))
            except NotFoundError:
                pass
            except CsiMigrateError as exc:  # an unreleased lease is taken over once abandoned
                log.info("lease %s/%s not released: %s", self.namespace, self.name, exc)


def owner_of_lease(lease: dict[str, Any]) -> str:
    """`<kind>/<name>` of the owner a Lease locks; "" when it does not say (an earlier release's)."""
    return str((lease.get("metadata", {}).get("annotations") or {}).get(OWNER) or "")


def _preconditions(lease: dict[str, Any]) -> dict[str, Any]:
    """DeleteOptions for that very version of the Lease."""
    meta = lease["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
    }
