"""The migration as a list of steps: one list drives the run, the plan shown before it, the
server dry run, preflight's permission check, `status`, `rollback` and the kill tests.

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

from kubectl_csi_migrate.migration.plan import CLAIM, DEPLOYMENT, REPLICASET, STATEFULSET, Plan, Strategy


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


def steps_for(plan: Plan) -> list[Step]:
    """Every step of a run of `plan`, in the order the run takes them (rollback: reversed)."""
    ns = plan.namespace
    sts = plan.ref
    is_sts = plan.kind == STATEFULSET
    what = {STATEFULSET: "StatefulSet", DEPLOYMENT: "Deployment", REPLICASET: "ReplicaSet", CLAIM: "claim"}[plan.kind]
    steps = [
        Step(
            step_id(StepKind.BACKUP),
            StepKind.BACKUP,
            sts,
            f"back up the {what}, {'its' if plan.kind != CLAIM else 'the'} pods, PVCs and PVs to the working directory",
            "nothing (the backups stay)",
        )
    ]
    steps += [
        Step(
            step_id(StepKind.RETAIN, v.pv),
            StepKind.RETAIN,
            f"persistentvolume/{v.pv}",
            f"set persistentvolume/{v.pv} reclaim policy to Retain",
            f"restore persistentvolume/{v.pv} reclaim policy to {v.reclaim_policy}",
            pv=v.pv,
        )
        for v in plan.to_migrate()
    ]
    if plan.kind in (DEPLOYMENT, REPLICASET):
        steps.append(
            Step(
                step_id(StepKind.SCALE_TO_ZERO),
                StepKind.SCALE_TO_ZERO,
                sts,
                f"scale {sts} to 0, wait until its pods are gone (the application is down from here)",
                f"scale {sts} back to {plan.replicas}",
            )
        )
    if is_sts and plan.strategy == Strategy.OFFLINE:
        steps.append(
            Step(
                step_id(StepKind.SCALE_DOWN),
                StepKind.SCALE_DOWN,
                sts,
                f"scale {sts} to 0 (the application is down from here)",
                f"scale {sts} back to {plan.replicas}",
            )
        )
    if is_sts:
        steps.append(
            Step(
                step_id(StepKind.DELETE_STATEFULSET),
                StepKind.DELETE_STATEFULSET,
                sts,
                f"delete {sts} with propagationPolicy Orphan (pods keep running)",
                f"create {sts} again from its backup (in-tree templates), wait until it owns Ready pods",
            )
        )
    # One pod at a time: a StatefulSet's replica (rolling), or the bare pod mounting a claim.
    stops_pods = (is_sts and plan.strategy == Strategy.ROLLING) or (plan.kind == CLAIM and bool(plan.pod))
    for ordinal in plan.ordinals_descending():
        pod = plan.pod_name(ordinal)
        if stops_pods:
            steps.append(
                Step(
                    step_id(StepKind.EVICT, pod),
                    StepKind.EVICT,
                    f"pod/{pod}",
                    f"evict pod/{pod}",
                    f"create pod/{pod} again from its backup, wait until Ready",
                    ordinal,
                )
            )
        for v in plan.to_migrate(ordinal):
            pv, pvc = f"persistentvolume/{v.pv}", f"persistentvolumeclaim/{v.pvc}"
            steps += [
                Step(
                    step_id(StepKind.DETACH, v.pv),
                    StepKind.DETACH,
                    pv,
                    f"wait until {v.vmdk} is detached",
                    "nothing",
                    ordinal,
                    v.pv,
                ),
                Step(
                    step_id(StepKind.DELETE_PVC, v.pvc),
                    StepKind.DELETE_PVC,
                    pvc,
                    f"delete {pvc} (its PV is Retain)",
                    f"create {pvc} again from its backup, wait Bound to the in-tree {pv}",
                    ordinal,
                    v.pv,
                ),
                Step(
                    step_id(StepKind.DELETE_PV, v.pv),
                    StepKind.DELETE_PV,
                    pv,
                    f"delete the in-tree {pv} (the disk is kept)",
                    f"create the in-tree {pv} again from its backup (Retain, no stale claim uid)",
                    ordinal,
                    v.pv,
                ),
                Step(
                    step_id(StepKind.CNS_RELEASE, v.pv),
                    StepKind.CNS_RELEASE,
                    pv,
                    f"wait until the CSI driver releases {v.vmdk}",
                    "nothing",
                    ordinal,
                    v.pv,
                ),
                Step(
                    step_id(StepKind.FCD, v.pv),
                    StepKind.FCD,
                    f"disk {v.vmdk}",
                    f"register {v.vmdk} as a first class disk (or reuse its id), keepAfterDeleteVm",
                    "nothing (a first class disk stays one; the in-tree PV reaches it by its path)",
                    ordinal,
                    v.pv,
                ),
                Step(
                    step_id(StepKind.CREATE_PV, v.pv),
                    StepKind.CREATE_PV,
                    pv,
                    f"create {pv} on csi.vsphere.vmware.com ({plan.csi_class}), same disk",
                    f"delete the CSI {pv} (Retain: the disk is kept)",
                    ordinal,
                    v.pv,
                ),
                Step(
                    step_id(StepKind.CREATE_PVC, v.pvc),
                    StepKind.CREATE_PVC,
                    pvc,
                    f"create {pvc} on {plan.csi_class}, wait Bound",
                    f"delete the CSI {pvc} once its volume is detached",
                    ordinal,
                    v.pv,
                ),
            ]
        if stops_pods:
            steps.append(
                Step(
                    step_id(StepKind.RECREATE_POD, pod),
                    StepKind.RECREATE_POD,
                    f"pod/{pod}",
                    f"create pod/{pod} again, wait until Ready",
                    f"evict pod/{pod} (one replica down at a time)",
                    ordinal,
                )
            )
    if is_sts:
        steps.append(
            Step(
                step_id(StepKind.RECREATE_STATEFULSET),
                StepKind.RECREATE_STATEFULSET,
                sts,
                f"create {sts} in {ns} with volumeClaimTemplates on {plan.csi_class}; wait until it owns every pod",
                f"delete {sts} (the CSI one) with propagationPolicy Orphan"
                + ("" if plan.strategy == Strategy.ROLLING else ", after scaling it to 0"),
            )
        )
    if plan.kind in (DEPLOYMENT, REPLICASET):
        steps.append(
            Step(
                step_id(StepKind.SCALE_BACK),
                StepKind.SCALE_BACK,
                sts,
                f"scale {sts} back to {plan.replicas}, wait until its pods are Ready (on the CSI claims)",
                f"scale {sts} to 0 again, wait until its pods are gone",
            )
        )
    steps.append(
        Step(
            step_id(StepKind.RESTORE_RECLAIM_POLICY),
            StepKind.RESTORE_RECLAIM_POLICY,
            "persistentvolumes",
            "restore each PV's original reclaim policy",
            "set each CSI PV's reclaim policy to Retain again",
        )
    )
    return steps


def describe_steps(plan: Plan) -> list[str]:
    """What a run of `plan` does, in order, one line per step (for --dry-run and the plan)."""
    return [step.does for step in steps_for(plan)]
