"""vCenter access through pyVmomi: connect, find and register First Class Disks (FCDs).

pyVmomi is imported inside the functions that need it, so importing this module is cheap.
Every failure leaves as a CsiMigrateError subclass (errors.py), chained to the original.
Nothing here deletes or modifies a disk: the only write is RegisterDisk, which catalogues an
existing VMDK as an FCD.

Facts this code relies on (checked on vcsim v0.46.0 and pyVmomi 9.1):
- `si.content.vStorageObjectManager` is None on vcsim; `si.RetrieveContent()` has it.
- pyVmomi disables TLS verification for 127.0.0.1/localhost unless given an explicit
  sslContext, and SmartConnect's API-version probe has no timeout and ignores `thumbprint`;
  hence the explicit context and the own TCP+TLS probe before SmartConnect.
- pyVmomi checks a pinned thumbprint only after a failed verification; a pinned certificate is
  therefore loaded as the only trust anchor of the context, so every connection checks it.
- RegisterDisk wants a datastore URL, not "[ds] path"; for a disk that is already an FCD,
  vCenter answers vim.fault.AlreadyExists (name = existing id), vcsim vmodl.fault.InvalidArgument
  (also its answer for a missing file).
- Waiting for a task with pyVmomi's WaitForTask fails on vcsim (its TaskInfo does not
  deserialize); tasks are followed by reading only info.state/info.error/info.result.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from kubectl_csi_migrate.errors import (
    CredentialsError,
    CsiMigrateError,
    PermanentError,
    VCenterError,
    VCenterLoginFailed,
    VCenterNotFound,
    VCenterPermissionDenied,
    VCenterSessionEnded,
    VCenterTLSError,
    VCenterUnreachable,
)
from kubectl_csi_migrate.vsphere import paths
from kubectl_csi_migrate.vsphere.credentials import VCenterConfig

FCD_PRIVILEGES = ("Datastore.FileManagement",)
"""What the run needs on a disk's datastore: RegisterDisk and Set/ClearVStorageObjectControlFlags
require Datastore.FileManagement there (the CSI driver's CNS-DATASTORE role grants it)."""


def _split_ds_path(path: str) -> tuple[str, str]:
    """ "[ds] dir/x.vmdk" -> ("ds", "dir/x.vmdk"); "[folder/ds] x.vmdk" -> ("ds", "x.vmdk")."""
    try:
        return paths.split(path)
    except ValueError:
        raise PermanentError(
            f"not a vSphere datastore path: {path!r} (expected '[datastore] folder/disk.vmdk')"
        ) from None


def _url_host(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return shown if port == 443 else f"{shown}:{port}"


def _normalize_thumbprint(value: str) -> str:
    digest = value.replace(":", "").replace(" ", "").lower()
    if len(digest) not in (40, 64, 128) or not all(c in "0123456789abcdef" for c in digest):
        raise CredentialsError(f"thumbprint {value!r} is not a SHA-1, SHA-256 or SHA-512 hex digest")
    return digest


def _thumbprint_of(der: bytes, like: str) -> str:
    algorithm = {40: "sha1", 64: "sha256", 128: "sha512"}[len(like)]
    return hashlib.new(algorithm, der).hexdigest()


def _fault_text(fault: Any) -> str:
    message = getattr(fault, "msg", "") or ""
    name = type(fault).__name__
    return f"{name}: {message}" if message else name


def _base_context(config: VCenterConfig) -> ssl.SSLContext:
    """The TLS context for config: unverified only when insecure was asked for; else the CA
    file(s) given (os.pathsep-separated) or the system's CAs."""
    if config.insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if not config.ca_file:
        return ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies; trusts only the given CAs
    for path in filter(None, config.ca_file.split(os.pathsep)):
        try:
            context.load_verify_locations(cafile=os.path.expanduser(path))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise CredentialsError(
                f"CA file {path} (from {config.source}) cannot be used: {reason}; "
                "pass the vCenter CA certificate with --vsphere-ca-file, "
                "or --vsphere-insecure to skip verification"
            ) from exc
    return context


class VCenter:
    """A logged-in vCenter session. Use `VCenter.connect(config)`, as a context manager."""

    def __init__(self, si: Any, config: VCenterConfig) -> None:
        self._si = si
        self.config = config
        self._content: Any = None
        self._dc_paths: dict[str, str] = {}
        self._fcds: dict[tuple[str, str], dict[tuple[str, str], str]] = {}
        """(datacenter, datastore) -> its FCDs, (datastore, path) of the backing file -> id."""
        self._login_again: Callable[[], Any] | None = None
        self._located: dict[tuple[str, str | None], tuple[Any, str, Any, str]] = {}
        """(datastore name, datacenter asked for) -> what `_locate` found, once per session: a
        search of the inventory is six calls, and a run asks it for every disk several times."""

    def relogin(self) -> None:
        """Log in again with the same configuration, after vCenter ended the session."""
        if self._login_again is None:
            raise VCenterError(f"vCenter {self.config.address}: cannot log in again")
        self._si, self._content = self._login_again(), None
        self._located = {}  # its objects belong to the old session

    def _session_ended(self) -> bool:
        """Whether vCenter no longer knows this session (it answers NoPermission then, vcsim
        for every call, vCenter for some)."""
        try:
            return self._si.content.sessionManager.currentSession is None
        except Exception:  # the question itself refused: not logged in
            return True

    # --- session -------------------------------------------------------------------------------

    @classmethod
    def connect(cls, config: VCenterConfig, timeout: float = 30) -> VCenter:
        """Log in to config's vCenter, verifying its TLS certificate unless config.insecure.

        Raises VCenterUnreachable (TemporaryError) when it does not answer in `timeout`
        seconds, is refused or its name does not resolve; VCenterTLSError (PermanentError) when
        its certificate is not trusted; VCenterLoginFailed (PermanentError) for a wrong user or
        password; VCenterError when the server is not a vCenter.
        """
        context = _base_context(config)
        pinned: str | None = None
        if config.thumbprint and not config.insecure:
            pinned = _normalize_thumbprint(config.thumbprint)
        if pinned and not config.ca_file:
            context = cls._pinned_context(config, pinned, timeout)
        cls._probe(config, context, timeout)
        si = cls._login(config, context, pinned, timeout)
        vcenter = cls(si, config)
        vcenter._login_again = lambda: cls._login(config, context, pinned, timeout)
        try:
            api_type = vcenter.content.about.apiType
        except Exception:
            vcenter.close()
            raise
        if api_type != "VirtualCenter":
            vcenter.close()
            raise PermanentError(
                f"{config.host} is not a vCenter Server but {api_type} (an ESXi host?): "
                "First Class Disks are registered through vCenter; give the vCenter address"
            )
        return vcenter

    @staticmethod
    def _probe(config: VCenterConfig, context: ssl.SSLContext, timeout: float) -> bytes:
        """Open TCP and TLS once with a deadline, to classify failures; return the peer cert."""
        where = f"vCenter {config.address}"
        try:
            sock = socket.create_connection((config.host, config.port), timeout=timeout)
        except socket.gaierror as exc:
            raise VCenterUnreachable(f"{where} unreachable: cannot resolve {config.host} ({exc.strerror})") from exc
        except TimeoutError as exc:
            raise VCenterUnreachable(f"{where} unreachable: timed out after {timeout:g}s") from exc
        except OSError as exc:
            raise VCenterUnreachable(f"{where} unreachable: {exc.strerror or exc}") from exc
        with sock:
            try:
                with context.wrap_socket(sock, server_hostname=config.host) as tls:
                    return tls.getpeercert(binary_form=True) or b""
            except ssl.SSLCertVerificationError as exc:
                trusted = f"the CA file {config.ca_file}" if config.ca_file else "the system CAs"
                raise VCenterTLSError(
                    f"{where}: its TLS certificate is not trusted by {trusted} "
                    f"({exc.verify_message}); pass the vCenter CA certificate with "
                    "--vsphere-ca-file (or ca-file in the vSphere config), or --vsphere-insecure "
                    "to skip verification"
                ) from exc
            except ssl.SSLError as exc:
                raise VCenterTLSError(
                    f"{where}: TLS handshake failed ({exc.reason or exc}); is this the vCenter HTTPS port?"
                ) from exc
            except TimeoutError as exc:
                raise VCenterUnreachable(f"{where} unreachable: TLS handshake timed out after {timeout:g}s") from exc
            except OSError as exc:
                raise VCenterUnreachable(f"{where} unreachable: {exc.strerror or exc}") from exc

    @classmethod
    def _pinned_context(cls, config: VCenterConfig, pinned: str, timeout: float) -> ssl.SSLContext:
        """A context that trusts exactly the server certificate whose thumbprint is pinned."""
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        probe.check_hostname = False
        probe.verify_mode = ssl.CERT_NONE
        der = cls._probe(config, probe, timeout)
        actual = _thumbprint_of(der, pinned)
        if actual != pinned:
            raise VCenterTLSError(
                f"vCenter {config.address}: its certificate's thumbprint is {actual}, not the "
                f"configured {pinned} (from {config.source}); check the thumbprint, or pass the "
                "vCenter CA certificate with --vsphere-ca-file"
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # the pin, not the name, identifies the server
        context.verify_mode = ssl.CERT_REQUIRED
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        context.load_verify_locations(cadata=der)
        return context

    @staticmethod
    def _login(config: VCenterConfig, context: ssl.SSLContext, pinned: str | None, timeout: float) -> Any:
        from pyVim.connect import SmartConnect
        from pyVmomi import vim, vmodl
        from pyVmomi.Security import ThumbprintMismatchException

        where = f"vCenter {config.address}"
        try:
            return SmartConnect(
                host=config.host,
                port=config.port,
                user=config.user,
                pwd=config.password,
                sslContext=context,
                thumbprint=pinned,
                httpConnectionTimeout=timeout,
            )
        except vim.fault.InvalidLogin as exc:
            raise VCenterLoginFailed(
                f"vCenter {config.host}: login failed for user {config.user} (check the "
                f"credentials from {config.source or 'the configuration'})"
            ) from exc
        except vim.fault.NoPermission as exc:
            raise VCenterPermissionDenied(
                f"vCenter {config.host}: user {config.user} may not log in ({_fault_text(exc)})"
            ) from exc
        except vmodl.MethodFault as exc:
            raise VCenterError(f"{where}: login failed: {_fault_text(exc)}") from exc
        except ssl.SSLCertVerificationError as exc:
            raise VCenterTLSError(
                f"{where}: its TLS certificate is not trusted ({exc.verify_message}); pass the "
                "vCenter CA certificate with --vsphere-ca-file, or --vsphere-insecure"
            ) from exc
        except TimeoutError as exc:
            raise VCenterUnreachable(f"{where} unreachable: timed out after {timeout:g}s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise VCenterUnreachable(f"{where} unreachable: {exc}") from exc
        except ThumbprintMismatchException as exc:
            raise VCenterTLSError(
                f"{where}: its certificate does not match the configured thumbprint (from {config.source})"
            ) from exc
        except Exception as exc:  # SmartConnect raises a bare Exception for "not a VIM server"
            raise VCenterError(
                f"{where} does not answer as a vCenter Server with an API version this tool knows ({exc})"
            ) from exc

    def close(self) -> None:
        """Log out; errors on the way out are ignored."""
        si, self._si = self._si, None
        if si is None:
            return
        from pyVim.connect import Disconnect

        with contextlib.suppress(Exception):
            Disconnect(si)

    def __enter__(self) -> VCenter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self._si is not None else "closed"
        return f"<VCenter {self.config.user}@{self.config.address} {state}>"

    @property
    def content(self) -> Any:
        """The ServiceContent, read with RetrieveContent (it has vStorageObjectManager)."""
        if self._si is None:
            raise VCenterError(f"vCenter {self.config.address}: the session is closed")
        if self._content is None:
            with self._calls("read the service content"):
                self._content = self._si.RetrieveContent()
        return self._content

    @contextlib.contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Turn pyVmomi faults and connection errors into this tool's errors."""
        from pyVmomi import vim, vmodl

        where = f"vCenter {self.config.host}"
        try:
            yield
        except CsiMigrateError:
            raise
        except vim.fault.NoPermission as exc:
            if self._session_ended():
                raise VCenterSessionEnded(f"{where}: the session ended while trying to {what}") from exc
            privilege = getattr(exc, "privilegeId", "") or "?"
            raise VCenterPermissionDenied(
                f"{where}: user {self.config.user} may not {what}: missing privilege {privilege}"
            ) from exc
        except vim.fault.NotAuthenticated as exc:
            raise VCenterSessionEnded(f"{where}: the session ended while trying to {what}") from exc
        except (vim.fault.NotFound, vim.fault.FileNotFound) as exc:
            raise VCenterNotFound(f"{where}: cannot {what}: {_fault_text(exc)}") from exc
        except vmodl.MethodFault as exc:
            raise VCenterError(f"{where}: cannot {what}: {_fault_text(exc)}") from exc
        except TimeoutError as exc:
            raise VCenterUnreachable(
                f"vCenter {self.config.address} unreachable: timed out while trying to {what}"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise VCenterUnreachable(
                f"vCenter {self.config.address} unreachable while trying to {what}: {exc}"
            ) from exc

    # --- inventory -----------------------------------------------------------------------------

    def about(self) -> str:
        """The server's product name and API version, e.g. "VMware vCenter Server 8.0.2 build-1
        (API 8.0.2.0)"."""
        with self._calls("read the server version"):
            about = self.content.about
            return f"{about.fullName} (API {about.apiVersion})"

    def _view(self, container: Any, kind: Any, props: list[str]) -> list[tuple[Any, dict[str, Any]]]:
        """Objects of `kind` under `container` (recursively) with the given properties, read in
        one PropertyCollector round trip per page."""
        from pyVmomi import vmodl

        collector = vmodl.query.PropertyCollector
        view = self.content.viewManager.CreateContainerView(container, [kind], True)
        try:
            spec = collector.FilterSpec(
                objectSet=[
                    collector.ObjectSpec(
                        obj=view,
                        skip=True,
                        selectSet=[collector.TraversalSpec(name="view", path="view", skip=False, type=type(view))],
                    )
                ],
                propSet=[collector.PropertySpec(type=kind, pathSet=props)],
            )
            pc = self.content.propertyCollector
            out: list[tuple[Any, dict[str, Any]]] = []
            result = pc.RetrievePropertiesEx([spec], collector.RetrieveOptions(maxObjects=500))
            while result is not None:
                for item in result.objects or []:
                    out.append((item.obj, {p.name: p.val for p in item.propSet or []}))
                token = result.token
                result = pc.ContinueRetrievePropertiesEx(token) if token else None
            return out
        finally:
            with contextlib.suppress(Exception):
                view.DestroyView()

    def _datacenters(self) -> list[tuple[Any, str]]:
        """Every datacenter with its inventory path ("DC0", or "folder/DC0")."""
        from pyVmomi import vim

        root = self.content.rootFolder
        found: list[tuple[Any, str]] = []
        for dc, props in self._view(root, vim.Datacenter, ["name", "parent"]):
            key = str(dc._moId)
            if key not in self._dc_paths:
                parts = [props.get("name") or dc.name]
                parent = props.get("parent")
                while parent is not None and parent != root:
                    parts.append(parent.name)
                    parent = parent.parent
                self._dc_paths[key] = "/".join(reversed(parts))
            found.append((dc, self._dc_paths[key]))
        return found

    def datacenter(self, name: str | None) -> Any:
        """The vim.Datacenter called `name` (a name or an inventory path like "folder/DC0").

        With name None: the configuration's datacenter when it lists exactly one, else the only
        datacenter in the inventory. Raises VCenterNotFound when there is no such datacenter and
        PermanentError when name is None and the choice is ambiguous.
        """
        with self._calls("list datacenters"):
            return self._datacenter(name)[0]

    def _datacenter(self, name: str | None) -> tuple[Any, str]:
        if name is None and len(self.config.datacenters) == 1:
            name = self.config.datacenters[0]
        all_dcs = self._datacenters()
        paths = ", ".join(path for _, path in all_dcs) or "none"
        if name is None:
            if len(all_dcs) == 1:
                return all_dcs[0]
            raise PermanentError(
                f"vCenter {self.config.host} has {len(all_dcs)} datacenters ({paths}); name one "
                "with --vsphere-datacenter"
            )
        wanted = name.strip().strip("/")
        for dc, path in all_dcs:
            if path == wanted or dc.name == wanted:
                return dc, path
        raise VCenterNotFound(f"vCenter {self.config.host} has no datacenter {name!r} (it has: {paths})")

    def _locate(self, datastore_path: str, datacenter: str | None) -> tuple[Any, str, Any, str]:
        """(datacenter, its path, datastore, datastore name) for a "[ds] path".

        Without a datacenter and several to choose from, the one holding a datastore of that
        name is taken (restricted to the configuration's datacenters when it lists some)."""
        ds_name, _ = _split_ds_path(datastore_path)
        key = (ds_name, datacenter)
        if key not in self._located:
            self._located[key] = self._search(ds_name, datacenter)
        return self._located[key]

    def _search(self, ds_name: str, datacenter: str | None) -> tuple[Any, str, Any, str]:
        from pyVmomi import vim

        if datacenter is not None or len(self.config.datacenters) == 1:
            candidates = [self._datacenter(datacenter)]
        else:
            candidates = self._datacenters()
            if self.config.datacenters:
                listed = {d.strip("/") for d in self.config.datacenters}
                candidates = [(dc, p) for dc, p in candidates if p in listed or dc.name in listed]
        hits = []
        for dc, path in candidates:
            for ds, props in self._view(dc, vim.Datastore, ["name"]):
                if props.get("name") == ds_name:
                    hits.append((dc, path, ds, ds_name))
                    break
        if len(hits) == 1:
            return hits[0]
        where = ", ".join(p for _, p in candidates) or "none"
        if not hits:
            raise VCenterNotFound(f"vCenter {self.config.host}: no datastore {ds_name!r} in datacenter(s) {where}")
        raise PermanentError(
            f"vCenter {self.config.host}: datastore {ds_name!r} exists in several datacenters "
            f"({', '.join(h[1] for h in hits)}); name one with --vsphere-datacenter"
        )

    # --- disks ---------------------------------------------------------------------------------

    def _vsom(self) -> Any:
        manager = self.content.vStorageObjectManager
        if manager is None:
            raise VCenterError(
                f"vCenter {self.config.host} offers no VStorageObjectManager (First Class Disks "
                "need vCenter 6.5 or later)"
            )
        return manager

    def find_fcd(self, datastore_path: str, datacenter: str | None, fresh: bool = False) -> str | None:
        """The id of the FCD whose backing file is `datastore_path` ("[ds] dir/x.vmdk"), or None.

        vCenter has no lookup by path: the datastore's FCDs are listed and each read (one call
        per FCD), once per datastore per session; later lookups there use that index (`fresh`
        reads it again). Where the CSI driver keeps a path -> id record, look there first."""
        from pyVmomi import vim

        with self._calls(f"list the First Class Disks on the datastore of {datastore_path}"):
            _, dc_path, ds, ds_name = self._locate(datastore_path, datacenter)
            key = (dc_path, ds_name)
            if fresh or key not in self._fcds:
                index: dict[tuple[str, str], str] = {}
                vsom = self._vsom()
                for fcd in vsom.ListVStorageObject(datastore=ds) or []:
                    try:
                        obj = vsom.RetrieveVStorageObject(id=fcd, datastore=ds)
                    except vim.fault.NotFound:
                        continue  # removed while we looked
                    with contextlib.suppress(PermanentError):
                        index[_split_ds_path(obj.config.backing.filePath)] = str(obj.config.id.id)
                self._fcds[key] = index
            return self._fcds[key].get(_split_ds_path(datastore_path))

    def fcd_file_path(self, fcd_id: str, datastore_path: str, datacenter: str | None) -> str | None:
        """The backing file ("[ds] path") of FCD `fcd_id` on the datastore of `datastore_path`,
        or None when that datastore has no such FCD. Checks an id found elsewhere."""
        from pyVmomi import vim

        with self._calls(f"read First Class Disk {fcd_id}"):
            _, _, ds, _ = self._locate(datastore_path, datacenter)
            try:
                obj = self._vsom().RetrieveVStorageObject(id=vim.vslm.ID(id=fcd_id), datastore=ds)
            except vim.fault.NotFound:
                return None
            return str(obj.config.backing.filePath)

    def protect_fcd(self, fcd_id: str, datastore_path: str, datacenter: str | None) -> bool:
        """Make sure FCD `fcd_id` carries the keepAfterDeleteVm control flag, so that deleting a
        node VM it is attached to (node repair, cluster upgrade) keeps the disk, as the CSI
        driver does for the disks it manages. Returns the flag as read back from vCenter."""
        from pyVmomi import vim

        with self._calls(f"protect First Class Disk {fcd_id} from VM deletion"):
            _, _, ds, _ = self._locate(datastore_path, datacenter)
            vsom = self._vsom()
            disk_id = vim.vslm.ID(id=fcd_id)
            if not vsom.RetrieveVStorageObject(id=disk_id, datastore=ds).config.keepAfterDeleteVm:
                vsom.SetVStorageObjectControlFlags(id=disk_id, datastore=ds, controlFlags=["keepAfterDeleteVm"])
            return bool(vsom.RetrieveVStorageObject(id=disk_id, datastore=ds).config.keepAfterDeleteVm)

    def _wait_task(self, task: Any, timeout: float = 120) -> Any:
        """Wait for a task reading only info.state/error/result (vcsim's full TaskInfo trips
        pyVmomi); return its result or raise its fault."""
        from pyVmomi import vim, vmodl

        collector = vmodl.query.PropertyCollector
        spec = collector.FilterSpec(
            objectSet=[collector.ObjectSpec(obj=task)],
            propSet=[collector.PropertySpec(type=vim.Task, pathSet=["info.state", "info.error", "info.result"])],
        )
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            found = self.content.propertyCollector.RetrieveContents([spec])
            props = {p.name: p.val for p in (found[0].propSet if found else [])}
            state = props.get("info.state")
            if state == "success":
                return props.get("info.result")
            if state == "error":
                raise props["info.error"]
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task._moId} did not finish in {timeout:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def missing_privileges(self, datastore_path: str, datacenter: str | None) -> list[str]:
        """Which of FCD_PRIVILEGES this session lacks on the datastore of `datastore_path`
        (AuthorizationManager.HasPrivilegeOnEntities: a question, no side effect)."""
        with self._calls(f"check the privileges on the datastore of {datastore_path}"):
            _, _, ds, _ = self._locate(datastore_path, datacenter)
            session = self.content.sessionManager.currentSession
            answer = self.content.authorizationManager.HasPrivilegeOnEntities(
                entity=[ds], sessionId=session.key if session else "", privId=list(FCD_PRIVILEGES)
            )
            granted = {a.privId: a.isGranted for e in answer or [] for a in e.privAvailability or []}
            return [p for p in FCD_PRIVILEGES if not granted.get(p, False)]

    def datacenter_of(self, datastore_path: str, datacenter: str | None) -> str:
        """The inventory path of the datacenter holding the datastore of `datastore_path`, found
        as every other call finds it (the named one, else the configuration's, else every one).
        Raises VCenterNotFound, or PermanentError when several datacenters have that datastore."""
        with self._calls(f"find the datacenter of {datastore_path}"):
            return self._locate(datastore_path, datacenter)[1]

    def disk_exists(self, datastore_path: str, datacenter: str | None) -> bool:
        """Whether the file `datastore_path` exists, by the datastore browser (works for disks
        attached to running VMs too). Raises VCenterNotFound when the datastore is missing."""
        from pyVmomi import vim

        with self._calls(f"look for {datastore_path}"):
            _, _, ds, ds_name = self._locate(datastore_path, datacenter)
            _, rel = _split_ds_path(datastore_path)
            folder, _, base = rel.rpartition("/")
            spec = vim.host.DatastoreBrowser.SearchSpec(matchPattern=[base])
            task = ds.browser.SearchDatastore_Task(datastorePath=f"[{ds_name}] {folder}".rstrip(), searchSpec=spec)
            try:
                result = self._wait_task(task)
            except vim.fault.FileNotFound:
                return False
            return any(info.path == base for info in getattr(result, "file", None) or [])

    def register_fcd(self, datastore_path: str, name: str, datacenter: str | None) -> str:
        """Make the VMDK `datastore_path` a First Class Disk named `name`; return its FCD id.

        Idempotent: a disk registered already is refused with a fault that names its id
        (AlreadyExists.name on vCenter), which is returned; only when the fault does not name it
        (InvalidArgument on vcsim) are the datastore's FCDs searched (find_fcd, one call per FCD).
        Nothing is ever deleted. Raises VCenterNotFound when the file does not exist.
        """
        from pyVmomi import vim, vmodl

        with self._calls(f"register {datastore_path} as a First Class Disk"):
            _, dc_path, _, ds_name = self._locate(datastore_path, datacenter)
            _, rel = _split_ds_path(datastore_path)
            url = paths.datastore_url(_url_host(self.config.host, self.config.port), dc_path, ds_name, rel)
            try:
                obj = self._vsom().RegisterDisk(path=url, name=name)
                return str(obj.config.id.id)
            except vim.fault.AlreadyExists as exc:
                fault_id = getattr(exc, "name", None)
                if fault_id and paths.same_disk_file(
                    self.fcd_file_path(fault_id, datastore_path, datacenter), datastore_path
                ):
                    return str(fault_id)
                found = self.find_fcd(datastore_path, datacenter, fresh=True)
                if found:
                    return found
                raise VCenterError(
                    f"vCenter {self.config.host}: {datastore_path} is registered already, but "
                    f"its First Class Disk id could not be found ({_fault_text(exc)})"
                ) from exc
            except vmodl.fault.InvalidArgument as exc:
                found = self.find_fcd(datastore_path, datacenter, fresh=True)
                if found:
                    return found
                if not self.disk_exists(datastore_path, datacenter):
                    raise VCenterNotFound(f"vCenter {self.config.host}: disk {datastore_path} does not exist") from exc
                prop = getattr(exc, "invalidProperty", None)
                raise VCenterError(
                    f"vCenter {self.config.host}: cannot register {datastore_path} as a First "
                    f"Class Disk: invalid argument{f' {prop}' if prop else ''} "
                    f"({_fault_text(exc)})"
                ) from exc

    def attached_vms(self, datastore_path: str) -> list[str]:
        """Names of the VMs that have `datastore_path` as a virtual disk (directly or as the
        parent of a snapshot delta disk), sorted."""
        from pyVmomi import vim

        names: set[str] = set()
        with self._calls(f"find the VMs using {datastore_path}"):
            _split_ds_path(datastore_path)
            vms = self._view(self.content.rootFolder, vim.VirtualMachine, ["name", "config.hardware.device"])
            for _, props in vms:
                for device in props.get("config.hardware.device") or []:
                    if not isinstance(device, vim.vm.device.VirtualDisk):
                        continue
                    backing = device.backing
                    while backing is not None:
                        if paths.same_file(getattr(backing, "fileName", None), datastore_path):
                            names.add(str(props.get("name")))
                            break
                        backing = getattr(backing, "parent", None)
        return sorted(names)
