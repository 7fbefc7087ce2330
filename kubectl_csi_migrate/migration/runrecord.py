"""A run as one typed, versioned value: `Run` is who runs what (its `run.json`, kept alike in the
working directory and in the record in the cluster), read only through `Run.from_dict`, the one
place where a record written by an earlier or a later release is read. `Store` is what both
places that keep a run offer (workdir.WorkDir, record.ClusterStore): the run as a `RunRecord`
(the run, each step's last event, the backups), and writing one back.

Formats: 1, the releases before this one (no `format` field; a plan without a key, or with
`statefulset` for its name: plan.Plan.from_dict reads those); 2, this release (`format: 2`, the
same fields). A later format is refused before anything changes (RecordTooNew): an older release
must not resume or roll back a run whose record it may misread."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from kubectl_csi_migrate.errors import RecordTooNew
from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration.plan import Plan, owner_id

FORMAT = 2
"""The format of the run records this release writes."""

END_FLAGS = ("finished", "rolling_back", "rolled_back")
"""What a run says of its end, in the order they can happen."""


def check_format(data: Obj, where: str) -> int:
    """The format of the run stored as `data` (in `where`); RecordTooNew when a later release wrote it."""
    version = int(data.get("format") or 1)
    if version > FORMAT:
        raise RecordTooNew(
            f"{where} holds a run recorded by a later release of kubectl-csi-migrate (record format "
            f"{version}; this one reads up to {FORMAT}): nothing was changed; use that release or a later "
            "one to resume, roll back or report on it"
        )
    return version


@dataclass(frozen=True)
class Run:
    run_id: str
    started: float
    plan: Plan
    options: dict[str, Any] = field(default_factory=dict)
    """The run's own options (`keep_retain`), checked again when it is resumed."""
    finished: bool = False
    rolling_back: bool = False
    """From the first undo on, the run can only be rolled back further, not resumed."""
    rolled_back: bool = False
    format: int = FORMAT
    plan_data: Obj = field(default_factory=dict, compare=False, repr=False)
    """The plan as stored (owner_id reads a record's owner from it as written)."""

    @classmethod
    def from_dict(cls, data: Obj, where: str) -> Run:
        """The run stored as `data` (in `where`, for the error). RecordTooNew when a later release
        wrote it."""
        version = check_format(data, where)
        return cls(
            run_id=str(data.get("run_id") or ""),
            started=float(data.get("started") or 0),
            plan=Plan.from_dict(data["plan"]),
            options=dict(data.get("options") or {}),
            finished=bool(data.get("finished")),
            rolling_back=bool(data.get("rolling_back")),
            rolled_back=bool(data.get("rolled_back")),
            format=version,
            plan_data=data["plan"],
        )

    def to_dict(self) -> Obj:
        """As stored: in the format this release writes."""
        return {
            "format": FORMAT,
            "run_id": self.run_id,
            "started": self.started,
            "plan": self.plan_data or self.plan.to_dict(),
            "options": self.options,
            "finished": self.finished,
            **{flag: True for flag in ("rolling_back", "rolled_back") if getattr(self, flag)},
        }

    @property
    def owner(self) -> tuple[str, str, str, str]:
        """(server, namespace, kind, name) as the stored plan names them."""
        return owner_id(self.plan_data) if self.plan_data else self.plan.owner

    @property
    def keep_retain(self) -> bool:
        return bool(self.options.get("keep_retain"))

    @property
    def ends(self) -> dict[str, bool]:
        """The end flags set (finished, rolling back, rolled back)."""
        return {flag: True for flag in END_FLAGS if getattr(self, flag)}

    @property
    def state(self) -> str:
        """The run's end in words: rolled back, being rolled back, finished or unfinished."""
        for flag, said in (
            ("rolled_back", "rolled back"),
            ("rolling_back", "being rolled back"),
            ("finished", "finished"),
        ):
            if getattr(self, flag):
                return said
        return "unfinished"


@dataclass
class RunRecord:
    """A run with what it did: each step's last event (with what it recorded) and the backups of
    the objects it changed."""

    run: Run
    steps: dict[str, Obj]
    backups: list[Obj] = field(default_factory=list)


class Store(Protocol):
    """Where a run is kept: the working directory, or the record in the cluster."""

    def load_record(self) -> RunRecord | None:
        """The run kept here, or None when there is none."""
        ...

    def save_record(self, record: RunRecord) -> None:
        """Keep `record` here (as the run's record of this place would have it)."""
        ...
