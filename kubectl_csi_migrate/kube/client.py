"""A thin Kubernetes client on raw JSON: the `Kube` facade over the resources the tool reads and
writes.

Objects are plain dicts (what `kubectl get -o json` prints): the client's model classes are an
order of magnitude slower to build than `json.loads`, and the migration logic wants dicts
anyway for backups and translation. Dry-run is handled here, once: with `client`, mutations are
not sent; with `server`, they are sent with `dryRun=All`. Every request is counted, so that the
benchmark can report API requests per replica.

The rest of kube/ by concern: resources.py (the kinds and their paths), rbac.py (the access a
request needs, access reviews), transport.py (the only module that touches the `kubernetes`
package: kubeconfigs, sending a request, retries through an outage, the private key folder),
watch.py (waits by watch), cache.py (a kind listed once and followed by a watch). The names
callers import from here (Kube, RESOURCES, resource_path, access_of, may_change, CHANGES...)
stay importable from here.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from kubectl_csi_migrate.errors import (
    ConflictError,
    CsiMigrateError,
    NotFoundError,
    PermanentError,
    TemporaryError,
    TooManyRequestsError,
)
from kubectl_csi_migrate.kube import rbac, transport, watch
from kubectl_csi_migrate.kube.cache import Cache
from kubectl_csi_migrate.kube.rbac import NOT_A_CHANGE as NOT_A_CHANGE
from kubectl_csi_migrate.kube.rbac import access_of as access_of
from kubectl_csi_migrate.kube.rbac import may_change as may_change
from kubectl_csi_migrate.kube.resources import RESOURCES as RESOURCES
from kubectl_csi_migrate.kube.resources import Obj as Obj
from kubectl_csi_migrate.kube.resources import resource_path as resource_path
from kubectl_csi_migrate.kube.transport import OLD_FORMAT_AGE as OLD_FORMAT_AGE
from kubectl_csi_migrate.kube.transport import _private_temp_dir as _private_temp_dir
from kubectl_csi_migrate.kube.transport import _remove_dead_temp_dirs as _remove_dead_temp_dirs
from kubectl_csi_migrate.kube.watch import apply_event as apply_event

log = logging.getLogger("kubectl_csi_migrate.kube")

CHANGES = [0]
"""Requests this process sent that may change the cluster (a write of any other kind, not a dry
run): a command that sent none changed nothing, whatever it printed (the fleet's summary reads it
from each child: cli/fleet.py)."""


@dataclass(frozen=True)
class ClusterInfo:
    """Which cluster the client talks to, as kubectl would name it."""

    context: str
    server: str
    namespace: str


class Kube:
    """Raw-JSON access to one cluster. `dry_run` is "none", "client" or "server"."""

    def __init__(
        self,
        api_client: Any,
        info: ClusterInfo,
        dry_run: str = "none",
        request_timeout: float | None = None,
    ) -> None:
        self.api = api_client
        self.info = info
        self.dry_run = dry_run
        self.request_timeout = request_timeout or 30.0
        self.requests = 0
        self.before_mutation: Callable[[], None] | None = None
        """Called before every change is sent (a run checks it still holds its lease)."""
        self.server_date: str | None = None
        """The Date header of the last response: the API server's clock, to the second."""
        self.outage_seconds = 0.0
        """How long a refused connection (or a failed read) is tried again before it is an error:
        none for a command that has changed nothing (a wrong address fails at once, as in
        kubectl); a migration run, which must not stop half way for a restart, sets it."""
        self._discovered: dict[str, set[str]] = {}
        """API group/version path -> the resources it serves (discovery, asked once)."""
        self._once: dict[tuple[str, str | None, str | None], Any] = {}
        self._caches: dict[tuple[str, str | None], Any] = {}
        """By kind and namespace: the command's one Cache (listed once, followed by a watch): preflight's
        look at every PV and the run's share it."""
        self.watch_list: dict[str, bool] = {}
        """By kind: whether the API server streams a watch's initial state (sendInitialEvents,
        served from its watch cache): a wait is then one request, not a list and a watch."""

    def items_once(self, kind: str, namespace: str | None = None) -> list[Obj]:
        """`items`, asked once per command: for the read-only phase (preflight, the plan), where
        several checks look at the same objects (nodes, CSINodes, the namespace's pods)."""
        key = (kind, None, namespace)
        if key not in self._once:
            self._once[key] = self.items(kind, namespace)
        return list(self._once[key])

    def get_once(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """`get`, asked once per command (as items_once)."""
        key = (kind, name, namespace)
        if key not in self._once:
            self._once[key] = self.get(kind, name, namespace)
        return self._once[key]

    def cache(self, kind: str, namespace: str | None = None) -> Any:
        """The command's Cache of every `kind` object (of `namespace`, if given; kube/cache.py),
        made on first use."""
        if (kind, namespace) not in self._caches:
            self._caches[(kind, namespace)] = Cache(self, kind, namespace)
        return self._caches[(kind, namespace)]

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_kubeconfig(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        dry_run: str = "none",
        request_timeout: float | None = None,
    ) -> Kube:
        """Load like kubectl: --kubeconfig, else the KUBECONFIG list, else ~/.kube/config."""
        api, chosen = transport.load_kubeconfig(kubeconfig, context)
        namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
        info = ClusterInfo(
            context=(chosen or {}).get("name", ""),
            server=transport.host(api),
            namespace=namespace,
        )
        return cls(api, info, dry_run, request_timeout)

    @classmethod
    def from_kubeconfig_dict(
        cls, config: Obj, label: str, dry_run: str = "none", request_timeout: float | None = None
    ) -> Kube:
        """A kubeconfig held in memory (the user cluster's, read from the admin cluster): it is
        never saved; its embedded credentials go to a private temporary folder for the command's
        lifetime (see transport._private_temp_dir)."""
        api = transport.load_kubeconfig_dict(config, label)
        current = config.get("current-context", "")
        ctx: Obj = next((c for c in config.get("contexts", []) if c.get("name") == current), {})
        namespace = ctx.get("context", {}).get("namespace") or "default"
        return cls(
            api,
            ClusterInfo(context=current, server=transport.host(api), namespace=namespace),
            dry_run,
            request_timeout,
        )

    # -- requests -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        stream: bool = False,
        timeout: float | None = None,
    ) -> Any:
        url = transport.host(self.api) + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Accept": "application/json", "Content-Type": content_type}
        transport.authorize(self.api, headers, path, method, body)
        self.requests += 1
        access = access_of(method, path, query)
        if may_change(method, access, query):
            CHANGES[0] += 1  # counted before it is sent: a request that fails may have been applied
        log.debug("%s %s%s", method, url.split("?")[0], f" (needs {' '.join(access)})" if access else "")
        resp = transport.send(
            self.api,
            method,
            url,
            headers,
            body,
            timeout or self.request_timeout,
            self.outage_seconds,
            self.info.server,
        )
        self.server_date = resp.date or self.server_date
        if not 200 <= resp.status < 300:
            raise _api_error(resp.status, resp.reason, resp.read(), method, path)
        if stream:
            return resp.stream
        data = resp.read()
        return json.loads(data) if data else None

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """The object, or None if it does not exist."""
        try:
            return self.request("GET", resource_path(kind, namespace, name))
        except NotFoundError:
            return None

    def list_raw(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Obj:
        query = {"labelSelector": label_selector, "fieldSelector": field_selector}
        return self.request("GET", resource_path(kind, namespace), query)

    def items(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        return list(self.list_raw(kind, namespace, label_selector).get("items") or [])

    # -- mutations (dry-run aware) ----------------------------------------------------------

    def _mutate(
        self,
        method: str,
        path: str,
        body: Any,
        content_type: str = "application/json",
        query: dict[str, Any] | None = None,
        preview: Obj | None = None,
    ) -> Obj | None:
        if self.dry_run == "client":
            return preview if preview is not None else (body if isinstance(body, dict) else None)
        self._before_mutation()
        query = dict(query or {})
        if self.dry_run == "server":
            query["dryRun"] = "All"
        return self.request(method, path, query, body, content_type)

    def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        path = resource_path(obj["kind"], meta.get("namespace"))
        return self._mutate("POST", path, obj) or obj

    def patch(self, kind: str, name: str, patch: Obj, namespace: str | None = None) -> Obj | None:
        """A JSON merge patch."""
        return self._mutate("PATCH", resource_path(kind, namespace, name), patch, "application/merge-patch+json")

    def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        uid: str | None = None,
        propagation: str | None = None,
    ) -> None:
        """Delete; with `uid`, only that incarnation of the object (a precondition)."""
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            body["preconditions"] = {"uid": uid}
        if propagation:
            body["propagationPolicy"] = propagation
        if self.dry_run == "server":
            body["dryRun"] = ["All"]
        if self.dry_run == "client":
            return
        self._before_mutation()
        self.request("DELETE", resource_path(kind, namespace, name), None, body)

    def evict(self, name: str, namespace: str, uid: str | None = None) -> None:
        """Evict a pod through the Eviction API, which honours PodDisruptionBudgets; with `uid`,
        only that incarnation of the pod (a precondition: another answers 409)."""
        body: Obj = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        options: Obj = {}
        if uid:
            options["preconditions"] = {"uid": uid}
        if self.dry_run == "server":
            options["dryRun"] = ["All"]
        if options:
            body["deleteOptions"] = options
        if self.dry_run == "client":
            return
        self._before_mutation()
        self.request("POST", resource_path("Pod", namespace, name) + "/eviction", None, body)

    def _before_mutation(self) -> None:
        if self.before_mutation is not None:
            self.before_mutation()

    def can_i(self, verb: str, kind: str, namespace: str | None = None, subresource: str = "") -> bool:
        return rbac.can_i(self.request, verb, kind, namespace, subresource)

    def rules(self, namespace: str) -> list[Obj]:
        """The resource rules the API server lists for this user in `namespace` (one
        SelfSubjectRulesReview); [] when it cannot list them all (another authorizer than RBAC,
        or the review refused): then each access is asked about on its own (can_i)."""
        return rbac.rules(self.request, namespace)

    allows = staticmethod(rbac.allows)

    def server_version(self) -> Obj:
        return self.request("GET", "/version")

    def has_resource(self, kind: str) -> bool:
        """Whether the API server serves `kind` (asked once per API group and version)."""
        prefix, plural, _ = RESOURCES[kind]
        if prefix not in self._discovered:
            try:
                listing = self.request("GET", prefix)
                self._discovered[prefix] = {str(r.get("name")) for r in listing.get("resources", [])}
            except NotFoundError:
                self._discovered[prefix] = set()
        return plural in self._discovered[prefix]

    # -- watching -------------------------------------------------------------------------

    def watch_until(
        self,
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
        """List, then watch, until `predicate(objects by name)` holds; return those objects.
        With `tick`, call it with the seconds waited so far every `tick_every` seconds (a watch
        is asked to end by then, and is opened again after a fresh list).

        The one waiter of the tool: every wait (pod gone, pod Ready, PVC Bound, no
        VolumeAttachment left...) is a predicate over the current set of matching objects.
        A watch reacts within milliseconds, where a poll would add half its period to each wait.
        """
        return watch.watch_until(
            self, kind, predicate, what, timeout, namespace, field_selector, label_selector, tick, tick_every
        )

    def _watch(
        self,
        kind: str,
        namespace: str | None,
        version: str | None,
        deadline: float,
        field_selector: str | None,
        label_selector: str | None,
        initial: bool = False,
    ) -> Iterator[Obj]:
        """One watch's events (kube/watch.py); Cache follows a kind with it."""
        return watch.watch(self, kind, namespace, version, deadline, field_selector, label_selector, initial)


def _api_error(status: int, reason: str, body: bytes | None, method: str, path: str) -> CsiMigrateError:
    message = reason
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        message = json.loads(body or b"{}").get("message") or message
    if status == 404:
        return NotFoundError(message)
    if status == 409:
        return ConflictError(message)
    if status == 401:
        return PermanentError(f"the Kubernetes API server rejected the credentials (Unauthorized): {message}")
    if status == 403:
        return PermanentError(f"forbidden: {message}")
    if status == 429:
        return TooManyRequestsError(message)
    if status >= 500:
        return TemporaryError(f"{method} {path}: {status} {message}")
    return PermanentError(f"{method} {path}: {message}")
