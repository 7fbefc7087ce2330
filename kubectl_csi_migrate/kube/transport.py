"""The transport: the only module that touches the `kubernetes` package (imported lazily: a
command that talks to no cluster never loads it).

Of that package the tool uses the kubeconfig loader (like kubectl's: contexts, exec and
token users, certificates) and the configured ApiClient's connection pool, through a few of its
internals that no public API offers: ApiClient.update_params_for_auth (the credentials of a
request), ApiClient.rest_client.request (a request of raw JSON, streamed or not),
RESTResponse.response (the urllib3 response under it, to stream a watch),
Configuration.retries, and load_kube_config's temp_file_path (where it writes embedded
certificates and keys). tests/unit/test_kubernetes_package.py pins the versions of `kubernetes`
these are known to work with (setup.cfg) and checks they are there.

Here too: a request sent again through an outage (Kube.outage_seconds) and the private folder
for those certificates and keys (key folders of dead processes removed).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from kubectl_csi_migrate.errors import PermanentError, TemporaryError
from kubectl_csi_migrate.host import tag
from kubectl_csi_migrate.kube.resources import Obj

log = logging.getLogger("kubectl_csi_migrate.kube")


# -- configuration ------------------------------------------------------------------------------


def load_kubeconfig(kubeconfig: str | None, context: str | None) -> tuple[Any, Obj | None]:
    """The ApiClient of a kubeconfig file (loaded like kubectl: --kubeconfig, else the KUBECONFIG
    list, else ~/.kube/config) and its chosen context entry (None: none chosen)."""
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
    return api, chosen


def load_kubeconfig_dict(config: Obj, label: str) -> Any:
    """The ApiClient of a kubeconfig held in memory (its embedded credentials go to the private
    temporary folder, see _private_temp_dir)."""
    from kubernetes import config as kconfig
    from kubernetes.config.config_exception import ConfigException

    try:
        configuration = _configuration()
        kconfig.load_kube_config_from_dict(
            config, client_configuration=configuration, persist_config=False, temp_file_path=_private_temp_dir()
        )
        return _api_client(configuration)
    except (ConfigException, KeyError, TypeError) as exc:
        raise PermanentError(f"the kubeconfig in {label} is not usable: {exc}") from exc


def host(api: Any) -> str:
    """The API server's address, as the kubeconfig names it."""
    return str(api.configuration.host)


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


# -- requests ---------------------------------------------------------------------------------


class Answer:
    """An API server's answer: its status, reason, Date header and body (or, streamed, the
    urllib3 response to read a watch from)."""

    def __init__(self, resp: Any) -> None:
        self._resp = resp
        self.status: int = resp.status
        self.reason: str = resp.reason
        self.date: str | None = resp.getheader("Date")

    def read(self) -> Any:
        """The body (bytes)."""
        return self._resp.read()

    @property
    def stream(self) -> Any:
        """The urllib3 response (stream(), release_conn()): for a request made with stream=True."""
        return self._resp.response


def authorize(api: Any, headers: dict[str, str], path: str, method: str, body: Any) -> None:
    """Add the kubeconfig user's credentials (a bearer token, refreshed if its source says so)."""
    api.update_params_for_auth(headers, [], ["BearerToken"], path, method, body)


def send(
    api: Any,
    method: str,
    url: str,
    headers: dict[str, str],
    body: Any,
    timeout: float,
    outage_seconds: float,
    server: str,
) -> Answer:
    """Send one request; a connection refused before the request was sent (or a read that
    failed) is sent again, a second apart, for `outage_seconds`. TemporaryError when the server
    cannot be reached, PermanentError when its certificate is not the kubeconfig's."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    outage_ends = time.monotonic() + outage_seconds
    while True:
        try:
            resp = api.rest_client.request(method, url, headers=headers, body=body, _request_timeout=timeout)
            return Answer(resp)
        except ApiException as exc:  # TLS problems come back as status 0
            if "CERTIFICATE_VERIFY_FAILED" in str(exc.reason):
                raise PermanentError(
                    f"the Kubernetes API server {server} presented a certificate the kubeconfig's "
                    "certificate-authority does not verify"
                ) from exc
            raise TemporaryError(f"cannot reach the Kubernetes API server {server}: {exc.reason}") from exc
        except HTTPError as exc:
            problem = f"cannot reach the Kubernetes API server {server}: {_root(exc)}"
            # A request refused before it was sent (or a read) is safe to send again: an API
            # server restarting, a load balancer switching, refuse connections for seconds.
            if not (_not_sent(exc) or method == "GET") or time.monotonic() > outage_ends:
                raise TemporaryError(problem) from exc
            log.info("%s; trying again", problem)
            time.sleep(1)


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


# -- the private folder of certificates and keys ------------------------------------------------------

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
