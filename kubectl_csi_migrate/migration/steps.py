"""The migration as a list of steps: one list drives the run, the plan shown before it, the
server dry run, preflight's permission check, `status`, `rollback` and the kill tests.

A step is a value: its id (recorded in the working directory), its kind, the object it acts on,
one line saying what it does and one saying how it is undone, and the API access it needs (for
both). How each kind is done and undone: `run.ACTIONS`, one pair of functions per kind, in
`workload.py` (the StatefulSet and its pods), `volumes.py` (claims and PVs) and `disks.py` (the
disk in vCenter); a unit test keeps the two tables equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubectl_csi_migrate.migration.plan import CLAIM, DEPLOYMENT, REPLICASET, STATEFULSET, Plan

Access = tuple[str, str, str]
"""(verb, kind, subresource), as the RBAC rules of the API server name them."""


def _crud(kind: str, *verbs: str) -> tuple[Access, ...]:
    return tuple((verb, kind, "") for verb in verbs)


# What each kind of step asks the API server, done or undone (the run re-reads live objects
# before acting, and waits with list+watch). Lists, not sets: docs/commands.md ("RBAC needed")
# prints them in this order.
OWNER = "Owner"
"""Stands for the owner's kind in NEEDS: StatefulSet, Deployment, ReplicaSet or (a claim's run)
PersistentVolumeClaim; `access_for` puts the plan's in."""

NEEDS: dict[str, tuple[Access, ...]] = {
    "backup": (
        *_crud(OWNER, "get"),
        *_crud("Pod", "get", "list"),
        *_crud("PersistentVolumeClaim", "get", "list"),
        *_crud("PersistentVolume", "get", "list", "watch"),
        *_crud("CnsVSphereVolumeMigration", "list"),
    ),
    "retain": _crud("PersistentVolume", "get", "patch", "list", "watch"),
    "scale-down": (
        *_crud("StatefulSet", "get", "patch", "list", "watch"),
        *_crud("Pod", "get", "list", "watch"),
    ),
    "scale-to-zero": (
        *_crud(OWNER, "get", "patch"),
        *_crud("Pod", "get", "list", "watch"),
    ),
    "delete-statefulset": (
        *_crud("StatefulSet", "get", "patch", "delete", "create", "list", "watch"),
        *_crud("Pod", "get", "list", "watch"),
    ),
    "evict": (
        *_crud("Pod", "get", "delete", "create", "list", "watch"),
        ("create", "Pod", "eviction"),
        *_crud("PodDisruptionBudget", "list"),
    ),
    "detach": _crud("VolumeAttachment", "list", "watch"),
    "delete-pvc": (
        *_crud("PersistentVolumeClaim", "get", "delete", "create", "list", "watch"),
        *_crud("PersistentVolume", "get", "patch"),
    ),
    "delete-pv": _crud("PersistentVolume", "get", "delete", "create", "list", "watch"),
    "cns-release": _crud("CnsVSphereVolumeMigration", "list", "watch"),
    "fcd": (),  # vCenter only: Datastore.FileManagement, checked by preflight `vcenter-privileges`
    "create-pv": (
        *_crud("PersistentVolume", "list", "create", "get", "patch", "delete", "watch"),
        *_crud("PersistentVolumeClaim", "get"),
        *_crud("VolumeAttachment", "list", "watch"),
    ),
    "create-pvc": (
        *_crud("PersistentVolumeClaim", "get", "create", "delete", "list", "watch"),
        *_crud("PersistentVolume", "get", "patch"),
        *_crud("VolumeAttachment", "list", "watch"),
        *_crud("Event", "create"),
    ),
    "recreate-pod": (
        *_crud("Pod", "get", "create", "delete", "list", "watch"),
        ("create", "Pod", "eviction"),
        *_crud("PodDisruptionBudget", "list"),
    ),
    "recreate-statefulset": (
        *_crud("StatefulSet", "get", "create", "patch", "delete", "list", "watch"),
        *_crud("Pod", "list", "watch"),
        *_crud("Event", "create"),
    ),
    "scale-back": (
        *_crud(OWNER, "get", "patch"),
        *_crud("Pod", "list", "watch"),
        *_crud("Event", "create"),
    ),
    "restore-reclaim-policy": _crud("PersistentVolume", "get", "patch", "list", "watch"),
}

