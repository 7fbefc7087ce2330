"""Where the vCenter address and credentials come from, and how they are combined.

Sources, highest precedence first, field by field: explicit flags, `--vsphere-config FILE` (a
csi-vsphere.conf), the govc environment (GOVC_*), and the vSphere CSI driver's Secret in the
cluster (read by the caller through `secret_loader`, only when still needed).

Two rules keep a password from reaching the wrong server or the screen:
- a source that names a different vCenter than the one chosen contributes nothing;
- the password never appears in a repr, a str or an exception message.

TLS settings (insecure, ca_file, thumbprint) are taken together from the highest-precedence
source that sets any of them, so a CA file given on the command line is not overridden by an
`insecure-flag` in the cluster Secret.

Pure code: no Kubernetes, no pyVmomi, no output.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubectl_csi_migrate.errors import CredentialsError

DEFAULT_PORT = 443
GOVC_SOURCE = "GOVC_* environment"
FLAGS_SOURCE = "--vsphere-* flags"

_TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})
_FALSE = frozenset({"", "0", "f", "false", "n", "no", "off"})
_TLS_FIELDS = ("insecure", "ca_file", "thumbprint")
_FIELDS = ("host", "port", "user", "password", "datacenters", *_TLS_FIELDS)


@dataclass(frozen=True, kw_only=True)
class VCenterConfig:
    """One vCenter to talk to, with the credentials to use and where they came from.

    `source` names the origin(s) for messages ("--vsphere-config /etc/x.conf", "GOVC_*
    environment", "secret vmware-system-csi/vsphere-config-secret", or several joined by ", ").
    `notes` are remarks worth showing with -v (e.g. that a config listed several vCenters).
    """

    host: str
    port: int = DEFAULT_PORT
    user: str
    password: str = field(repr=False)
    insecure: bool = False
    ca_file: str | None = None
    thumbprint: str | None = None
    datacenters: tuple[str, ...] = ()
    source: str = ""
    notes: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"VCenterConfig(host={self.host!r}, port={self.port!r}, user={self.user!r}, "
            f"password={'<hidden>' if self.password else '<empty>'}, "
            f"insecure={self.insecure!r}, ca_file={self.ca_file!r}, "
            f"thumbprint={self.thumbprint!r}, datacenters={self.datacenters!r}, "
            f"source={self.source!r}, notes={self.notes!r})"
        )

    def __str__(self) -> str:
        where = f" (from {self.source})" if self.source else ""
        return f"{self.user}@{self.address}{where}"

    @property
    def address(self) -> str:
        """host:port, with brackets around an IPv6 address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


# --- csi-vsphere.conf (gcfg) -------------------------------------------------------------------

_SECTION = re.compile(r'^\[\s*([A-Za-z0-9.-]+)\s*(?:"((?:[^"\\]|\\.)*)"\s*)?\]$')
_VARIABLE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)\s*(?:=(.*))?$")


def _gcfg_value(raw: str, source: str, lineno: int, name: str) -> str:
    """Decode a gcfg value: quoted parts with \\ \" \\n \\t \\b escapes, ; and # start a
    comment outside quotes, surrounding blanks trimmed. Never echoes the value (a password)."""
    out: list[str] = []
    quoted = False
    i = 0
    pending_space = ""
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            if i + 1 >= len(raw):
                raise CredentialsError(f"{source}: line {lineno}: value of {name!r} ends with a backslash")
            nxt = raw[i + 1]
            escapes = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "b": "\b"}
            if nxt not in escapes:
                raise CredentialsError(f"{source}: line {lineno}: value of {name!r} has an invalid escape")
            out.append(pending_space + escapes[nxt])
            pending_space = ""
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
            out.append(pending_space)
            pending_space = ""
        elif not quoted and ch in ";#":
            break
        elif not quoted and ch in " \t":
            if out:
                pending_space += ch
        else:
            out.append(pending_space + ch)
            pending_space = ""
        i += 1
    if quoted:
        raise CredentialsError(f"{source}: line {lineno}: value of {name!r} has an unclosed quote")
    return "".join(out)


