"""Every object of one kind, listed once and kept current by a watch in a background thread (an
informer, in client-go's words).

A question over every object of a kind ("which PV names this disk?") asked once per volume would
list the whole kind each time: quadratic over a cluster of thousands of PVs. The cache lists once
and then follows the watch; a reader gets the objects as of a few milliseconds ago. Where acting
on a stale view matters, the reader reads the objects it finds again with a GET.

A wait on a cached kind (`wait_until`: a pod gone, a claim Bound) is a predicate over the view,
evaluated again at each event the watch brings: no request of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from kubectl_csi_migrate.errors import TemporaryError
from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.kube.watch import apply_event

log = logging.getLogger("kubectl_csi_migrate.kube")


class Source(Protocol):
    """What a Cache needs of Kube (kube/client.py): a list, and a watch from its version."""

    def list_raw(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Obj: ...

    def _watch(
        self,
        kind: str,
        namespace: str | None,
        version: str | None,
        deadline: float,
        field_selector: str | None,
        label_selector: str | None,
        initial: bool = False,
    ) -> Iterator[Obj]: ...


WATCH_WINDOW = 60.0
"""Each watch asks the API server to end after this long; the next one starts where it ended."""


class Cache:
    def __init__(self, kube: Source, kind: str, namespace: str | None = None, follow: bool = True) -> None:
        self.kube = kube
        self.kind = kind
        self.namespace = namespace
        """Of that namespace only (None: every object of the kind)."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified at each change of the view
        self._generation = 0
        self._objects: dict[str, Obj] | None = None  # None: not in sync (first use, or a broken watch)
        self._version: str | None = None
        self._follow_watch = follow  # False: events only as given to _apply (unit tests)
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()  # the running follower's

    def items(self) -> list[Obj]:
        """Every object of the kind: listed on first use (and after a watch broke), then kept
        current by the watch."""
        return list(self._view()[1].values())

    def _view(self) -> tuple[int, dict[str, Obj]]:
        with self._lock:
            if self._thread is None and self._follow_watch:
                self._objects = None  # first use, or used again after stop(): list afresh, then follow
            if self._objects is None:
                listing = self.kube.list_raw(self.kind, self.namespace)
                self._objects = {o["metadata"]["name"]: o for o in listing.get("items") or []}
                self._version = listing["metadata"].get("resourceVersion")
                self._generation += 1
            if self._thread is None and self._follow_watch:
                self._stopped = threading.Event()
                name = f"{self.kind.lower()}-cache"
                self._thread = threading.Thread(target=self._follow, args=(self._stopped,), name=name, daemon=True)
                self._thread.start()
            return self._generation, dict(self._objects)

    def wait_until(
        self,
        predicate: Callable[[dict[str, Obj]], bool],
        what: str,
        timeout: float,
        select: Callable[[Obj], bool] = lambda _obj: True,
        tick: Callable[[float], None] | None = None,
        tick_every: float = 30.0,
    ) -> dict[str, Obj]:
        """Until `predicate(the selected objects by name)` holds on the view; those objects. As
        Kube.watch_until, without a request of its own: the view is what the watch brought."""
        started = time.monotonic()
        deadline, next_tick = started + timeout, started + tick_every
        while True:
            generation, objects = self._view()
            selected = {name: obj for name, obj in objects.items() if select(obj)}
            if predicate(selected):
                return selected
            now = time.monotonic()
            if now >= deadline:
                raise TemporaryError(f"timed out after {timeout:.0f}s waiting for {what}")
            if tick is not None and now >= next_tick:
                tick(now - started)
                next_tick = now + tick_every
            with self._changed:  # the next event (a second at most: a broken watch lists again)
                if self._generation == generation:
                    self._changed.wait(min(1.0, deadline - now))

    def stop(self) -> None:
        """The watch ends at its next event or window (the thread is a daemon: nothing waits).
        A later use lists again and follows a new watch."""
        with self._lock:
            self._stopped.set()
            self._thread = None

    def _follow(self, stopped: threading.Event) -> None:
        while not stopped.is_set():
            with self._lock:
                version = self._version if self._objects is not None else None
            if version is None:  # out of sync: the next reader lists again, then we follow on
                stopped.wait(0.5)
                continue
            try:
                deadline = time.monotonic() + WATCH_WINDOW
                events = self.kube._watch(self.kind, self.namespace, version, deadline, None, None)
                for event in events:
                    if stopped.is_set():
                        return
                    self._apply(event, stopped)
                    if self._objects is None:
                        break
            except Exception as exc:  # any failure: list again on the next read
                log.debug("watch of %s ended: %s; listing again on the next read", self.kind, exc)
                with self._lock:
                    self._out_of_sync()
                stopped.wait(1)

    def _apply(self, event: Obj, stopped: threading.Event | None = None) -> None:
        obj = event["object"]
        with self._lock:
            if self._objects is None or (stopped is not None and stopped.is_set()):
                return  # out of sync, or an event of a watch stopped since (a new one follows)
            if event["type"] == "ERROR":  # the version expired (410 Gone): list again
                self._out_of_sync()
                return
            if event["type"] != "BOOKMARK":
                apply_event(self._objects, event)
                self._generation += 1
                self._changed.notify_all()
            self._version = obj["metadata"].get("resourceVersion") or self._version

    def _out_of_sync(self) -> None:
        """(The lock held.) The next reader, or waiter, lists again."""
        self._objects = None
        self._generation += 1
        self._changed.notify_all()


def selector(field_selector: str | None, label_selector: str | None) -> Callable[[Obj], bool] | None:
    """The objects a server-side selector would return, chosen from a view: `metadata.name=N`
    and `key=value,...` labels; None for any other selector (then ask the server)."""
    name = None
    if field_selector:
        key, _, value = field_selector.partition("=")
        if key != "metadata.name" or not value or "," in value or value.startswith("="):
            return None
        name = value
    labels: dict[str, str] = {}
    for term in (label_selector or "").split(","):
        if not term:
            continue
        key, eq, value = term.partition("=")
        if not eq or not key or value.startswith("=") or key.endswith("!") or any(c in term for c in " ()"):
            return None
        labels[key] = value

    def chosen(obj: Obj) -> bool:
        meta = obj.get("metadata", {})
        if name is not None and meta.get("name") != name:
            return False
        have = meta.get("labels") or {}
        return all(have.get(k) == v for k, v in labels.items())

    return chosen
