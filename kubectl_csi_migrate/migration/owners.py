"""Owners as types: what stops while its claims move. A StatefulSet (its pods evicted one at a
time, or scaled to zero), a Deployment or a ReplicaSet (scaled to zero and back), or a claim on
its own (the bare pod mounting it, if any, stopped and created again).

Each `Owner` gathers its objects into a `Snapshot` (one path for one owner, `gather`, and for the
survey of a namespace or the cluster, `gather_all`: only where the objects come from differs),
plans its claims, checks itself (settled, managed by something that would put it back, down while
its claims move), and names the steps that stop it and start it again; `steps_for` puts those
around the per-volume steps every owner shares. How a kind is named (its command, the run's key,
kubectl's reference) is its OwnerKind (plan.py).

`build_plan` turns a snapshot into the frozen `Plan` that preflight prints, the run executes and
saves in the working directory, and `-o json` serialises. A resumed run loads the plan from there,
because by then the live objects are half migrated.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kubectl_csi_migrate.errors import NotFoundError
from kubectl_csi_migrate.kube import predicates as p
from kubectl_csi_migrate.kube.client import Kube
from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration import translate
from kubectl_csi_migrate.migration.check import FAIL, PASS, WARN, Check
from kubectl_csi_migrate.migration.plan import (
    CLAIM,
    DEPLOYMENT,
    MIGRATE,
    REPLICASET,
    SKIP_CSI,
    SKIP_OTHER,
    STATEFULSET,
    OwnerKind,
    Plan,
    Snapshot,
    Strategy,
    VolumePlan,
    claims_of_template,
    controller_of,
)
from kubectl_csi_migrate.migration.steps import Step, StepKind, step_id


class Objects:
    """Where owners' objects are read from: for one owner as it needs them (`live`: its
    namespace's pods and claims listed once, the PVs from the command's PV cache, which the run
    keeps), for the survey from one list of each (`listed`). Each namespace's lists are read
    once."""

    def __init__(
        self,
        pods: Callable[[str], Iterable[Obj]],
        claims: Callable[[str], Iterable[Obj]],
        pvs: Callable[[], Iterable[Obj]],
    ) -> None:
        self._read = {"pods": pods, "claims": claims}
        self._pvs_source = pvs
        self._by_namespace: dict[tuple[str, str], dict[str, Obj]] = {}
        self._pvs: dict[str, Obj] | None = None

    @classmethod
    def live(cls, kube: Kube) -> Objects:
        return cls(
            lambda ns: kube.items_once("Pod", ns),
            lambda ns: kube.items("PersistentVolumeClaim", ns),
            lambda: kube.cache("PersistentVolume").items(),
        )

    @classmethod
    def listed(cls, pods: list[Obj], claims: list[Obj], pvs: list[Obj]) -> Objects:
        """From one list of each (the survey's, of one namespace or all)."""

        def by_namespace(objs: list[Obj]) -> Callable[[str], list[Obj]]:
            grouped: dict[str, list[Obj]] = {}
            for o in objs:
                grouped.setdefault(o["metadata"]["namespace"], []).append(o)
            return lambda ns: grouped.get(ns, [])

        return cls(by_namespace(pods), by_namespace(claims), lambda: pvs)

    def _in(self, what: str, namespace: str) -> dict[str, Obj]:
        if (what, namespace) not in self._by_namespace:
            objs = self._read[what](namespace)
            self._by_namespace[(what, namespace)] = {o["metadata"]["name"]: o for o in objs}
        return self._by_namespace[(what, namespace)]

    def pods(self, namespace: str) -> dict[str, Obj]:
        return self._in("pods", namespace)

    def claims(self, namespace: str) -> dict[str, Obj]:
        return self._in("claims", namespace)

    def pvs_of(self, claims: dict[str, Obj]) -> dict[str, Obj]:
        """The claims' PVs (copies: a plan's snapshot is its own)."""
        if self._pvs is None:
            self._pvs = {pv["metadata"]["name"]: pv for pv in self._pvs_source()}
        names = (pvc["spec"].get("volumeName") for pvc in claims.values())
        return {name: copy.deepcopy(self._pvs[name]) for name in names if name and name in self._pvs}


@dataclass(frozen=True)
class Owner:
    """What every kind of owner does; each kind overrides what it does differently."""

    kind: OwnerKind
    noun: str
    """How the backup step names it: `StatefulSet`, `Deployment`, `ReplicaSet`, `claim`."""
    api_version: str | None = "apps/v1"
    """The owner's own API version, backed up and written with it (None: a claim, which is
    backed up as one of the claims)."""
    selects_pods: bool = False
    """Whether its pods are found by its selector (a Deployment's, a ReplicaSet's), not by name."""
    bare_pods: bool = False
    """Whether the pods it stops are bare pods (a claim's: created again with no controller)."""

    # -- gathering ------------------------------------------------------------------------

    def snapshot(self, obj: Obj, objects: Objects) -> Snapshot:
        """The owner `obj` and the objects it involves: the pods that stop while its claims
        move, its claims (and the names of those missing), their PVs."""
        raise NotImplementedError

    def surveyed(self, obj: Obj) -> bool:
        """Whether the survey lists `obj` as an owner of its own."""
        return True

    # -- planning ---------------------------------------------------------------------------

    def strategy(self, asked: str) -> Strategy:
        """The strategy a run of this owner takes (only a StatefulSet's can be chosen)."""
        return Strategy.OFFLINE

    def volumes(self, snap: Snapshot, intree_class: str | None) -> tuple[list[VolumePlan], list[str]]:
        """Each claim's plan, and the templates whose claims migrate (a StatefulSet's)."""
        template = snap.owner.get("spec", {}).get("template", {})
        names = {claim: volume for volume, claim in claims_of_template(template)}
        return [_volume(snap, pvc, names.get(pvc, ""), 0, "", intree_class) for pvc in snap.pvcs], []

    def pod(self, snap: Snapshot) -> str:
        """The bare pod a claim's run stops (no other owner has one)."""
        return ""

    # -- checks -----------------------------------------------------------------------------

    def settled(self, snap: Snapshot) -> Check:
        """Its pods Ready, no rollout in progress (a claim: its pod a bare pod)."""
        raise NotImplementedError

    def managed(self, snap: Snapshot, found: list[str], csi_class: str) -> Check:
        """`found`: what manages it (owners, a GitOps tool, a Helm release), which would put it
        back or scale it up while its claims move."""
        if not found:
            return Check("managed-by", PASS, f"no owner, GitOps tool or Helm release manages the {snap.kind}")
        return Check(
            "managed-by",
            WARN,
            f"{snap.kind.lower()}/{snap.name} is managed by {', '.join(found)}: pause its sync for the migration "
            "(it would scale it back up while its claims move)",
        )

    def downtime(self, snap: Snapshot, strategy: str) -> Check | None:
        """The application's downtime, where it does not depend on disruption budgets (None:
        it does; pods are evicted one at a time)."""
        return Check(
            "disruption",
            WARN,
            f"{snap.kind.lower()}/{snap.name} is scaled to 0 while its claims move, then back to {snap.replicas}: "
            "the application is down meanwhile (its pods share the claims; no replica can stay up)",
        )

    # -- steps ------------------------------------------------------------------------------

    def stop_steps(self, plan: Plan) -> list[Step]:
        """The steps that stop it, before its claims move."""
        return [
            Step(
                step_id(StepKind.SCALE_TO_ZERO),
                StepKind.SCALE_TO_ZERO,
                plan.ref,
                f"scale {plan.ref} to 0, wait until its pods are gone (the application is down from here)",
                f"scale {plan.ref} back to {plan.replicas}",
            )
        ]

    def start_steps(self, plan: Plan) -> list[Step]:
        """The steps that start it again, once its claims moved."""
        return [
            Step(
                step_id(StepKind.SCALE_BACK),
                StepKind.SCALE_BACK,
                plan.ref,
                f"scale {plan.ref} back to {plan.replicas}, wait until its pods are Ready (on the CSI claims)",
                f"scale {plan.ref} to 0 again, wait until its pods are gone",
            )
        ]

    def stops_pods(self, plan: Plan) -> bool:
        """Whether the run stops each pod itself, one at a time, around its claims' steps."""
        return False

    def pods(self, plan: Plan) -> list[str]:
        """The pods a run of `plan` names (backs up, and may evict and create again): a
        StatefulSet's replicas, a claim's bare pod; a Deployment's are found by its selector."""
        return []


class StatefulSetOwner(Owner):
    def snapshot(self, obj: Obj, objects: Objects) -> Snapshot:
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        replicas = int(obj["spec"].get("replicas", 1))
        claims = objects.claims(ns)
        pvcs: dict[str, Obj] = {}
        missing: list[str] = []
        for template in obj["spec"].get("volumeClaimTemplates") or []:
            for ordinal in range(replicas):
                pvc_name = translate.pvc_name(template["metadata"]["name"], name, ordinal)
                if pvc_name in claims:
                    pvcs[pvc_name] = claims[pvc_name]
                else:
                    missing.append(pvc_name)
        pods = {n: pod for n, pod in objects.pods(ns).items() if _ordinal(n, name) is not None}
        return Snapshot(ns, name, obj, pods, pvcs, objects.pvs_of(pvcs), missing, self.kind)

    def strategy(self, asked: str) -> Strategy:
        return Strategy(asked)

    def volumes(self, snap: Snapshot, intree_class: str | None) -> tuple[list[VolumePlan], list[str]]:
        volumes: list[VolumePlan] = []
        migrate_templates: list[str] = []
        for template in snap.templates():
            tname = template["metadata"]["name"]
            template_class = translate.storage_class_of_template(template) or ""
            template_migrates = False
            for ordinal in range(snap.replicas):
                pvc_name = translate.pvc_name(tname, snap.name, ordinal)
                if pvc_name in snap.pvcs:
                    v = _volume(snap, pvc_name, tname, ordinal, template_class, intree_class)
                    volumes.append(v)
                    template_migrates = template_migrates or v.action == MIGRATE
            if template_migrates:
                migrate_templates.append(tname)
        return volumes, migrate_templates

    def settled(self, snap: Snapshot) -> Check:
        sts = snap.owner
        status = sts.get("status", {})
        want = snap.replicas
        ready = status.get("readyReplicas", 0)
        name = f"statefulset/{snap.name}"
        if status.get("observedGeneration", 0) < sts["metadata"].get("generation", 0):
            return Check("statefulset", FAIL, f"{name}: the controller has not caught up with the last change; wait")
        if status.get("updateRevision") and status.get("currentRevision") != status.get("updateRevision"):
            return Check("statefulset", FAIL, f"{name}: a rollout is in progress; wait for it to finish")
        if ready != want:
            return Check("statefulset", FAIL, f"{name}: {ready}/{want} replicas ready; fix the application first")
        return Check("statefulset", PASS, f"{name}: {ready}/{want} replicas ready, no rollout in progress")

    def managed(self, snap: Snapshot, found: list[str], csi_class: str) -> Check:
        if not found:
            return super().managed(snap, found, csi_class)
        return Check(
            "managed-by",
            WARN,
            f"statefulset/{snap.name} is managed by {', '.join(found)}: pause its sync for the migration "
            "(it would put the StatefulSet back with in-tree volumeClaimTemplates while the run has it "
            f"deleted; the run then stops), and change its manifest's storageClassName to {csi_class} "
            "before resuming it",
        )

    def downtime(self, snap: Snapshot, strategy: str) -> Check | None:
        if strategy == Strategy.OFFLINE:
            return Check(
                "disruption",
                WARN,
                "offline strategy: the StatefulSet is scaled to zero; the application is down during the migration",
            )
        return None

    def stop_steps(self, plan: Plan) -> list[Step]:
        sts = plan.ref
        steps = []
        if plan.strategy == Strategy.OFFLINE:
            steps.append(
                Step(
                    step_id(StepKind.SCALE_DOWN),
                    StepKind.SCALE_DOWN,
                    sts,
                    f"scale {sts} to 0 (the application is down from here)",
                    f"scale {sts} back to {plan.replicas}",
                )
            )
        steps.append(
            Step(
                step_id(StepKind.DELETE_STATEFULSET),
                StepKind.DELETE_STATEFULSET,
                sts,
                f"delete {sts} with propagationPolicy Orphan (pods keep running)",
                f"create {sts} again from its backup (in-tree templates), wait until it owns Ready pods",
            )
        )
        return steps

    def start_steps(self, plan: Plan) -> list[Step]:
        sts = plan.ref
        return [
            Step(
                step_id(StepKind.RECREATE_STATEFULSET),
                StepKind.RECREATE_STATEFULSET,
                sts,
                f"create {sts} in {plan.namespace} with volumeClaimTemplates on {plan.csi_class}; wait until it "
                "owns every pod",
                f"delete {sts} (the CSI one) with propagationPolicy Orphan"
                + ("" if plan.strategy == Strategy.ROLLING else ", after scaling it to 0"),
            )
        ]

    def stops_pods(self, plan: Plan) -> bool:
        return plan.strategy == Strategy.ROLLING

    def pods(self, plan: Plan) -> list[str]:
        return [plan.pod_name(o) for o in range(plan.replicas)]


class ScaledOwner(Owner):
    """A Deployment, or a ReplicaSet of its own: scaled to zero while its claims move (its pods
    share them)."""

    def snapshot(self, obj: Obj, objects: Objects) -> Snapshot:
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        selector = obj["spec"].get("selector")  # apps/v1 requires a non-empty one
        pods = {
            n: pod
            for n, pod in objects.pods(ns).items()
            if p.selector_matches(selector, pod["metadata"].get("labels") or {})
        }
        claims = objects.claims(ns)
        named = [claim for _, claim in claims_of_template(obj["spec"]["template"])]
        pvcs = {c: claims[c] for c in named if c in claims}
        missing = [c for c in named if c not in claims]
        return Snapshot(ns, name, obj, pods, pvcs, objects.pvs_of(pvcs), missing, self.kind)

    def surveyed(self, obj: Obj) -> bool:
        """One mounting a claim; a ReplicaSet only if no Deployment owns it (that is the owner)."""
        if not claims_of_template(obj["spec"]["template"]):
            return False
        return self.kind != REPLICASET or controller_of(obj) is None

    def settled(self, snap: Snapshot) -> Check:
        owner, word = snap.owner, snap.kind.lower()
        name = f"{word}/{snap.name}"
        status = owner.get("status", {})
        parent = controller_of(owner)
        if parent is not None:
            return Check(
                word,
                FAIL,
                f"{name} belongs to {parent.get('kind', '').lower()}/{parent.get('name')}: migrate that "
                f"(`kubectl csi-migrate deploy {parent.get('name')}`), which would scale this one back",
            )
        if status.get("observedGeneration", 0) < owner["metadata"].get("generation", 0):
            return Check(word, FAIL, f"{name}: the controller has not caught up with the last change; wait")
        want = snap.replicas
        updated = status.get("updatedReplicas", 0) if self.kind == DEPLOYMENT else want  # a ReplicaSet has none
        if updated != want or status.get("replicas", 0) != want:
            return Check(word, FAIL, f"{name}: a rollout is in progress; wait for it to finish")
        ready = status.get("readyReplicas", 0)
        if ready != want:
            return Check(word, FAIL, f"{name}: {ready}/{want} replicas ready; fix the application first")
        return Check(word, PASS, f"{name}: {ready}/{want} replicas ready, no rollout in progress")


class ClaimOwner(Owner):
    """A claim on its own, with the bare pod mounting it, if any."""

    def snapshot(self, obj: Obj, objects: Objects) -> Snapshot:
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        pods = {n: pod for n, pod in objects.pods(ns).items() if name in {c for _, c in claims_of_template(pod)}}
        return Snapshot(ns, name, obj, pods, {name: obj}, objects.pvs_of({name: obj}), [], self.kind)

    def strategy(self, asked: str) -> Strategy:
        return Strategy.ROLLING

    def pod(self, snap: Snapshot) -> str:
        return next(iter(snap.pods), "")

    def settled(self, snap: Snapshot) -> Check:
        name = f"persistentvolumeclaim/{snap.name}"
        if not snap.pods:
            return Check("pvc-user", PASS, f"{name}: no pod mounts it; nothing stops while it moves")
        for pod_name, pod in sorted(snap.pods.items()):
            ref = controller_of(pod)
            if ref is not None:
                kind = str(ref.get("kind", ""))
                command = {"StatefulSet": "sts", "ReplicaSet": "deploy"}.get(kind)
                how = f"migrate it with `kubectl csi-migrate {command} <its name>`" if command else "stop it first"
                return Check(
                    "pvc-user",
                    FAIL,
                    f"{name} is mounted by pod/{pod_name} of {kind.lower()}/{ref.get('name')}, which would start "
                    f"it again at once: {how}",
                )
        if len(snap.pods) > 1:
            pods = ", ".join(f"pod/{n}" for n in sorted(snap.pods))
            return Check("pvc-user", FAIL, f"{name} is mounted by several pods ({pods}); stop all but one first")
        pod_name, pod = next(iter(snap.pods.items()))
        if not p.is_pod_ready(pod):
            return Check("pvc-user", FAIL, f"{name} is mounted by pod/{pod_name}, which is not Ready; fix it first")
        return Check(
            "pvc-user",
            PASS,
            f"{name} is mounted by the bare pod/{pod_name}: it is stopped while the claim moves and created again "
            "from its backup",
        )

    def managed(self, snap: Snapshot, found: list[str], csi_class: str) -> Check:
        return Check("managed-by", PASS, "a claim on its own: nothing to put back")

    def downtime(self, snap: Snapshot, strategy: str) -> Check | None:
        if not snap.pods:
            return Check("disruption", PASS, "no pod mounts the claim: nothing is down")
        return None

    def stop_steps(self, plan: Plan) -> list[Step]:
        return []

    def start_steps(self, plan: Plan) -> list[Step]:
        return []

    def stops_pods(self, plan: Plan) -> bool:
        return bool(plan.pod)

    def pods(self, plan: Plan) -> list[str]:
        return [plan.pod] if plan.pod else []


OWNERS: dict[OwnerKind, Owner] = {
    STATEFULSET: StatefulSetOwner(STATEFULSET, "StatefulSet"),
    DEPLOYMENT: ScaledOwner(DEPLOYMENT, "Deployment", selects_pods=True),
    REPLICASET: ScaledOwner(REPLICASET, "ReplicaSet", selects_pods=True),
    CLAIM: ClaimOwner(CLAIM, "claim", api_version=None, bare_pods=True),
}


def owner(kind: str) -> Owner:
    return OWNERS[OwnerKind(kind)]


def gather(kube: Kube, namespace: str, name: str, kind: str = STATEFULSET) -> Snapshot:
    """Read one owner, its pods, its claims and their PVs (NotFoundError: no such owner)."""
    found = OwnerKind(kind)
    obj = kube.get(found, name, namespace)
    if obj is None:
        raise NotFoundError(found.not_found(namespace, name))
    return OWNERS[found].snapshot(obj, Objects.live(kube))


def gather_all(kube: Kube, namespace: str | None) -> list[Snapshot]:
    """Snapshots of every owner in a namespace (or all): each StatefulSet, each Deployment and
    ReplicaSet of its own (not a Deployment's) mounting a claim, and each claim none of those
    names. From six list requests: the survey reads many objects, so it lists once instead of
    getting one by one."""
    claims = kube.items("PersistentVolumeClaim", namespace)
    objects = Objects.listed(kube.items("Pod", namespace), claims, kube.items("PersistentVolume"))
    snapshots = []
    taken: set[tuple[str, str]] = set()  # claims a StatefulSet, Deployment or ReplicaSet names
    for kind in (STATEFULSET, DEPLOYMENT, REPLICASET):
        for obj in kube.items(kind, namespace):
            if OWNERS[kind].surveyed(obj):
                snap = OWNERS[kind].snapshot(obj, objects)
                taken |= {(snap.namespace, c) for c in [*snap.pvcs, *snap.missing_pvcs]}
                snapshots.append(snap)
    for claim in sorted(claims, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        if (claim["metadata"]["namespace"], claim["metadata"]["name"]) not in taken:
            snapshots.append(OWNERS[CLAIM].snapshot(claim, objects))
    return snapshots


def build_plan(
    snapshot: Snapshot,
    context: str,
    server: str,
    csi_class: str,
    intree_class: str | None,
    strategy: str,
    topology_keys: tuple[str, ...] = (),
) -> Plan:
    """Decide, per claim, whether it is migrated or left alone."""
    who = owner(snapshot.kind)
    volumes, migrate_templates = who.volumes(snapshot, intree_class)
    return Plan(
        context=context,
        server=server,
        namespace=snapshot.namespace,
        name=snapshot.name,
        uid=snapshot.owner["metadata"]["uid"],
        replicas=snapshot.replicas,
        strategy=who.strategy(strategy),
        csi_class=csi_class,
        migrate_templates=tuple(migrate_templates),
        volumes=tuple(volumes),
        topology_keys=topology_keys,
        kind=who.kind,
        pod=who.pod(snapshot),
    )


def _volume(
    snapshot: Snapshot, pvc_name: str, template: str, ordinal: int, template_class: str, intree_class: str | None
) -> VolumePlan:
    pvc = snapshot.pvcs[pvc_name]
    pv_name = pvc["spec"].get("volumeName", "")
    pv = snapshot.pvs.get(pv_name)
    pvc_class = pvc["spec"].get("storageClassName") or template_class
    common: Obj = {"template": template, "ordinal": ordinal, "pvc": pvc_name, "pv": pv_name, "storage_class": pvc_class}
    if pv is None:
        return VolumePlan(**common, action=SKIP_OTHER)
    common["reclaim_policy"] = translate.reclaim_policy_of(pv)
    common["capacity"] = pv["spec"].get("capacity", {}).get("storage", "")
    if translate.is_csi_vsphere_pv(pv):
        return VolumePlan(**common, action=SKIP_CSI, fcd_id=pv["spec"]["csi"]["volumeHandle"])
    if translate.is_intree_vsphere_pv(pv) and (intree_class is None or pvc_class == intree_class):
        return VolumePlan(**common, action=MIGRATE, vmdk=pv["spec"]["vsphereVolume"]["volumePath"])
    return VolumePlan(**common, action=SKIP_OTHER)


def _ordinal(pod_name: str, sts_name: str) -> int | None:
    prefix = f"{sts_name}-"
    rest = pod_name[len(prefix) :] if pod_name.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None


def steps_for(plan: Plan) -> list[Step]:
    """Every step of a run of `plan`, in the order the run takes them (rollback: reversed): the
    backup and each claim's PV set to Retain, the owner's steps that stop it, each replica's
    claims moved (around the eviction and re-creation of its pod, where the run stops pods one
    at a time), the owner's steps that start it again, the reclaim policies restored."""
    who = owner(plan.kind)
    its = "the" if plan.kind == CLAIM else "its"
    steps = [
        Step(
            step_id(StepKind.BACKUP),
            StepKind.BACKUP,
            plan.ref,
            f"back up the {who.noun}, {its} pods, PVCs and PVs to the working directory",
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
    steps += who.stop_steps(plan)
    stops_pods = who.stops_pods(plan)
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
            steps += _volume_steps(plan, v, ordinal)
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
    steps += who.start_steps(plan)
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


def _volume_steps(plan: Plan, v: VolumePlan, ordinal: int) -> list[Step]:
    """One claim's steps, whatever its owner: the old claim and PV out, the disk a first class
    disk, the CSI PV and claim in."""
    pv, pvc = f"persistentvolume/{v.pv}", f"persistentvolumeclaim/{v.pvc}"
    return [
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


def describe_steps(plan: Plan) -> list[str]:
    """What a run of `plan` does, in order, one line per step (for --dry-run and the plan)."""
    return [step.does for step in steps_for(plan)]