def _parse_gcfg(text: str, source: str) -> list[tuple[str, str | None, dict[str, str]]]:
    """Sections in file order as (lower-case name, subsection or None, {lower-case key: value});
    a repeated section is merged into its first occurrence."""
    sections: list[tuple[str, str | None, dict[str, str]]] = []
    index: dict[tuple[str, str | None], dict[str, str]] = {}
    current: dict[str, str] | None = None
    logical: list[tuple[int, str]] = []
    buffer, start = "", 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not buffer:
            start = lineno
        if line.endswith("\\") and not line.endswith("\\\\"):
            buffer += line[:-1]
            continue
        logical.append((start, buffer + line))
        buffer = ""
    if buffer:
        logical.append((start, buffer))
    for lineno, line in logical:
        stripped = line.strip()
        if not stripped or stripped[0] in ";#":
            continue
        if stripped.startswith("["):
            match = _SECTION.match(stripped)
            if match is None:
                raise CredentialsError(f"{source}: line {lineno}: malformed section header")
            name = match.group(1).lower()
            sub = match.group(2)
            if sub is not None:
                sub = re.sub(r"\\(.)", r"\1", sub)
            key = (name, sub)
            if key not in index:
                index[key] = {}
                sections.append((name, sub, index[key]))
            current = index[key]
            continue
        match = _VARIABLE.match(stripped)
        if match is None:
            raise CredentialsError(f"{source}: line {lineno}: expected 'name = value'")
        if current is None:
            raise CredentialsError(f"{source}: line {lineno}: variable outside a section")
        name = match.group(1).lower()
        raw = match.group(2)
        current[name] = "true" if raw is None else _gcfg_value(raw, source, lineno, name)
    return sections


