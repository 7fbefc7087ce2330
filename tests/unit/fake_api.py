"""A small fake Kubernetes API server for the client's HTTP-level unit tests (fake data only).

It serves one kind of each collection it is asked about (lists, gets, creates, merge patches,
deletes) and watches in both forms: from a resourceVersion (events after it, or an ERROR event
with a 410 Gone Status when that version is older than `expired_before`) and as a watch list
(`sendInitialEvents=true`: the objects as ADDED events, then a BOOKMARK marking the end of the
initial state, then changes), unless `watch_list` is False (then such a watch is refused with 422,
as an API server without the WatchList feature refuses it).

Misbehaviour on demand, for what a real cluster does not do when asked:
- `stall_watches`: that many watches send their headers and then nothing at all;
- `drop_requests`: that many requests are read and the connection closed without an answer;
- `start(listening=False)`: the port is bound but not listening (connections are refused) until
  `listen()`.

Every request is logged in `requests` (method, path, query) in the order it came.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

Obj = dict[str, Any]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]

    @property
    def watch(self) -> bool:
        return self.query.get("watch") == "1"

    @property
    def watch_list(self) -> bool:
        return self.watch and self.query.get("sendInitialEvents") == "true"


class FakeApi:
    def __init__(self, watch_list: bool = True) -> None:
        self.watch_list = watch_list
        self.stall_watches = 0
        self.drop_requests = 0
        self.expired_before = 0
        """A watch from a resourceVersion older than this gets 410 Gone (as an ERROR event)."""
        self.on_watch: Callable[[Seen], None] | None = None
        """Called as each watch request comes, before it is answered."""
        self.requests: list[Seen] = []
        self._collections: dict[str, dict[str, Obj]] = {}
        self._events: list[tuple[int, str, str, Obj]] = []  # (version, collection, type, object)
        self._version = 100
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._sock: socket.socket | None = None

    # -- life ------------------------------------------------------------------------------

    def start(self, listening: bool = True) -> FakeApi:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # bound, not listening: a connection is refused
        self._sock = sock
        if listening:
            self.listen()
        return self

    def listen(self) -> None:
        api = self

        class Handler(_Handler):
            fake = api

        server = ThreadingHTTPServer(self._sock.getsockname(), Handler, bind_and_activate=False)  # type: ignore[union-attr]
        server.socket.close()
        server.socket = self._sock  # type: ignore[assignment]
        server.daemon_threads = True
        server.server_activate()
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        elif self._sock is not None:
            self._sock.close()

    @property
    def url(self) -> str:
        assert self._sock is not None
        host, port = self._sock.getsockname()
        return f"http://{host}:{port}"

    def kubeconfig(self, folder: Path, namespace: str = "default") -> str:
        """A kubeconfig file naming this server (a token user, no TLS)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        }
        path = folder / "kubeconfig"
        path.write_text(json.dumps(config))
        return str(path)

    # -- state -----------------------------------------------------------------------------

    def put(self, collection: str, obj: Obj) -> Obj:
        """Create or replace `obj` in `collection` (a collection path) as a client's write would."""
        with self._changed:
            self._version += 1
            obj = json.loads(json.dumps(obj))
            meta = obj.setdefault("metadata", {})
            meta["resourceVersion"] = str(self._version)
            meta.setdefault("uid", f"uid-{meta['name']}")
            objects = self._collections.setdefault(collection, {})
            kind = "MODIFIED" if meta["name"] in objects else "ADDED"
            objects[meta["name"]] = obj
            self._events.append((self._version, collection, kind, obj))
            self._changed.notify_all()
            return obj

    def remove(self, collection: str, name: str) -> Obj | None:
        with self._changed:
            obj = self._collections.get(collection, {}).pop(name, None)
            if obj is not None:
                self._version += 1
                obj = dict(obj, metadata=dict(obj["metadata"], resourceVersion=str(self._version)))
                self._events.append((self._version, collection, "DELETED", obj))
                self._changed.notify_all()
            return obj

    def expire(self) -> None:
        """Every resourceVersion given so far is too old to watch from (a compaction): 410 Gone."""
        with self._changed:
            self.expired_before = self._version + 1

    def version(self) -> int:
        with self._changed:
            return self._version

    def watches(self) -> list[Seen]:
        return [r for r in self.requests if r.watch]


def _selected(obj: Obj, query: dict[str, str]) -> bool:
    field = query.get("fieldSelector", "")
    if field.startswith("metadata.name="):
        return bool(obj["metadata"]["name"] == field.split("=", 1)[1])
    return True


