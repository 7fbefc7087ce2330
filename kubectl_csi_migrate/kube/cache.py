"""Every object of one kind, listed once and kept current by a watch in a background thread (an
informer, in client-go's words).

A question over every object of a kind ("which PV names this disk?") asked once per volume would
list the whole kind each time: quadratic over a cluster of thousands of PVs. The cache lists once
and then follows the watch; a reader gets the objects as of a few milliseconds ago. Where acting
on a stale view matters, the reader reads the objects it finds again with a GET.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from kubectl_csi_migrate.kube.client import apply_event

if TYPE_CHECKING:
    from kubectl_csi_migrate.kube.client import Kube

Obj = dict[str, Any]
log = logging.getLogger("kubectl_csi_migrate.kube")

WATCH_WINDOW = 60.0
"""Each watch asks the API server to end after this long; the next one starts where it ended."""


class Cache:
    def __init__(self, kube: Kube, kind: str) -> None:
        self.kube = kube
        self.kind = kind
        self._lock = threading.Lock()
        self._objects: dict[str, Obj] | None = None  # None: not in sync (first use, or a broken watch)
        self._version: str | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def items(self) -> list[Obj]:
        """Every object of the kind: listed on first use (and after a watch broke), then kept
        current by the watch."""
        with self._lock:
            if self._objects is None:
                listing = self.kube.list_raw(self.kind)
                self._objects = {o["metadata"]["name"]: o for o in listing.get("items") or []}
                self._version = listing["metadata"].get("resourceVersion")
            if self._thread is None:
                self._thread = threading.Thread(target=self._follow, name=f"{self.kind.lower()}-cache", daemon=True)
                self._thread.start()
            return list(self._objects.values())

    def stop(self) -> None:
        """The watch ends at its next event or window (the thread is a daemon: nothing waits)."""
        self._stopped.set()

    def _follow(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                version = self._version if self._objects is not None else None
            if version is None:  # out of sync: the next reader lists again, then we follow on
                self._stopped.wait(0.5)
                continue
            try:
                events = self.kube._watch(self.kind, None, version, time.monotonic() + WATCH_WINDOW, None, None)
                for event in events:
                    if self._stopped.is_set():
                        return
                    self._apply(event)
                    if self._objects is None:
                        break
            except Exception as exc:  # any failure: list again on the next read
                log.debug("watch of %s ended: %s; listing again on the next read", self.kind, exc)
                with self._lock:
                    self._objects = None
                self._stopped.wait(1)

    def _apply(self, event: Obj) -> None:
        obj = event["object"]
        with self._lock:
            if self._objects is None:
                return
            if event["type"] == "ERROR":  # the version expired (410 Gone): list again
                self._objects = None
                return
            if event["type"] != "BOOKMARK":
                apply_event(self._objects, event)
            self._version = obj["metadata"].get("resourceVersion") or self._version
