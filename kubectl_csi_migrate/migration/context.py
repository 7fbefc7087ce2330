"""What a step kind is, and what its do and undo may use of the run.

A kind of step (`Kind`) is one object, defined beside its do and undo (workload.py for the owner
and its pods, volumes.py for claims and PVs, disks.py for the disk in vCenter) and gathered in
kinds.py: how it is done and undone, the API access either needs, whether the run's record in the
cluster is written after it, and the owner kinds whose runs take it.

A step's do and undo see the run through `Context`, not the run itself: the run (run.Migration)
is one Context, a unit test's fake is another, and the step modules never import the run.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration.plan import OwnerKind
from kubectl_csi_migrate.migration.steps import Step, StepKind

if TYPE_CHECKING:
    from kubectl_csi_migrate.kube import predicates as p
    from kubectl_csi_migrate.kube.cache import Cache
    from kubectl_csi_migrate.kube.client import Kube
    from kubectl_csi_migrate.migration.plan import Plan, VolumePlan
    from kubectl_csi_migrate.migration.report import Timing
    from kubectl_csi_migrate.migration.workdir import WorkDir
    from kubectl_csi_migrate.vsphere.client import VCenter


Access = tuple[str, str, str]
"""(verb, kind, subresource), as the RBAC rules of the API server name them."""

OWNER = "Owner"
"""Stands for the owner's kind in a Kind's `needs`: StatefulSet, Deployment, ReplicaSet or (a
claim's run) PersistentVolumeClaim; kinds.access_for puts the plan's in."""


def crud(kind: str, *verbs: str) -> tuple[Access, ...]:
    return tuple((verb, kind, "") for verb in verbs)


@dataclass
class Settings:
    keep_retain: bool = False
    """Leave the new PVs on Retain instead of restoring the original policy."""
    timeout: float = 600.0
    """Longest wait for any one thing (a pod gone, a PVC Bound...)."""
    release_timeout: float = 300.0
    """Longest wait for the CSI syncer to release an in-tree disk (it does so in the PV's delete
    event, within seconds; longer means the syncer is down or missed the event)."""
    datacenter: str | None = None


class Context(Protocol):
    """The run as a step's do and undo see it (run.Migration is one)."""

    kube: Kube
    plan: Plan
    workdir: WorkDir
    settings: Settings
    run_id: str
    done: dict[str, Obj]
    """The steps done so far, by id: their results (an FCD id, when a PV was gone)."""
    pvs: Cache
    caches: dict[tuple[str, str | None], Cache]
    live: Callable[[str], contextlib.AbstractContextManager[None]] | None
    stopping: threading.Event

    @property
    def timing(self) -> Timing: ...

    @property
    def vsphere(self) -> VCenter: ...

    def say(self, line: str) -> None: ...

    def volume(self, step: Step) -> VolumePlan: ...

    def wait(
        self,
        kind: str,
        predicate: p.Predicate,
        what: str,
        timeout: float | None = None,
        label: str | None = None,
        **selectors: Any,
    ) -> dict[str, Obj]: ...

    def wait_gone(self, kind: str, name: str, uid: str | None, what: str, namespace: str | None = None) -> None: ...

    def sleep(self, seconds: float) -> None: ...

    def vcenter(self, call: Callable[[], Any]) -> Any: ...

    def event(self, kind: str, api_version: str, obj: Obj, reason: str, message: str) -> None: ...


Do = Callable[[Context, Step], "Obj | None"]
Undo = Callable[[Context, Step], None]
DryRun = Callable[["Kube", "Plan", Step], object]
"""A step's change sent with dryRun=All (`--dry-run=server`), for the API server to validate."""


def nothing(ctx: Context, step: Step) -> None:
    """Waits and vCenter registrations have nothing to undo."""


@dataclass(frozen=True)
class Kind:
    """One kind of step: everything the run, rollback, preflight and the docs know of it."""

    name: StepKind
    do: Do
    undo: Undo
    needs: tuple[Access, ...]
    """What it asks the API server, done or undone (OWNER for the owner's kind). The run re-reads
    live objects before acting and waits with list+watch. In the order docs/commands.md prints them."""
    owners: frozenset[OwnerKind] | None = None
    """The owner kinds whose runs take it; None: every run (the backup, the volume's own steps,
    the reclaim policy)."""
    recorded_after: bool = False
    """The run's record in the cluster is written after it: the run's own changes to the owner,
    each volume's FCD id once known. kinds.may_have_run allows for the lag."""
    dry_run: DryRun | None = None
    """Its first change, sent as a server dry run (None: it changes nothing the API server could
    check beforehand: a wait, a vCenter call, an object made from one the dry run did not make)."""
    dry_run_once: bool = False
    """Only its first step is dry-run: the next ones depend on it having happened (an eviction
    and the disruption budget)."""
