"""vSphere datastore paths ("[datastore] folder/disk.vmdk"), parsed here only: the plan, preflight
and the vCenter client all read them through these functions. No pyVmomi."""

from __future__ import annotations

import re
import urllib.parse

_DATASTORE_PATH = re.compile(r"^\[(?P<datastore>[^\[\]]*)\]\s*(?P<path>.*)$")


def _parse(path: str) -> tuple[str, str]:
    """(bracket content, path inside the datastore), both non-empty, else ValueError."""
    match = _DATASTORE_PATH.match(path.strip())
    if match is None:
        raise ValueError(f"not a vSphere datastore path: {path!r} (expected '[datastore] folder/disk.vmdk')")
    datastore = match.group("datastore").strip()
    inner = match.group("path").strip()
    if not datastore:
        raise ValueError(f"datastore path {path!r} names no datastore inside the brackets")
    if not inner:
        raise ValueError(f"datastore path {path!r} has no file path after the datastore")
    return datastore, inner


def parse_datastore_path(path: str) -> tuple[str, str]:
    """Split a vSphere datastore path into (bracket content, path inside the datastore).

    "[ds-1] kubevols/x.vmdk" -> ("ds-1", "kubevols/x.vmdk"). The bracket content is kept whole:
    "[folder/ds] a/b.vmdk" -> ("folder/ds", "a/b.vmdk"); `datastore_name` gives the datastore's
    own name. Raises ValueError when path is not of that form or does not name a .vmdk file.
    """
    datastore, inner = _parse(path)
    filename = inner.rsplit("/", 1)[-1]
    if not filename.lower().endswith(".vmdk") or filename.lower() == ".vmdk":
        raise ValueError(f"datastore path {path!r} does not name a .vmdk disk")
    return datastore, inner


def datastore_name(bracket: str) -> str:
    """Return the datastore's name from a bracket's content: "folder/ds" -> "ds".

    A datastore in a folder (or a datastore cluster) is written "[folder/ds]" in a volumePath,
    but vCenter's dsName parameter wants the datastore's own name, the last segment.
    """
    name = bracket.strip().rsplit("/", 1)[-1].strip()
    if not name:
        raise ValueError(f"no datastore name in {bracket!r}")
    return name


def split(path: str) -> tuple[str, str]:
    """(the datastore's own name, the file's path in it) of any file's datastore path:
    "[folder/ds] dir/x.vmdk" -> ("ds", "dir/x.vmdk"). ValueError when it is not one."""
    bracket, inner = _parse(path)
    rel = inner.lstrip("/")
    if not rel:
        raise ValueError(f"datastore path {path!r} has no file path after the datastore")
    return datastore_name(bracket), rel


def same_file(a: str | None, b: str) -> bool:
    """Whether two datastore paths name the same file ("[f/ds] x" and "[ds] x" do)."""
    if not a:
        return False
    try:
        return split(a) == split(b)
    except ValueError:
        return False


def same_disk_file(a: str | None, b: str) -> bool:
    """Looser than same_file, to confirm the id vCenter named in AlreadyExists: same datastore
    and file name, any folder (vSAN shows a folder by its UUID or by its name)."""
    if not a:
        return False
    try:
        (ds_a, rel_a), (ds_b, rel_b) = split(a), split(b)
    except ValueError:
        return False
    return ds_a == ds_b and rel_a.rsplit("/", 1)[-1] == rel_b.rsplit("/", 1)[-1]


def disk_key(path: str) -> str:
    """`[folder/ds]  dir/x.vmdk` and `[ds] dir/x.vmdk` name the same disk."""
    try:
        bracket, rel = parse_datastore_path(path.strip())
    except ValueError:
        return " ".join(path.split())
    return f"[{datastore_name(bracket)}] {rel.strip()}"


def datastore_url(host: str, dc_path: str, ds_name: str, rel: str) -> str:
    """The URL form RegisterDisk accepts (it rejects "[ds] path"):
    `https://<host>/folder/<rel>?dcPath=<datacenter path>&dsName=<datastore name>`; `host` with its
    port unless 443. The path is URL-escaped keeping "/", dcPath and dsName entirely (spaces as %20)."""
    query = urllib.parse.urlencode({"dcPath": dc_path, "dsName": ds_name}, quote_via=urllib.parse.quote)
    return f"https://{host}/folder/{urllib.parse.quote(rel, safe='/')}?{query}"
