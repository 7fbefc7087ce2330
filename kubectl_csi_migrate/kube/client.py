"""A thin Kubernetes client on raw JSON, and the only module that imports `kubernetes`.

Objects are plain dicts (what `kubectl get -o json` prints): the client's model classes are an
order of magnitude slower to build than `json.loads`, and the migration logic wants dicts
anyway for backups and translation. Dry-run is handled here, once: with `client`, mutations are
not sent; with `server`, they are sent with `dryRun=All`. Every request is counted, so that the
benchmark can report API requests per replica.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from kubectl_csi_migrate.errors import (
    ConflictError,
    CsiMigrateError,
    NotFoundError,
    PermanentError,
    TemporaryError,
    TooManyRequestsError,
)
from kubectl_csi_migrate.host import tag

Obj = dict[str, Any]
log = logging.getLogger("kubectl_csi_migrate.kube")

# kind -> (api prefix, plural, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Pod": ("/api/v1", "pods", True),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims", True),
    "PersistentVolume": ("/api/v1", "persistentvolumes", False),
    "Secret": ("/api/v1", "secrets", True),
    "Event": ("/api/v1", "events", True),
    "Namespace": ("/api/v1", "namespaces", False),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "ReplicaSet": ("/apis/apps/v1", "replicasets", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "StorageClass": ("/apis/storage.k8s.io/v1", "storageclasses", False),
    "CSIDriver": ("/apis/storage.k8s.io/v1", "csidrivers", False),
    "CSINode": ("/apis/storage.k8s.io/v1", "csinodes", False),
    "VolumeAttachment": ("/apis/storage.k8s.io/v1", "volumeattachments", False),
    "Node": ("/api/v1", "nodes", False),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "CnsVSphereVolumeMigration": (
        "/apis/cns.vmware.com/v1alpha1",
        "cnsvspherevolumemigrations",
        False,
    ),
    "SelfSubjectAccessReview": ("/apis/authorization.k8s.io/v1", "selfsubjectaccessreviews", False),
    "SelfSubjectRulesReview": ("/apis/authorization.k8s.io/v1", "selfsubjectrulesreviews", False),
}


def resource_path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
    prefix, plural, namespaced = RESOURCES[kind]
    path = prefix
    if namespaced and namespace:
        path += f"/namespaces/{quote(namespace)}"
    path += f"/{plural}"
    if name:
        path += f"/{quote(name)}"
    return path


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def access_of(method: str, path: str, query: dict[str, Any] | None = None) -> tuple[str, str, str] | None:
    """The RBAC (verb, kind, subresource) a request needs, as REQUIRED_ACCESS names them; None
    for discovery and version requests, which every user may make."""
    parts = path.strip("/").split("/")
    # Namespaced kinds first: /api/v1/namespaces/NS/pods is a pod path, not namespace NS.
    for kind, (prefix, plural, namespaced) in sorted(RESOURCES.items(), key=lambda item: not item[1][2]):
        base = prefix.strip("/").split("/")
        if parts[: len(base)] != base:
            continue
        rest = parts[len(base) :]
        if namespaced and rest[:1] == ["namespaces"] and len(rest) > 2:
            rest = rest[2:]
        if rest[:1] != [plural]:
            continue
        named, sub = len(rest) > 1, rest[2] if len(rest) > 2 else ""
        if method == "GET":
            verb = "watch" if (query or {}).get("watch") else "get" if named else "list"
        else:
            verb = _VERBS.get(method, method.lower())
        return verb, kind, sub
    return None


NOT_A_CHANGE = frozenset({"Lease", "SelfSubjectAccessReview", "SelfSubjectRulesReview"})
"""Kinds a command writes without changing the cluster for its user: its own run's Lease (given
back at its end) and the questions preflight asks the API server."""

CHANGES = [0]
"""Requests this process sent that may change the cluster (a write of any other kind, not a dry
run): a command that sent none changed nothing, whatever it printed (the fleet's summary reads it
from each child: cli/fleet.py)."""


def may_change(method: str, access: tuple[str, str, str] | None, query: dict[str, Any] | None) -> bool:
    """Whether a request (its method, access_of, query) may change the cluster for the user."""
    if method == "GET" or (query or {}).get("dryRun"):
        return False
    return access is None or access[1] not in NOT_A_CHANGE


def apply_event(objects: dict[str, Obj], event: Obj) -> None:
    """A watch event (ADDED, MODIFIED, DELETED) applied to `objects` by name."""
    obj = event["object"]
    if event["type"] == "DELETED":
        objects.pop(obj["metadata"]["name"], None)
    else:
        objects[obj["metadata"]["name"]] = obj


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
        from kubectl_csi_migrate.kube.cache import Cache

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
        from kubernetes import config as kconfig
        from kubernetes.config.config_exception import ConfigException

        if kubeconfig and not os.path.isfile(kubeconfig):
            # kubectl's words; the client library would skip the file and say "no configuration"
            raise PermanentError(f"cannot read kubeconfig {kubeconfig}: no such file")
        if not kubeconfig:
            paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
            paths = paths or [os.path.expanduser("~/.kube/config")]
            if not any(os.path.isfile(p) for p in paths):
                raise PermanentError(f"no kubeconfig found (tried {', '.join(paths)}); pass --kubeconfig")
        try:
            contexts, active = kconfig.list_kube_config_contexts(config_file=kubeconfig)
            chosen = active
            if context:
                chosen = next((c for c in contexts if c["name"] == context), None)
                if chosen is None:
                    raise PermanentError(f'context "{context}" does not exist in the kubeconfig')
            configuration = _configuration()
            kconfig.load_kube_config(
                config_file=kubeconfig,
                context=context,
                client_configuration=configuration,
                persist_config=False,
                temp_file_path=_private_temp_dir(),
            )
            api = _api_client(configuration)
        except ConfigException as exc:
            raise PermanentError(f"invalid kubeconfig: {exc}") from exc
        except OSError as exc:
            raise PermanentError(f"cannot read kubeconfig: {exc}") from exc
        namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
        info = ClusterInfo(
            context=(chosen or {}).get("name", ""),
            server=api.configuration.host,
            namespace=namespace,
        )
        return cls(api, info, dry_run, request_timeout)

    @classmethod
    def from_kubeconfig_dict(
        cls, config: Obj, label: str, dry_run: str = "none", request_timeout: float | None = None
    ) -> Kube:
        """A kubeconfig held in memory (the user cluster's, read from the admin cluster): it is
        never saved; its embedded credentials go to a private temporary folder for the command's
        lifetime (see _private_temp_dir)."""
        from kubernetes import config as kconfig
        from kubernetes.config.config_exception import ConfigException

        try:
            configuration = _configuration()
            kconfig.load_kube_config_from_dict(
                config, client_configuration=configuration, persist_config=False, temp_file_path=_private_temp_dir()
            )
            api = _api_client(configuration)
        except (ConfigException, KeyError, TypeError) as exc:
            raise PermanentError(f"the kubeconfig in {label} is not usable: {exc}") from exc
        current = config.get("current-context", "")
        ctx: Obj = next((c for c in config.get("contexts", []) if c.get("name") == current), {})
        namespace = ctx.get("context", {}).get("namespace") or "default"
        return cls(
            api,
            ClusterInfo(context=current, server=api.configuration.host, namespace=namespace),
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
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        url = self.api.configuration.host + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Accept": "application/json", "Content-Type": content_type}
        self.api.update_params_for_auth(headers, [], ["BearerToken"], path, method, body)
        self.requests += 1
        access = access_of(method, path, query)
        if may_change(method, access, query):
            CHANGES[0] += 1  # counted before it is sent: a request that fails may have been applied
        log.debug("%s %s%s", method, url.split("?")[0], f" (needs {' '.join(access)})" if access else "")
        outage_ends = time.monotonic() + self.outage_seconds
        while True:
            try:
                resp = self.api.rest_client.request(
                    method, url, headers=headers, body=body, _request_timeout=timeout or self.request_timeout
                )
                break
            except ApiException as exc:  # TLS problems come back as status 0
                if "CERTIFICATE_VERIFY_FAILED" in str(exc.reason):
                    raise PermanentError(
                        f"the Kubernetes API server {self.info.server} presented a certificate the kubeconfig's "
                        "certificate-authority does not verify"
                    ) from exc
                raise TemporaryError(
                    f"cannot reach the Kubernetes API server {self.info.server}: {exc.reason}"
                ) from exc
            except HTTPError as exc:
                problem = f"cannot reach the Kubernetes API server {self.info.server}: {_root(exc)}"
                # A request refused before it was sent (or a read) is safe to send again: an API
                # server restarting, a load balancer switching, refuse connections for seconds.
                if not (_not_sent(exc) or method == "GET") or time.monotonic() > outage_ends:
                    raise TemporaryError(problem) from exc
                log.info("%s; trying again", problem)
                time.sleep(1)
        self.server_date = resp.getheader("Date") or self.server_date
        if not 200 <= resp.status < 300:
            raise _api_error(resp.status, resp.reason, resp.read(), method, path)
        if stream:
            return resp.response
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
        prefix, plural, _ = RESOURCES[kind]
        group = "" if prefix == "/api/v1" else prefix.split("/")[2]
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": plural,
                    "namespace": namespace or "",
                    "subresource": subresource,
                }
            },
        }
        result = self.request("POST", resource_path("SelfSubjectAccessReview"), None, review)
        return bool(result.get("status", {}).get("allowed"))

    def rules(self, namespace: str) -> list[Obj]:
        """The resource rules the API server lists for this user in `namespace` (one
        SelfSubjectRulesReview); [] when it cannot list them all (another authorizer than RBAC,
        or the review refused): then each access is asked about on its own (can_i)."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": namespace},
        }
        try:
            result = self.request("POST", resource_path("SelfSubjectRulesReview"), None, review)
        except PermanentError:  # refused (forbidden): ask access by access
            return []
        status = result.get("status", {})
        return [] if status.get("incomplete") else list(status.get("resourceRules") or [])

    @staticmethod
    def allows(rules: list[Obj], verb: str, kind: str, subresource: str = "") -> bool:
        """Whether one of `rules` (RBAC resource rules) grants `verb` on `kind` (by any name)."""
        prefix, plural, _ = RESOURCES[kind]
        group = "" if prefix == "/api/v1" else prefix.split("/")[2]
        resource = f"{plural}/{subresource}" if subresource else plural
        for rule in rules:
            if rule.get("resourceNames"):
                continue  # granted for some names only
            if not {"*", verb} & set(rule.get("verbs") or []):
                continue
            if not {"*", group} & set(rule.get("apiGroups") or []):
                continue
            resources = set(rule.get("resources") or [])
            if {"*", resource} & resources or (subresource and f"{plural}/*" in resources):
                return True
        return False

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
        started = time.monotonic()
        deadline = started + timeout
        next_tick = started + tick_every
        if self.watch_list.get(kind) is not False:
            try:
                return self._watch_list_until(
                    kind, predicate, what, timeout, namespace, field_selector, label_selector, tick, tick_every
                )
            except PermanentError as exc:
                if self.watch_list.get(kind):
                    raise
                # An API server before watch lists refuses the parameters: list, then watch.
                log.debug("no watch list (%s): a list, then a watch, for each wait", exc)
                self.watch_list[kind] = False
        while True:
            if tick is not None and time.monotonic() >= next_tick:
                tick(time.monotonic() - started)
                next_tick = time.monotonic() + tick_every
            listing = self.list_raw(kind, namespace, label_selector, field_selector)
            objects = {o["metadata"]["name"]: o for o in listing.get("items") or []}
            if predicate(objects):
                return objects
            version = listing["metadata"].get("resourceVersion")
            until = min(deadline, next_tick) if tick is not None else deadline
            try:
                for event in self._watch(kind, namespace, version, until, field_selector, label_selector):
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

    def _watch_list_until(
        self,
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
            if kind not in self.watch_list:
                until = min(until, time.monotonic() + 5)  # a server that supports it marks the end at once
            objects: dict[str, Obj] = {}
            synced = False
            try:
                for event in self._watch(kind, namespace, None, until, field_selector, label_selector, initial=True):
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        break  # watch again, from a fresh initial state
                    if event["type"] == "BOOKMARK":
                        annotations = obj.get("metadata", {}).get("annotations") or {}
                        if annotations.get("k8s.io/initial-events-end") == "true":
                            synced = True
                            self.watch_list[kind] = True
                            if predicate(objects):
                                return objects
                        continue
                    apply_event(objects, event)
                    if synced and predicate(objects):
                        return objects
            except TemporaryError:
                if time.monotonic() >= deadline:
                    raise
            if not synced and kind not in self.watch_list:
                # Parameters accepted but no initial state marked: a server that ignores them.
                raise PermanentError("the API server did not mark the end of a watch's initial state")
            if time.monotonic() >= deadline:
                raise TemporaryError(f"timed out after {timeout:.0f}s waiting for {what}")

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
        resp = self.request("GET", resource_path(kind, namespace), query, stream=True, timeout=remaining + 5)
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


_TEMP_DIR: list[str] = []


def _private_temp_dir() -> str:
    """The client library writes embedded certificates and keys to files, which urllib3 reads
    when it connects: keep them in one folder only we can read, removed when the command ends
    (normally, on an error, Ctrl-C, SIGTERM or SIGHUP; see cli/main.py). A process killed
    outright cannot clean up: the next command removes the folders of our own dead processes."""
    if not _TEMP_DIR:
        import atexit
        import shutil
        import tempfile

        _remove_dead_temp_dirs(tempfile.gettempdir())
        path = tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{tag()}.{os.getpid()}-")  # created 0700
        atexit.register(shutil.rmtree, path, True)
        _TEMP_DIR.append(path)
    return _TEMP_DIR[0]


_TEMP_PREFIX = "kubectl-csi-migrate-"

OLD_FORMAT_AGE = 24 * 3600.0
"""An earlier release's folder (`kubectl-csi-migrate-<pid>-*`, no tag) is removed only when its
pid is gone here and it is older than this: its process may run where this one cannot see it."""


def _remove_dead_temp_dirs(root: str) -> None:
    """Remove `kubectl-csi-migrate-<tag>.<pid>-*` folders of ours whose process is gone: only those
    of this machine and pid namespace (host.tag): a live run in another container sharing the
    folder has a pid this process cannot see (issue 17, item 10)."""
    import shutil

    for entry in Path(root).glob(f"{_TEMP_PREFIX}*"):
        name = entry.name[len(_TEMP_PREFIX) :].split("-", 1)[0]
        theirs, _, pid_text = name.rpartition(".")
        try:
            pid = int(pid_text)
            stat = entry.stat()
            if stat.st_uid != os.getuid() or not entry.is_dir():
                continue
        except (ValueError, OSError):
            continue
        if theirs and theirs != tag():
            continue  # another machine's or container's process: not ours to judge
        if not theirs and time.time() - stat.st_mtime < OLD_FORMAT_AGE:
            continue
        try:
            os.kill(pid, 0)
            continue  # still running
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:
            continue  # another user's process of that pid


def _configuration() -> Any:
    from kubernetes import client

    configuration = client.Configuration()
    # One retry, not urllib3's default three: an unreachable server fails within about
    # twice --request-timeout, with one error line.
    configuration.retries = 1
    return configuration


def _api_client(configuration: Any) -> Any:
    from kubernetes import client

    return client.ApiClient(configuration)


def _not_sent(exc: BaseException) -> bool:
    """Whether urllib3 failed before the request left (no connection was made)."""
    from urllib3.exceptions import NewConnectionError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (NewConnectionError, ConnectionRefusedError)) or isinstance(
            getattr(seen, "reason", None), NewConnectionError
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _root(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)


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