def _status(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


class _Handler(BaseHTTPRequestHandler):
    fake: FakeApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PATCH = do_DELETE = do_PUT = do_GET

    def _serve(self) -> None:
        fake = self.fake
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        with fake._changed:
            seen = Seen(self.command, parts.path, query)
            fake.requests.append(seen)
            drop = fake.drop_requests > 0
            fake.drop_requests -= drop
        if drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.command == "GET" and query.get("watch") == "1":
            self._watch(parts.path, query, seen)
            return
        collection, name = self._split(parts.path)
        if self.command == "GET" and name is None:
            with fake._changed:
                items = [o for o in fake._collections.get(collection, {}).values() if _selected(o, query)]
                listing = {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(fake._version)}}
            self._json(200, listing | {"items": items})
            return
        with fake._changed:
            current = fake._collections.get(collection, {}).get(name or "")
        if self.command == "GET":
            self._json(200, current) if current else self._json(404, _status(404, "NotFound", f'"{name}" not found'))
        elif self.command == "POST":
            if query.get("dryRun"):
                self._json(201, body)
            elif body["metadata"]["name"] in fake._collections.get(collection, {}):
                self._json(409, _status(409, "AlreadyExists", f'"{body["metadata"]["name"]}" already exists'))
            else:
                self._json(201, fake.put(collection, body))
        elif self.command == "PATCH":
            if current is None:
                self._json(404, _status(404, "NotFound", f'"{name}" not found'))
                return
            merged = json.loads(json.dumps(current))
            for key, value in (body or {}).items():
                merged[key] = value if not isinstance(value, dict) else dict(merged.get(key) or {}, **value)
            self._json(200, fake.put(collection, merged))
        elif self.command == "DELETE":
            gone = fake.remove(collection, name or "")
            self._json(200, gone) if gone else self._json(404, _status(404, "NotFound", f'"{name}" not found'))
        else:
            self._json(405, _status(405, "MethodNotAllowed", self.command))

    @staticmethod
    def _split(path: str) -> tuple[str, str | None]:
        """(collection path, name or None): /api/v1/namespaces/ns/configmaps/a -> (.../configmaps, a)."""
        parts = path.rstrip("/").split("/")
        base = 3 if parts[1] == "api" else 4  # /api/v1/..., /apis/GROUP/VERSION/...
        rest = parts[base:]
        if rest[:1] == ["namespaces"] and len(rest) > 2:
            rest = rest[2:]
        if len(rest) > 1:
            return path.rstrip("/").rsplit("/", 1)[0], rest[1]
        return path.rstrip("/"), None

    def _json(self, code: int, obj: Obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _watch(self, collection: str, query: dict[str, str], seen: Seen) -> None:
        fake = self.fake
        initial = query.get("sendInitialEvents") == "true"
        if fake.on_watch is not None:
            fake.on_watch(seen)
        if initial and not fake.watch_list:
            message = (
                "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList "
                "feature gate is enabled"
            )
            self._json(422, _status(422, "Invalid", message))
            return
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")  # as the API server streams a watch: an event a chunk
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        with fake._changed:
            stall = fake.stall_watches > 0
            fake.stall_watches -= stall
        if stall:  # headers, then nothing, until the server stops
            fake._stopping.wait()
            return
        ends = time.monotonic() + float(query.get("timeoutSeconds") or 60)
        try:
            self._follow(collection, query, initial, ends)
            self.wfile.write(b"0\r\n\r\n")  # the end of the chunked body
        except OSError:
            pass  # the client went away

    def _follow(self, collection: str, query: dict[str, str], initial: bool, ends: float) -> None:
        fake = self.fake
        with fake._changed:
            if initial:
                since = fake._version
                for obj in fake._collections.get(collection, {}).values():
                    if _selected(obj, query):
                        self._event("ADDED", obj)
                end: Obj = {"kind": "ConfigMap", "metadata": {"resourceVersion": str(since)}}
                end["metadata"]["annotations"] = {"k8s.io/initial-events-end": "true"}
                self._event("BOOKMARK", end)
            else:
                since = int(query.get("resourceVersion") or fake._version)
                if since < fake.expired_before:
                    gone = _status(410, "Expired", f"too old resource version: {since} ({fake.expired_before})")
                    self._event("ERROR", gone)
                    return
            while not fake._stopping.is_set():
                for version, where, kind, obj in fake._events:
                    if version > since and where == collection and _selected(obj, query):
                        self._event(kind, obj)
                since = fake._version
                left = ends - time.monotonic()
                if left <= 0:
                    return
                fake._changed.wait(left)

    def _event(self, kind: str, obj: Obj) -> None:
        line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.flush()
