"""One preflight check's outcome: its name, PASS / WARN / FAIL and a message saying what to do.
Preflight (preflight.py) runs the checks of the whole cluster; an owner's own (settled, managed,
down while its claims move) are its `Owner`'s (owners.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kubectl_csi_migrate.kube.resources import Obj

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    message: str

    def to_dict(self) -> Obj:
        return asdict(self)
