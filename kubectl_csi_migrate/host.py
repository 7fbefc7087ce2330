"""Which processes this one can see: a run's Lease and its private temporary folder name the
process that holds them, and a process that is gone may have its Lease taken over at once and its
folder removed. A pid means something only inside its pid namespace on its machine: two containers
sharing a hostname (or a /tmp) see different processes under one pid. So a process is named by
its hostname, a short tag of its machine's boot and its pid namespace, and its pid; a pid is
looked up only when the tag is ours (issue 17, item 10)."""

from __future__ import annotations

import functools
import hashlib
import os
import socket


@functools.cache
def tag() -> str:
    """8 hex digits that differ between machines (boot id) and between pid namespaces on one."""
    parts = []
    for path, read in (("/proc/sys/kernel/random/boot_id", "file"), ("/proc/self/ns/pid", "link")):
        try:
            if read == "file":
                with open(path) as f:
                    parts.append(f.read().strip())
            else:
                parts.append(os.readlink(path))
        except OSError:
            parts.append("")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:8]


def this_host() -> str:
    """`<hostname>~<tag>`: where a pid of this process's names the same process."""
    return f"{socket.gethostname()}~{tag()}"


def alive(host: str, pid: int) -> bool | None:
    """Whether process `pid` named on `host` (this_host of its process) still runs: None when
    `host` is not where this process can tell (another machine, another container)."""
    if host != this_host():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