def _parse_bool(value: str, what: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise CredentialsError(f"{what}: {value!r} is not a boolean (use true or false)")


def _parse_port(value: str, what: str) -> int:
    try:
        port = int(value.strip())
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise CredentialsError(f"{what}: {value!r} is not a port number")
    return port


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _same_host(a: str, b: str) -> bool:
    return a.strip().rstrip(".").lower() == b.strip().rstrip(".").lower()


def _conf_fields(text: str, source: str, host: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """The fields a csi-vsphere.conf gives for vCenter `host` (or its first vCenter), and notes.

    [Global] gives defaults that a [VirtualCenter "host"] section overrides key by key. When
    `host` is given and the file has no section for it, only [Global] values apply (a password
    written for another vCenter is never sent to this one)."""
    sections = _parse_gcfg(text, source)
    notes: list[str] = []
    global_values: dict[str, str] = {}
    workspace: dict[str, str] = {}
    centers: list[tuple[str, dict[str, str]]] = []
    for name, sub, values in sections:
        if name == "global" and sub is None:
            global_values = values
        elif name == "workspace" and sub is None:
            workspace = values
        elif name == "virtualcenter" and sub:
            centers.append((sub, values))
    chosen_host: str | None = None
    section: dict[str, str] = {}
    if host is not None:
        matching = [(h, v) for h, v in centers if _same_host(h, host)]
        # The legacy [Workspace] server names the vCenter its [Global] credentials belong to.
        elsewhere = [h for h, _ in centers] or [w for w in (workspace.get("server"),) if w and not _same_host(w, host)]
        if matching:
            chosen_host, section = matching[0]
        elif elsewhere:
            notes.append(
                f"{source} has no [VirtualCenter] section for {host} (it has "
                f"{', '.join(elsewhere)}); its vCenter credentials were not used"
            )
            global_values = {}
        elif workspace.get("server"):
            chosen_host = workspace["server"]
    elif centers:
        chosen_host, section = centers[0]
        if len(centers) > 1:
            notes.append(
                f"{source} lists {len(centers)} vCenters ({', '.join(h for h, _ in centers)}); "
                f"using the first, {chosen_host}"
            )
    elif workspace.get("server"):
        chosen_host = workspace["server"]
    merged = {**global_values, **section}
    fields: dict[str, Any] = {}
    if chosen_host:
        fields["host"] = chosen_host
    if merged.get("user"):
        fields["user"] = merged["user"]
    if merged.get("password"):
        fields["password"] = merged["password"]
    if merged.get("port"):
        fields["port"] = _parse_port(merged["port"], f"{source}: port")
    if "insecure-flag" in merged:
        fields["insecure"] = _parse_bool(merged["insecure-flag"], f"{source}: insecure-flag")
    if merged.get("ca-file"):
        fields["ca_file"] = merged["ca-file"]
    if merged.get("thumbprint"):
        fields["thumbprint"] = merged["thumbprint"]
    datacenters = _split_list(merged.get("datacenters", "")) or _split_list(
        workspace.get("datacenter", "") if chosen_host == workspace.get("server") else ""
    )
    if datacenters:
        fields["datacenters"] = datacenters
    return fields, notes


def _missing(fields: Mapping[str, Any]) -> list[str]:
    return [name for name in ("host", "user", "password") if not fields.get(name)]


def _build(fields: Mapping[str, Any], source: str, notes: list[str] | tuple[str, ...]) -> VCenterConfig:
    return VCenterConfig(
        host=fields.get("host") or "",
        port=fields.get("port") or DEFAULT_PORT,
        user=fields.get("user") or "",
        password=fields.get("password") or "",
        insecure=bool(fields.get("insecure", False)),
        ca_file=fields.get("ca_file") or None,
        thumbprint=fields.get("thumbprint") or None,
        datacenters=tuple(fields.get("datacenters") or ()),
        source=source,
        notes=tuple(notes),
    )


def parse_csi_vsphere_conf(text: str, source: str, host: str | None = None) -> VCenterConfig:
    """Read the vSphere CSI driver's csi-vsphere.conf (gcfg: INI with quoted values).

    [Global] keys (user, password, port, insecure-flag, ca-file, thumbprint, datacenters) are
    defaults; a [VirtualCenter "host"] section overrides them. With several VirtualCenter
    sections the first is used (or the one for `host`, when given) and a note says so. The old
    cloud provider's [Workspace] server/datacenter is accepted when there is no VirtualCenter
    section. Raises CredentialsError (a PermanentError) naming `source` and what is missing;
    the message never contains the password.
    """
    fields, notes = _conf_fields(text, source, host)
    missing = _missing(fields)
    if missing:
        what = {"host": '[VirtualCenter "<host>"] section', "user": "user", "password": "password"}
        raise CredentialsError(
            f"{source}: no {', no '.join(what[m] for m in missing)} in the vSphere CSI config"
            + (f" for vCenter {fields['host']}" if fields.get("host") else "")
        )
    return _build(fields, source, notes)


# --- govc environment --------------------------------------------------------------------------


def _split_server(value: str, what: str) -> dict[str, Any]:
    """host, port, user, password from "host", "host:port" or "https://[user:pass@]host[:port]/sdk"
    (userinfo percent-decoded). Messages never echo the value: it may hold a password."""
    text = value.strip()
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise CredentialsError(f"{what} is not a valid vCenter URL or host[:port]") from exc
    if parts.scheme.lower() != "https":
        raise CredentialsError(f"{what}: only https:// vCenter URLs are supported")
    if not parts.hostname:
        raise CredentialsError(f"{what} names no host")
    fields: dict[str, Any] = {"host": parts.hostname}
    if port:
        fields["port"] = port
    if parts.username:
        fields["user"] = urllib.parse.unquote(parts.username)
    if parts.password:
        fields["password"] = urllib.parse.unquote(parts.password)
    return fields


def _govc_fields(environ: Mapping[str, str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if environ.get("GOVC_URL", "").strip():
        fields.update(_split_server(environ["GOVC_URL"], "GOVC_URL"))
    if environ.get("GOVC_USERNAME"):
        fields["user"] = environ["GOVC_USERNAME"]
    if environ.get("GOVC_PASSWORD"):
        fields["password"] = environ["GOVC_PASSWORD"]
    if environ.get("GOVC_INSECURE", "").strip():
        fields["insecure"] = _parse_bool(environ["GOVC_INSECURE"], "GOVC_INSECURE")
    if environ.get("GOVC_TLS_CA_CERTS", "").strip():
        fields["ca_file"] = environ["GOVC_TLS_CA_CERTS"].strip()
    if environ.get("GOVC_DATACENTER", "").strip():
        fields["datacenters"] = (environ["GOVC_DATACENTER"].strip(),)
    return fields


def from_govc_env(environ: Mapping[str, str]) -> VCenterConfig | None:
    """The vCenter the govc environment names, or None when GOVC_URL is not set.

    GOVC_URL is "host", "host:port" or "https://[user:pass@]host[:port]/sdk" (userinfo
    percent-encoded); GOVC_USERNAME and GOVC_PASSWORD override its userinfo, as in govc.
    GOVC_INSECURE (1/true), GOVC_DATACENTER, GOVC_TLS_CA_CERTS (CA file(s), separated by
    os.pathsep) complete it. user/password are "" when the environment has none.
    """
    if not environ.get("GOVC_URL", "").strip():
        return None
    return _build(_govc_fields(environ), GOVC_SOURCE, ())


# --- precedence --------------------------------------------------------------------------------


def _flag_fields(flags: Mapping[str, str | bool | None]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    server = flags.get("server")
    if isinstance(server, str) and server.strip():
        fields.update(_split_server(server, "--vsphere-server"))
    port = flags.get("port")
    if port is not None and str(port).strip():
        fields["port"] = _parse_port(str(port), "--vsphere-port")
    for key in ("user", "password", "ca_file"):
        value = flags.get(key)
        if isinstance(value, str) and value:
            fields[key] = value
    insecure = flags.get("insecure")
    if insecure is True:  # a store_true flag's False means "not given", not "verify"
        fields["insecure"] = True
    elif isinstance(insecure, str):
        fields["insecure"] = _parse_bool(insecure, "--vsphere-insecure")
    datacenter = flags.get("datacenter")
    if isinstance(datacenter, str) and _split_list(datacenter):
        fields["datacenters"] = _split_list(datacenter)
    return fields


def _read_config_file(path: str) -> str:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise CredentialsError(f"--vsphere-config {path}: cannot read it ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise CredentialsError(f"--vsphere-config {path}: not a text file") from exc


class _Merger:
    """Fills fields from sources in precedence order, keeping track of who gave what."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.sources: list[str] = []
        self.notes: list[str] = []
        self.tried: list[str] = []
        self.tls_from: str | None = None

    @property
    def host(self) -> str | None:
        host = self.fields.get("host")
        return str(host) if host else None

    def add(self, source: str, fields: Mapping[str, Any]) -> None:
        if not fields:
            self.tried.append(f"{source} (nothing set)")
            return
        other = fields.get("host")
        if self.host and other and not _same_host(self.host, other):
            self.notes.append(f"{source} names vCenter {other}, not {self.host}: ignored")
            self.tried.append(f"{source} (for another vCenter, {other})")
            return
        gave = [name for name in _FIELDS if name in fields and name not in self.fields]
        if self.tls_from is not None:
            gave = [name for name in gave if name not in _TLS_FIELDS]
        elif any(name in fields for name in _TLS_FIELDS):
            self.tls_from = source
        for name in gave:
            self.fields[name] = fields[name]
        if gave:
            self.sources.append(source)
        shown = [name for name in gave if name != "password"]
        if "password" in gave:
            shown.append("password")
        self.tried.append(f"{source} ({', '.join(shown) if shown else 'nothing new'})")

    def complete(self) -> bool:
        return not _missing(self.fields)


def resolve(
    flags: Mapping[str, str | None],
    config_file: str | None,
    environ: Mapping[str, str],
    secret_loader: Callable[[], tuple[str, str] | None],
) -> VCenterConfig:
    """Combine all sources into the vCenter to use, field by field.

    Precedence: `flags` (keys server, port, user, password, insecure, ca_file, datacenter;
    None or "" = not given; a bool insecure is accepted, False meaning not given) >
    `config_file` (a csi-vsphere.conf) > GOVC_* in `environ` > the
    cluster's vSphere CSI Secret. `secret_loader()` returns (csi-vsphere.conf text, description
    such as "secret vmware-system-csi/vsphere-config-secret") or None when there is none; it is
    called only when host, user or password are still missing. A source naming another vCenter
    than the one already chosen is ignored (and noted). Raises CredentialsError listing what
    was tried when no host, user and password result.
    """
    merger = _Merger()
    merger.add(FLAGS_SOURCE, _flag_fields(flags))
    if config_file:
        source = f"--vsphere-config {config_file}"
        fields, notes = _conf_fields(_read_config_file(config_file), source, merger.host)
        merger.notes.extend(notes)
        merger.add(source, fields)
    else:
        merger.tried.append("--vsphere-config (not given)")
    merger.add(GOVC_SOURCE, _govc_fields(environ))
    if not merger.complete():
        loaded = secret_loader()
        if loaded is None:
            merger.tried.append("the vSphere CSI driver's Secret in the cluster (not found)")
        else:
            text, source = loaded
            fields, notes = _conf_fields(text, source, merger.host)
            merger.notes.extend(notes)
            merger.add(source, fields)
    missing = _missing(merger.fields)
    if missing:
        host = merger.host
        raise CredentialsError(
            f"no vCenter {', '.join(missing)}"
            + (f" for {host}" if host else "")
            + f". Tried: {'; '.join(merger.tried)}. Give --vsphere-server, --vsphere-user and "
            "--vsphere-password, or --vsphere-config FILE (a csi-vsphere.conf), or set GOVC_URL, "
            "GOVC_USERNAME and GOVC_PASSWORD"
        )
    return _build(merger.fields, ", ".join(merger.sources), merger.notes)
