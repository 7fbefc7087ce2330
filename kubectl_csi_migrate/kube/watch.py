"""Waits by watch: the two algorithms (a watch list, where the API server streams a watch's
initial state; else a list, then a watch from its version) and the watch stream itself."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from kubectl_csi_migrate.errors import CsiMigrateError, PermanentError, TemporaryError
from kubectl_csi_migrate.kube.resources import Obj, resource_path

log = logging.getLogger("kubectl_csi_migrate.kube")


class Client(Protocol):
    """What a wait needs of Kube."""

    watch_list: dict[str, bool]

    def list_raw(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Obj: ...

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        stream: bool = False,
        timeout: float | None = None,
    ) -> Any: ...


def apply_event(objects: dict[str, Obj], event: Obj) -> None:
    """A watch event (ADDED, MODIFIED, DELETED) applied to `objects` by name."""
    obj = event["object"]
    if event["type"] == "DELETED":
        objects.pop(obj["metadata"]["name"], None)
    else:
        objects[obj["metadata"]["name"]] = obj


def watch_until(
    kube: Client,
    kind: str,
    predicate: Callable[[dict[str, Obj]], bool],
    what: str,
    timeout: float,
    namespace: str | None = None,
    field_selector: str | None = None,
    label_selector: str | None = None,
    tick: Callable[[float], None] | None = None,
    tick_every: float = 30.0,
) -> dict[str, Obj]:
    """Kube.watch_until (its docstring says what it does)."""
    started = time.monotonic()
    deadline = started + timeout
    next_tick = started + tick_every
    if kube.watch_list.get(kind) is not False:
        try:
            return watch_list_until(
                kube, kind, predicate, what, timeout, namespace, field_selector, label_selector, tick, tick_every
            )
        except PermanentError as exc:
            if kube.watch_list.get(kind):
                raise
            # An API server before watch lists refuses the parameters: list, then watch.
            log.debug("no watch list (%s): a list, then a watch, for each wait", exc)
            kube.watch_list[kind] = False
    while True:
        if tick is not None and time.monotonic() >= next_tick:
            tick(time.monotonic() - started)
            next_tick = time.monotonic() + tick_every
        listing = kube.list_raw(kind, namespace, label_selector, field_selector)
        objects = {o["metadata"]["name"]: o for o in listing.get("items") or []}
        if predicate(objects):
            return objects
        version = listing["metadata"].get("resourceVersion")
        until = min(deadline, next_tick) if tick is not None else deadline
        try:
            for event in watch(kube, kind, namespace, version, until, field_selector, label_selector):
                if event["type"] == "ERROR":
                    break  # expired resourceVersion: list again
                if event["type"] == "BOOKMARK":
                    continue
                apply_event(objects, event)
                if predicate(objects):
                    return objects
        except TemporaryError:
            if time.monotonic() >= deadline:
                raise
        if time.monotonic() >= deadline:
            raise TemporaryError(f"timed out after {timeout:.0f}s waiting for {what}")


def watch_list_until(
    kube: Client,
    kind: str,
    predicate: Callable[[dict[str, Obj]], bool],
    what: str,
    timeout: float,
    namespace: str | None,
    field_selector: str | None,
    label_selector: str | None,
    tick: Callable[[float], None] | None,
    tick_every: float,
) -> dict[str, Obj]:
    """watch_until in one request per watch: the watch first streams the objects as they are
    (ADDED events, then a bookmark marking the end of that initial state), then changes."""
    started = time.monotonic()
    deadline = started + timeout
    next_tick = started + tick_every
    while True:
        if tick is not None and time.monotonic() >= next_tick:
            tick(time.monotonic() - started)
            next_tick = time.monotonic() + tick_every
        until = min(deadline, next_tick) if tick is not None else deadline
        if kind not in kube.watch_list:
            until = min(until, time.monotonic() + 5)  # a server that supports it marks the end at once
        objects: dict[str, Obj] = {}
        synced = False
        try:
            for event in watch(kube, kind, namespace, None, until, field_selector, label_selector, initial=True):
                obj = event["object"]
                if event["type"] == "ERROR":
                    break  # watch again, from a fresh initial state
                if event["type"] == "BOOKMARK":
                    annotations = obj.get("metadata", {}).get("annotations") or {}
                    if annotations.get("k8s.io/initial-events-end") == "true":
                        synced = True
                        kube.watch_list[kind] = True
                        if predicate(objects):
                            return objects
                    continue
                apply_event(objects, event)
                if synced and predicate(objects):
                    return objects
        except TemporaryError:
            if time.monotonic() >= deadline:
                raise
        if not synced and kind not in kube.watch_list:
            # Parameters accepted but no initial state marked: a server that ignores them.
            raise PermanentError("the API server did not mark the end of a watch's initial state")
        if time.monotonic() >= deadline:
            raise TemporaryError(f"timed out after {timeout:.0f}s waiting for {what}")


def watch(
    kube: Client,
    kind: str,
    namespace: str | None,
    version: str | None,
    deadline: float,
    field_selector: str | None,
    label_selector: str | None,
    initial: bool = False,
) -> Iterator[Obj]:
    """The events of one watch (from `version`; with `initial`, a watch list), until the API
    server ends it or `deadline` passes."""
    remaining = max(1, int(deadline - time.monotonic()))
    query = {
        "watch": "1",
        "resourceVersion": version,
        "allowWatchBookmarks": "true",
        "timeoutSeconds": str(remaining),
        "fieldSelector": field_selector,
        "labelSelector": label_selector,
    }
    if initial:
        query |= {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"}
    resp = kube.request("GET", resource_path(kind, namespace), query, stream=True, timeout=remaining + 5)
    try:
        buffer = b""
        for chunk in resp.stream(4096, decode_content=False):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
            if time.monotonic() >= deadline:
                return
    except Exception as exc:
        if isinstance(exc, CsiMigrateError):
            raise
        raise TemporaryError(f"watch of {kind} interrupted: {exc}") from exc
    finally:
        resp.release_conn()