RUN_NEEDS: tuple[Access, ...] = (
    # One run per StatefulSet: a Lease in its namespace, taken, renewed and given back; so is the
    # Lease of each disruption budget covering a pod it may take down (budget.py), which it
    # finds in a list of the namespace's budgets.
    *_crud("Lease", "get", "create", "update", "patch", "delete"),
    *_crud("PodDisruptionBudget", "list"),
    # Before each replica: has the StatefulSet been put back by someone else?
    *_crud(OWNER, "get"),
    # The run's record in the cluster (migration/record.py), written as steps finish.
    *_crud("ConfigMap", "get", "create", "patch"),
    # The plan reads the CSI StorageClass (resume and rollback check it still exists).
    *_crud("StorageClass", "get"),
    # Every PV, listed once and followed by a watch (kube/cache.py): no second PV for a disk.
    *_crud("PersistentVolume", "list", "watch", "get"),
    # The namespace's pods and claims, the same way: read and waited on from that view.
    *_crud("Pod", "list", "watch"),
    *_crud("PersistentVolumeClaim", "list", "watch"),
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
    """`access` (NEEDS[...], RUN_NEEDS) with the owner's kind in place of OWNER."""
    return tuple((verb, kind if k == OWNER else k, sub) for verb, k, sub in access)


OWNER_STEPS = {
    STATEFULSET: ("delete-statefulset", "scale-down", "evict", "recreate-pod", "recreate-statefulset"),
    DEPLOYMENT: ("scale-to-zero", "scale-back"),
    REPLICASET: ("scale-to-zero", "scale-back"),
    CLAIM: ("evict", "recreate-pod"),
}
"""The kinds of step that stop and start each kind of owner; the others (backup, the volume's
own steps, the reclaim policy) every run has."""
_SHARED = tuple(k for k in NEEDS if not any(k in kinds for kinds in OWNER_STEPS.values()))


def access_for(kind: str) -> tuple[Access, ...]:
    """What any run (or rollback) of an owner of `kind` asks the API server, either strategy:
    preflight's `rbac` check asks for each, from this same table the steps declare."""
    kinds = (*_SHARED, *OWNER_STEPS[kind])
    return _ordered(_union([as_owner(kind, NEEDS[k]) for k in kinds] + [as_owner(kind, RUN_NEEDS)]))


REQUIRED_ACCESS: tuple[Access, ...] = _ordered(_union([access_for(kind) for kind in OWNER_STEPS]))
"""Everything any step of any run (done or undone) and the run around them ask the API server:
the RBAC section of docs/commands.md is printed from it."""


@dataclass(frozen=True)
class Step:
    id: str
    """Recorded in the working directory: `kind` or `kind/object name`."""
    kind: str
    target: str
    """The object acted on, kubectl style (`persistentvolume/pvc-1234`)."""
    does: str
    undoes: str
    ordinal: int | None = None
    """The replica the step belongs to, None for the StatefulSet-wide steps."""
    pv: str = ""
    """The volume (old and new PV name) a per-volume step moves."""

    @property
    def needs(self) -> tuple[Access, ...]:
        return NEEDS[self.kind]


def steps_for(plan: Plan) -> list[Step]:
    """Every step of a run of `plan`, in the order the run takes them (rollback: reversed)."""
    ns = plan.namespace
    sts = plan.ref
    is_sts = plan.kind == STATEFULSET
    what = {STATEFULSET: "StatefulSet", DEPLOYMENT: "Deployment", REPLICASET: "ReplicaSet", CLAIM: "claim"}[plan.kind]
    steps = [
        Step(
            "backup",
            "backup",
            sts,
            f"back up the {what}, {'its' if plan.kind != CLAIM else 'the'} pods, PVCs and PVs to the working directory",
            "nothing (the backups stay)",
        )
    ]
    steps += [
        Step(
            f"retain/{v.pv}",
            "retain",
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
                "scale-to-zero",
                "scale-to-zero",
                sts,
                f"scale {sts} to 0, wait until its pods are gone (the application is down from here)",
                f"scale {sts} back to {plan.replicas}",
            )
        )
    if is_sts and plan.strategy == "offline":
        steps.append(
            Step(
                "scale-down",
                "scale-down",
                sts,
                f"scale {sts} to 0 (the application is down from here)",
                f"scale {sts} back to {plan.replicas}",
            )
        )
    if is_sts:
        steps.append(
            Step(
                "delete-statefulset",
                "delete-statefulset",
                sts,
                f"delete {sts} with propagationPolicy Orphan (pods keep running)",
                f"create {sts} again from its backup (in-tree templates), wait until it owns Ready pods",
            )
        )
    # One pod at a time: a StatefulSet's replica (rolling), or the bare pod mounting a claim.
    stops_pods = (is_sts and plan.strategy == "rolling") or (plan.kind == CLAIM and bool(plan.pod))
    for ordinal in plan.ordinals_descending():
        pod = plan.pod_name(ordinal)
        if stops_pods:
            steps.append(
                Step(
                    f"evict/{pod}",
                    "evict",
                    f"pod/{pod}",
                    f"evict pod/{pod}",
                    f"create pod/{pod} again from its backup, wait until Ready",
                    ordinal,
                )
            )
        for v in plan.to_migrate(ordinal):
            pv, pvc = f"persistentvolume/{v.pv}", f"persistentvolumeclaim/{v.pvc}"
            steps += [
                Step(f"detach/{v.pv}", "detach", pv, f"wait until {v.vmdk} is detached", "nothing", ordinal, v.pv),
                Step(
                    f"delete-pvc/{v.pvc}",
                    "delete-pvc",
                    pvc,
                    f"delete {pvc} (its PV is Retain)",
                    f"create {pvc} again from its backup, wait Bound to the in-tree {pv}",
                    ordinal,
                    v.pv,
                ),
                Step(
                    f"delete-pv/{v.pv}",
                    "delete-pv",
                    pv,
                    f"delete the in-tree {pv} (the disk is kept)",
                    f"create the in-tree {pv} again from its backup (Retain, no stale claim uid)",
                    ordinal,
                    v.pv,
                ),
                Step(
                    f"cns-release/{v.pv}",
                    "cns-release",
                    pv,
                    f"wait until the CSI driver releases {v.vmdk}",
                    "nothing",
                    ordinal,
                    v.pv,
                ),
                Step(
                    f"fcd/{v.pv}",
                    "fcd",
                    f"disk {v.vmdk}",
                    f"register {v.vmdk} as a first class disk (or reuse its id), keepAfterDeleteVm",
                    "nothing (a first class disk stays one; the in-tree PV reaches it by its path)",
                    ordinal,
                    v.pv,
                ),
                Step(
                    f"create-pv/{v.pv}",
                    "create-pv",
                    pv,
                    f"create {pv} on csi.vsphere.vmware.com ({plan.csi_class}), same disk",
                    f"delete the CSI {pv} (Retain: the disk is kept)",
                    ordinal,
                    v.pv,
                ),
                Step(
                    f"create-pvc/{v.pvc}",
                    "create-pvc",
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
                    f"recreate-pod/{pod}",
                    "recreate-pod",
                    f"pod/{pod}",
                    f"create pod/{pod} again, wait until Ready",
                    f"evict pod/{pod} (one replica down at a time)",
                    ordinal,
                )
            )
    if is_sts:
        steps.append(
            Step(
                "recreate-statefulset",
                "recreate-statefulset",
                sts,
                f"create {sts} in {ns} with volumeClaimTemplates on {plan.csi_class}; wait until it owns every pod",
                f"delete {sts} (the CSI one) with propagationPolicy Orphan"
                + ("" if plan.strategy == "rolling" else ", after scaling it to 0"),
            )
        )
    if plan.kind in (DEPLOYMENT, REPLICASET):
        steps.append(
            Step(
                "scale-back",
                "scale-back",
                sts,
                f"scale {sts} back to {plan.replicas}, wait until its pods are Ready (on the CSI claims)",
                f"scale {sts} to 0 again, wait until its pods are gone",
            )
        )
    steps.append(
        Step(
            "restore-reclaim-policy",
            "restore-reclaim-policy",
            "persistentvolumes",
            "restore each PV's original reclaim policy",
            "set each CSI PV's reclaim policy to Retain again",
        )
    )
    return steps


RECORDED_AFTER = frozenset(
    {"backup", "scale-down", "scale-to-zero", "delete-statefulset", "fcd", "recreate-statefulset", "scale-back"}
)  # fmt: skip
"""Kinds of step after which the record in the cluster is written: the run's own changes to the
owner, each volume's FCD id once known (the one fact the record alone must keep). It lags the
working directory by the steps between two of these (one write per volume instead of one per
step; the last, restore-reclaim-policy, is in the run's final write): `may_have_run` names them,
and undoing one that never ran finds nothing to undo."""


def may_have_run(plan: Plan, record: dict[str, dict[str, object]]) -> set[str]:
    """The steps the record in the cluster does not show that may have run: it keeps "done"
    events only, written after some kinds of step (RECORDED_AFTER), so after the last step it
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
        side_by_side = plan.strategy == "offline" and step.pv and step.ordinal is not None
        chains.setdefault(step.pv if side_by_side else "", []).append(step)
    ran = {step for step, entry in record.items() if entry.get("event") in ("start", "done")}
    maybe: set[str] = set()
    for chain in chains.values():
        first = next((i for i, step in enumerate(chain) if step.id not in ran), len(chain))
        for step in chain[first:]:
            if step.id in record:  # recorded further on, or being undone or undone (so is the rest)
                break
            maybe.add(step.id)
            if step.kind in RECORDED_AFTER:
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
        if record.get(s.id, {}).get("event") not in (None, "undone") or s.id in maybe
    ]


def describe_steps(plan: Plan) -> list[str]:
    """What a run of `plan` does, in order, one line per step (for --dry-run and the plan)."""
    return [step.does for step in steps_for(plan)]
