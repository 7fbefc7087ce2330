"""The migration as a list of steps (`owners.steps_for` makes the list): one list drives the run,
the plan shown before it, the server dry run, preflight's permission check, `status`, `rollback`
and the kill tests.

A step is a value: its id (recorded in the working directory; `step_id` builds it, `parse_id`
reads it back), its kind, the object it acts on, one line saying what it does and one saying how
it is undone. Everything else about a kind of step (its do and undo, the API access they need,
whether the record in the cluster is written after it, the owners whose runs take it) is its
`Kind` (context.py), defined beside its do and undo in workload.py (the owner and its pods),
volumes.py (claims and PVs) or disks.py (the disk in vCenter), and gathered in kinds.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class StepKind(StrEnum):
    """The kinds of step, as the working directory and the record in the cluster name them (the
    first part of a step's id). What each does, undoes and needs: its `Kind` (kinds.py)."""

    BACKUP = "backup"
    RETAIN = "retain"
    SCALE_DOWN = "scale-down"
    SCALE_TO_ZERO = "scale-to-zero"
    DELETE_STATEFULSET = "delete-statefulset"
    EVICT = "evict"
    DETACH = "detach"
    DELETE_PVC = "delete-pvc"
    DELETE_PV = "delete-pv"
    CNS_RELEASE = "cns-release"
    FCD = "fcd"
    CREATE_PV = "create-pv"
    CREATE_PVC = "create-pvc"
    RECREATE_POD = "recreate-pod"
    RECREATE_STATEFULSET = "recreate-statefulset"
    SCALE_BACK = "scale-back"
    RESTORE_RECLAIM_POLICY = "restore-reclaim-policy"


class Event(StrEnum):
    """What the working directory and the record in the cluster keep of a step."""

    START = "start"
    DONE = "done"
    UNDO_START = "undo-start"
    UNDONE = "undone"


def step_id(kind: StepKind, name: str = "") -> str:
    """A step's id: `kind`, or `kind/object name` for a step of one pod, claim or PV. The one
    place an id is built; `parse_id` reads one back."""
    return f"{kind.value}/{name}" if name else kind.value


@dataclass(frozen=True)
class FcdResult:
    """The result of a volume's `fcd` step (disks.ensure_fcd), as the working directory keeps it."""

    fcd_id: str = ""
    """'' before the step ran."""
    keep_after_delete_vm: bool = False


def fcd_result(done: Mapping[str, Mapping[str, Any]], pv: str) -> FcdResult:
    """The result of volume `pv`'s `fcd` step among the steps `done`."""
    entry = done.get(step_id(StepKind.FCD, pv), {})
    return FcdResult(str(entry.get("fcd_id") or ""), bool(entry.get("keep_after_delete_vm")))


def fcd_of(done: Mapping[str, Mapping[str, Any]], pv: str) -> str:
    """The disk's FCD id, as volume `pv`'s `fcd` step found or registered it ('' before it ran):
    read by create-pv and create-pvc, the rollback, the report and the record."""
    return fcd_result(done, pv).fcd_id


def gone_at(done: Mapping[str, Mapping[str, Any]], pv: str) -> str | None:
    """The result of volume `pv`'s `delete-pv` step: the API server's Date when the in-tree PV was
    gone (None before it ran). Read by cns-release, to judge whether the syncer has run since."""
    value = done.get(step_id(StepKind.DELETE_PV, pv), {}).get("gone_at")
    return str(value) if value else None


def parse_id(step: str) -> tuple[StepKind, str]:
    """(kind, object name) of a step id; ValueError if it is not one."""
    kind, _, name = step.partition("/")
    return StepKind(kind), name


@dataclass(frozen=True)
class Step:
    id: str
    """Recorded in the working directory: `kind` or `kind/object name`."""
    kind: StepKind
    target: str
    """The object acted on, kubectl style (`persistentvolume/pvc-1234`)."""
    does: str
    undoes: str
    ordinal: int | None = None
    """The replica the step belongs to, None for the StatefulSet-wide steps."""
    pv: str = ""
    """The volume (old and new PV name) a per-volume step moves."""
