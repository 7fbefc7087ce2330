"""Every kind of step, gathered: the table the run and rollback act from (`KINDS`), and what is
derived from it for everything else: the API access of any run of an owner (preflight's `rbac`
check and the RBAC section of docs/commands.md print it), and which steps the run's record in the cluster may lag
behind (`may_have_run`, `steps_to_undo`: status and rollback read them).

Each kind itself (its do, undo, needs, owners, whether the record is written after it) is defined
beside its do and undo: workload.py, volumes.py, disks.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubectl_csi_migrate.migration import disks, volumes, workload
from kubectl_csi_migrate.migration.context import OWNER, Access, Kind, crud
from kubectl_csi_migrate.migration.owners import steps_for
from kubectl_csi_migrate.migration.plan import OwnerKind, Plan, Strategy
from kubectl_csi_migrate.migration.steps import Event, Step, StepKind

if TYPE_CHECKING:
    from kubectl_csi_migrate.kube.client import Kube

KINDS: dict[StepKind, Kind] = {
    k.name: k
    for k in (
        # every run's, in the order a run takes them
        workload.BACKUP, volumes.RETAIN, disks.DETACH, volumes.DELETE_PVC, volumes.DELETE_PV, disks.CNS_RELEASE,
        disks.FCD, volumes.CREATE_PV, volumes.CREATE_PVC, volumes.RESTORE_RECLAIM_POLICY,
        # those that stop and start one kind of owner
        workload.DELETE_STATEFULSET, workload.SCALE_DOWN, workload.SCALE_TO_ZERO, workload.EVICT,
        workload.RECREATE_POD, workload.RECREATE_STATEFULSET, workload.SCALE_BACK,
    )
}  # fmt: skip
"""Every kind of step by name, in the order their access is listed (a unit test checks each
StepKind has one, and that every module's kinds are here)."""

RUN_NEEDS: tuple[Access, ...] = (
    # One run per StatefulSet: a Lease in its namespace, taken, renewed and given back; so is the
    # Lease of each disruption budget covering a pod it may take down (budget.py), which it
    # finds in a list of the namespace's budgets.
    *crud("Lease", "get", "create", "update", "patch", "delete"),
    *crud("PodDisruptionBudget", "list"),
    # Before each replica: has the StatefulSet been put back by someone else?
    *crud(OWNER, "get"),
    # The run's record in the cluster (migration/record.py), written as steps finish.
    *crud("ConfigMap", "get", "create", "patch"),
    # The plan reads the CSI StorageClass (resume and rollback check it still exists).
    *crud("StorageClass", "get"),
    # Every PV, listed once and followed by a watch (kube/cache.py): no second PV for a disk.
    *crud("PersistentVolume", "list", "watch", "get"),
    # The namespace's pods and claims, the same way: read and waited on from that view.
    *crud("Pod", "list", "watch"),
    *crud("PersistentVolumeClaim", "list", "watch"),
)


def _union(groups: list[tuple[Access, ...]]) -> tuple[Access, ...]:
    seen: dict[Access, None] = {}
    for group in groups:
        for access in group:
            seen.setdefault(access)
    return tuple(seen)


_KIND_ORDER = (
    "StatefulSet", "Deployment", "ReplicaSet", "Pod", "PersistentVolumeClaim", "PersistentVolume", "VolumeAttachment",
)  # fmt: skip


def _ordered(access: tuple[Access, ...]) -> tuple[Access, ...]:
    """Grouped by resource (the order docs/commands.md lists them), each resource's verbs as first needed."""
    rank = {kind: i for i, kind in enumerate(_KIND_ORDER)}
    return tuple(sorted(access, key=lambda a: rank.get(a[1], len(rank))))


def as_owner(kind: str, access: tuple[Access, ...]) -> tuple[Access, ...]:
    """`access` (a Kind's needs, RUN_NEEDS) with the owner's kind in place of OWNER."""
    return tuple((verb, kind if k == OWNER else k, sub) for verb, k, sub in access)


def access_for(kind: str) -> tuple[Access, ...]:
    """What any run (or rollback) of an owner of `kind` asks the API server, either strategy:
    preflight's `rbac` check asks for each, from the same kinds the run takes."""
    kinds = [k for k in KINDS.values() if k.owners is None] + [
        k for k in KINDS.values() if k.owners and kind in k.owners
    ]
    return _ordered(_union([as_owner(kind, k.needs) for k in kinds] + [as_owner(kind, RUN_NEEDS)]))


REQUIRED_ACCESS: tuple[Access, ...] = _ordered(_union([access_for(kind) for kind in OwnerKind]))
"""Everything any step of any run (done or undone) and the run around them ask the API server:
the RBAC section of docs/commands.md is printed from it."""


def may_have_run(plan: Plan, record: dict[str, dict[str, object]]) -> set[str]:
    """The steps the record in the cluster does not show that may have run: it keeps "done"
    events only, written after some kinds of step (`Kind.recorded_after`), so after the last step it
    shows, every step up to the next one it is written after may have run; offline, where the
    volumes move side by side, that holds for each volume's chain of steps.

    A rollback's entries ("undo-start", "undone") are not the run's: the gap is looked for among
    the steps the run recorded ("start", "done"), and ends at the first step with any entry. A
    rollback undoes last first, so what it has undone is the tail of what it set out to undo: a
    rollback stopped part-way and started again (from its working directory, or from the record
    alone, however often) finds the steps the first one did, less those undone (and, from the
    record, less any the first one's working directory showed never started), and never a step
    past them (one the run never reached, whose undo would act on what the rollback put back)."""
    chains: dict[str, list[Step]] = {}
    for step in steps_for(plan):
        side_by_side = plan.strategy == Strategy.OFFLINE and step.pv and step.ordinal is not None
        chains.setdefault(step.pv if side_by_side else "", []).append(step)
    ran = {step for step, entry in record.items() if entry.get("event") in (Event.START, Event.DONE)}
    maybe: set[str] = set()
    for chain in chains.values():
        first = next((i for i, step in enumerate(chain) if step.id not in ran), len(chain))
        for step in chain[first:]:
            if step.id in record:  # recorded further on, or being undone or undone (so is the rest)
                break
            maybe.add(step.id)
            if KINDS[step.kind].recorded_after:
                break
    return maybe


def steps_to_undo(plan: Plan, record: dict[str, dict[str, object]]) -> list[Step]:
    """What a rollback undoes, last first: every step recorded (started, done, being undone) and
    not undone yet, and each step that may have run without being recorded (may_have_run), as
    long as it is not undone either. The same rule for the first rollback and for each one
    started again after it stopped, from its working directory or rebuilt from the record in
    the cluster: the record keeps the "undone" events, and undoing a step that never started (or
    was undone already) finds nothing to undo."""
    maybe = may_have_run(plan, record)
    return [
        s
        for s in reversed(steps_for(plan))
        if record.get(s.id, {}).get("event") not in (None, Event.UNDONE) or s.id in maybe
    ]


def check_on_server(kube: Kube, plan: Plan) -> None:
    """Server dry run (`--dry-run=server`; `kube` sends every change with dryRun=All): each step's
    change as its Kind sends it, in the run's order, so that the API server (admission, RBAC, the
    disruption budget for evictions) validates it; as far as a change does not depend on one the
    dry run did not make (one eviction, no create)."""
    sent: set[StepKind] = set()
    for step in steps_for(plan):
        kind = KINDS[step.kind]
        if kind.dry_run is not None and not (kind.dry_run_once and step.kind in sent):
            kind.dry_run(kube, plan, step)
            sent.add(step.kind)
