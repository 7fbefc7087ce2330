"""Executing a plan: each step of `steps_for(plan)` done in order (a run), or undone in reverse
(a rollback); both resumable.

Every step is recorded in the working directory before and after it runs, and is idempotent:
it looks at the live object first (by name and uid) and does only what is left. A run or a
rollback killed at any point is resumed by the same command. Invariants kept here:

1. nothing is mutated before every object is backed up (fsync'd);
2. every PV is Retain before any PVC or PV is deleted, forwards and backwards;
3. no VMDK or FCD is ever deleted, and no second PV is created for a disk another PV still names;
4. one run per StatefulSet (a Lease in its namespace);
5. a PV created from a backup never carries a stale claim uid or a Delete policy while unbound.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubectl_csi_migrate.errors import (
    NotFoundError,
    PermanentError,
    TemporaryError,
    TooManyRequestsError,
    VCenterSessionEnded,
)
from kubectl_csi_migrate.kube import predicates as p
from kubectl_csi_migrate.kube.client import Kube
from kubectl_csi_migrate.kube.lock import Lease
from kubectl_csi_migrate.migration import events, report, translate
from kubectl_csi_migrate.migration.budget import orphan_budget
from kubectl_csi_migrate.migration.plan import Plan, VolumePlan
from kubectl_csi_migrate.migration.preflight import syncer_renewed_since
from kubectl_csi_migrate.migration.record import ClusterRecord
from kubectl_csi_migrate.migration.steps import Step, steps_for, steps_to_undo
from kubectl_csi_migrate.migration.workdir import WorkDir

if TYPE_CHECKING:
    from kubectl_csi_migrate.vsphere.client import VCenter

Obj = dict[str, Any]
log = logging.getLogger("kubectl_csi_migrate.migration")


WAIT_TICK = 30.0
"""A wait that lasts says what it waits for this often (seconds)."""
WAIT_HINTS = {
    "VolumeAttachment": "a detach that hangs is most often the node's VM or the CSI attacher: see "
    "`kubectl get volumeattachment -o yaml` (status.detachError) and `kubectl -n vmware-system-csi logs "
    "deploy/vsphere-csi-controller -c csi-attacher`; the in-tree disk must be detached before it moves",
    "Pod": "see `kubectl describe pod` (events: FailedAttachVolume, FailedScheduling) and the node's state",
    "PersistentVolumeClaim": "see `kubectl describe pvc`: a claim that does not bind names its reason in its events",
    "PersistentVolume": "see `kubectl get pv -o yaml`: a finalizer (external-attacher, pv-protection) holds it",
    "StatefulSet": "see `kubectl get statefulset -o yaml`: the garbage collector removes the orphan finalizer",
    "CnsVSphereVolumeMigration": "the CSI syncer drops a disk's record when its PV is deleted: see "
    "`kubectl -n vmware-system-csi logs deploy/vsphere-csi-controller -c vsphere-syncer`",
}
"""What to look at, said once half a wait's time is gone, by the kind waited on."""

OFFLINE_PARALLEL = 4
"""How many volumes an offline run moves at once."""

API_OUTAGE_SECONDS = 60.0
"""How long a run rides out an API server that refuses connections (a restart) before it stops."""

RETAIN_CLAIMS = {"whenDeleted": "Retain", "whenScaled": "Retain"}
# On the StatefulSet the tool recreates: the uid of the one it replaced. It tells the tool's own
# StatefulSet from one put back by someone else.
RECREATED_FROM = "csi-migrate.kubectl.io/recreated-from"


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


class Migration:
    """One run (or rollback) of one plan. `say` receives one line per action, kubectl style."""

    def __init__(
        self,
        kube: Kube,
        vc: VCenter | None,
        plan: Plan,
        workdir: WorkDir,
        say: Callable[[str], None],
        settings: Settings | None = None,
        progress: Callable[[str], None] | None = None,
        live: Callable[[str], contextlib.AbstractContextManager[None]] | None = None,
    ) -> None:
        self.kube = kube
        self.vc = vc
        self.plan = plan
        self.workdir = workdir
        self.say = say
        self.progress = progress or (lambda _line: None)
        self.live = live
        """On a terminal: a live line for each wait (then no line every 30 s)."""
        self.settings = settings or Settings()
        self._timing = report.Timing()
        self._local = threading.local()
        self._vcenter_lock = threading.Lock()  # one vCenter connection: one call at a time
        self.done: dict[str, Obj] = {}
        self.run_id = ""
        self.record = ClusterRecord(kube, plan)
        # How each kind of step (steps.NEEDS) is done and undone.
        self.actions: dict[str, tuple[Callable[[Step], Obj | None], Callable[[Step], None]]] = {
            "backup": (self._backup, self._nothing),
            "retain": (self._set_retain, self._undo_retain),
            "scale-down": (self._scale_down, self._undo_scale_down),
            "delete-statefulset": (self._delete_statefulset, self._undo_delete_statefulset),
            "evict": (self._evict, self._undo_evict),
            "detach": (self._wait_detached, self._nothing),
            "delete-pvc": (self._delete_pvc, self._undo_delete_pvc),
            "delete-pv": (self._delete_pv, self._undo_delete_pv),
            "cns-release": (self._wait_cns_release, self._nothing),
            "fcd": (self._ensure_fcd, self._nothing),
            "create-pv": (self._create_pv, self._undo_create_pv),
            "create-pvc": (self._create_pvc, self._undo_create_pvc),
            "recreate-pod": (self._recreate_pod, self._undo_recreate_pod),
            "recreate-statefulset": (self._recreate_statefulset, self._undo_recreate_statefulset),
            "restore-reclaim-policy": (self._restore_reclaim_policy, self._undo_restore_reclaim_policy),
        }

    # -- a run, a rollback --------------------------------------------------------------------

    def run(self) -> Obj:
        resuming = self.workdir.backed_up()
        if resuming:
            self.run_id = self.workdir.load_run()["run_id"]
            self.done = {k: v for k, v in self.workdir.steps().items() if v["event"] == "done"}
            self.say(f"resuming the run in {self.workdir.path} ({len(self.done)} steps already done)")
        else:
            self.run_id = uuid.uuid4().hex
        with self._locked():
            if not resuming:  # nothing was changed yet: (re)start the record
                self.workdir.create(self.plan, self.run_id, {"keep_retain": self.settings.keep_retain})
            if self.plan.strategy == "offline":
                self._run_offline(steps_for(self.plan))
            else:
                self._run_in_order(steps_for(self.plan))
            result = report.build(
                self.plan, self.done, self.timing, self.kube.requests, str(self.workdir.path), "MigrationReport"
            )
            self.workdir.mark_finished(result)
            self.record.save(self.workdir)
        return result

    def _run_in_order(self, steps: list[Step]) -> None:
        replica = None
        ordinals = self.plan.ordinals_descending()
        for step in steps:
            if step.ordinal is not None and step.ordinal != replica:
                replica = step.ordinal
                self.progress(f"replica {ordinals.index(replica) + 1}/{len(ordinals)}: {self.plan.pod_name(replica)}")
                self._stop_if_recreated_elsewhere(
                    self.kube.get("StatefulSet", self.plan.statefulset, self.plan.namespace)
                )
            self.step(step)

    def _run_offline(self, steps: list[Step]) -> None:
        """Offline, every pod is down once the StatefulSet is gone: the volumes move at once,
        OFFLINE_PARALLEL at a time, each volume's steps in order. A failing volume stops the others
        before their next step; the first error is raised once every volume has stopped."""
        volumes: dict[str, list[Step]] = {}
        for step in steps:
            if step.pv and step.ordinal is not None:  # a volume's own steps (not `retain`)
                volumes.setdefault(step.pv, []).append(step)
        first = next((i for i, step in enumerate(steps) if step.pv in volumes and step.ordinal is not None), len(steps))
        for step in steps[:first]:
            self.step(step)
        if volumes:
            self._stop_if_recreated_elsewhere(self.kube.get("StatefulSet", self.plan.statefulset, self.plan.namespace))
            failed = threading.Event()
            total = len(volumes)

            def move(index: int, chain: list[Step]) -> report.Timing:
                self._local.timing = report.Timing()
                try:
                    if not failed.is_set():
                        self.progress(f"volume {index}/{total}: {chain[0].pv}")
                    for step in chain:
                        if failed.is_set():
                            break
                        self.step(step)
                except BaseException:
                    failed.set()
                    raise
                finally:
                    timing, self._local.timing = self._local.timing, None
                return timing

            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=OFFLINE_PARALLEL, thread_name_prefix="volume") as pool:
                futures = [pool.submit(move, i, chain) for i, chain in enumerate(volumes.values(), 1)]
            self._add_concurrent_timing(started, [f for f in futures if f.exception() is None])
            for future in futures:
                if future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
        for step in steps[first + sum(len(c) for c in volumes.values()) :]:
            self.step(step)

    def _add_concurrent_timing(self, started: float, futures: list[Any]) -> None:
        """Volumes moved side by side: the tool's own work is the busiest volume's, vCenter's
        the longest; the rest of the section's time went on waiting."""
        wall = time.monotonic() - started
        timings = [f.result() for f in futures]
        own = max((t.own(wall) for t in timings), default=0.0)
        vcenter = max((t.vcenter for t in timings), default=0.0)
        self.timing.vcenter += vcenter
        self.timing.waited += max(0.0, wall - own - vcenter)
        for t in timings:
            self.timing.volumes.update(t.volumes)

    @property
    def timing(self) -> report.Timing:
        """The run's timing, or, in a thread moving one volume, that volume's."""
        local: report.Timing | None = getattr(self._local, "timing", None)
        return local or self._timing

    def rollback(self) -> Obj:
        """Undo every step that was started, last first: the StatefulSet back on its in-tree
        volumes, the same disks, PV and PVC names, the original reclaim policy restored last."""
        run = self.workdir.load_run()
        self.run_id = run["run_id"]
        record = self.workdir.steps()
        self.done = {k: v for k, v in record.items() if v["event"] == "done"}
        with self._locked():
            self.workdir.mark_rolling_back()
            self.record.save(self.workdir)
            for step in steps_to_undo(self.plan, record):
                self.workdir.record(step.id, "undo-start")
                log.debug("step %s %s: undo", step.kind, step.id)
                self.actions[step.kind][1](step)
                self.workdir.record(step.id, "undone")
                self.record.save(self.workdir)
            result = report.build(
                self.plan, record, self.timing, self.kube.requests, str(self.workdir.path), "RollbackReport"
            )
            self.workdir.mark_rolled_back(result)
            self.record.save(self.workdir)
        return result

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The run's Lease held, every change checked against it, API outages ridden out."""
        plan = self.plan
        lease = Lease(self.kube, plan.namespace, f"csi-migrate-{plan.statefulset}", self.run_id, self.say)
        lease.acquire(f"statefulset {plan.namespace}/{plan.statefulset}")
        self.kube.before_mutation = lease.check
        self.kube.outage_seconds = API_OUTAGE_SECONDS
        try:
            yield
        finally:
            self.kube.before_mutation = None
            self.kube.outage_seconds = 0.0
            lease.release()

    # -- the step record ------------------------------------------------------------------------

    def step(self, step: Step) -> Obj:
        if step.id in self.done:
            return self.done[step.id]
        if step.kind == "detach":
            self.timing.volumes[step.pv] = (time.time(), time.time())
        self.workdir.record(step.id, "start")
        log.debug("step %s %s: do", step.kind, step.id)
        result = self.actions[step.kind][0](step) or {}
        self.workdir.record(step.id, "done", **result)
        self.done[step.id] = {"step": step.id, "event": "done", **result}
        self.record.save(self.workdir)
        if step.kind == "create-pvc" and step.pv in self.timing.volumes:
            self.timing.volumes[step.pv] = (self.timing.volumes[step.pv][0], time.time())
        return self.done[step.id]

    @property
    def vsphere(self) -> VCenter:
        """The vCenter client: a run has one; a rollback (which calls no vCenter) may not."""
        if self.vc is None:
            raise PermanentError("internal error: this step needs vCenter and the run has no connection")
        return self.vc

    def _volume(self, step: Step) -> VolumePlan:
        return next(v for v in self.plan.volumes if v.pv == step.pv)

    def _nothing(self, step: Step) -> None:
        """Waits and vCenter registrations have nothing to undo."""

    # -- waiting ---------------------------------------------------------------------------------

    def wait(
        self, kind: str, predicate: p.Predicate, what: str, timeout: float | None = None, **selectors: Any
    ) -> dict[str, Obj]:
        """Until `predicate` holds for the `kind` objects selected. A long wait says what it waits
        for every 30 s, and once half its time is gone, what to look at."""
        started = time.monotonic()
        limit = timeout or self.settings.timeout
        hinted = False

        def tick(waited: float) -> None:
            nonlocal hinted
            if self.live is None:
                self.say(f"still waiting for {what}: {waited:.0f}s of {limit:.0f}s")
            if not hinted and waited >= limit / 2 and kind in WAIT_HINTS:
                hinted = True
                self.say(f"hint: {WAIT_HINTS[kind]}")

        try:
            with self.live(f"{what} ({limit:.0f}s at most)") if self.live else contextlib.nullcontext():
                return self.kube.watch_until(kind, predicate, what, limit, tick=tick, tick_every=WAIT_TICK, **selectors)
        finally:
            self.timing.waited += time.monotonic() - started

    def _sleep(self, seconds: float) -> None:
        started = time.monotonic()
        time.sleep(seconds)
        self.timing.waited += time.monotonic() - started

    def _vcenter(self, call: Callable[[], Any]) -> Any:
        """A vCenter call, timed; a session vCenter ended during a long wait (its idle timeout,
        a restart) is logged in again once and the call repeated (every call is idempotent)."""
        started = time.monotonic()
        try:
            with self._vcenter_lock:
                return self._vcenter_call(call)
        finally:
            self.timing.vcenter += time.monotonic() - started

    def _vcenter_call(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except VCenterSessionEnded:
            self.vsphere.relogin()
            self.say("logged in to vCenter again (it had ended the session during the run)")
            return call()

    def _event(self, kind: str, api_version: str, obj: Obj, reason: str, message: str) -> None:
        events.record(self.kube, self.say, kind, api_version, obj, reason, message)

    # -- the steps, forwards ---------------------------------------------------------------------

    def _backup(self, step: Step) -> Obj:
        ns = self.plan.namespace
        sts = self.kube.get("StatefulSet", self.plan.statefulset, ns)
        if sts is None or sts["metadata"]["uid"] != self.plan.uid:
            raise PermanentError(f"statefulset {ns}/{self.plan.statefulset} changed since it was planned; run again")
        objects = [("StatefulSet", "apps/v1", sts)]
        for ordinal in range(self.plan.replicas):
            pod = self.kube.get("Pod", self.plan.pod_name(ordinal), ns)
            if pod is not None:
                objects.append(("Pod", "v1", pod))
        for v in self.plan.volumes:
            for kind, name, namespace in (
                ("PersistentVolumeClaim", v.pvc, ns),
                ("PersistentVolume", v.pv, None),
            ):
                obj = self.kube.get(kind, name, namespace)
                if obj is None:
                    raise NotFoundError(f"{kind.lower()} {name} disappeared before the backup")
                objects.append((kind, "v1", obj))
        if self.kube.has_resource("CnsVSphereVolumeMigration"):
            # The CSI driver's path -> FCD id records: kept as the quickest way to the FCD id,
            # since the driver deletes them once the in-tree PV is gone.
            disks = {v.vmdk for v in self.plan.to_migrate()}
            for record in self.kube.items("CnsVSphereVolumeMigration"):
                if record.get("spec", {}).get("volumepath") in disks:
                    objects.append(("CnsVSphereVolumeMigration", "cns.vmware.com/v1alpha1", record))
        for kind, api_version, obj in objects:
            obj.setdefault("kind", kind)
            obj.setdefault("apiVersion", api_version)
            self.workdir.save_backup(obj)
        self.say(f"backed up {len(objects)} objects to {self.workdir.backup_dir}")
        return {"objects": len(objects)}

    def _set_retain(self, step: Step) -> None:
        v = self._volume(step)
        self._retain(v, self.kube.get("PersistentVolume", v.pv))

    def _retain(self, v: VolumePlan, pv: Obj | None) -> None:
        """`pv` (v.pv as last read) to Retain, the user's policy noted to be restored later."""
        if pv is None or pv["spec"].get("persistentVolumeReclaimPolicy") == "Retain":
            return
        patch = {
            "metadata": {"annotations": {translate.ORIGINAL_RECLAIM_POLICY: v.reclaim_policy}},
            "spec": {"persistentVolumeReclaimPolicy": "Retain"},
        }
        self.kube.patch("PersistentVolume", v.pv, patch)
        self.say(f"persistentvolume/{v.pv} reclaim policy set to Retain")

    def _scale_down(self, step: Step) -> None:
        ns, name = self.plan.namespace, self.plan.statefulset
        sts = self.kube.get("StatefulSet", name, ns)
        if sts is not None and sts["metadata"]["uid"] == self.plan.uid:
            # With persistentVolumeClaimRetentionPolicy.whenScaled: Delete, scaling to zero
            # would delete every claim, the skipped ones too: keep them (the backup has the
            # original policy, which the recreated StatefulSet gets back).
            self._refresh_backups(sts)
            patch = {"spec": {"replicas": 0, "persistentVolumeClaimRetentionPolicy": RETAIN_CLAIMS}}
            self.kube.patch("StatefulSet", name, patch, ns)
            self.say(f"statefulset.apps/{name} scaled to 0 (downtime starts)")
        pods = {self.plan.pod_name(o) for o in range(self.plan.replicas)}
        self.wait("Pod", lambda objs: not pods & set(objs), f"the pods of {name} to stop", namespace=ns)

    def _delete_statefulset(self, step: Step) -> None:
        ns, name = self.plan.namespace, self.plan.statefulset
        sts = self.kube.get("StatefulSet", name, ns)
        if sts is not None and sts["metadata"]["uid"] == self.plan.uid:
            if self.plan.strategy == "rolling":  # offline: refreshed before our own scale-down
                self._refresh_backups(sts)
            policy = sts["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
            if any(policy.get(k) == "Delete" for k in ("whenDeleted", "whenScaled")):
                patch = {"spec": {"persistentVolumeClaimRetentionPolicy": RETAIN_CLAIMS}}
                self.kube.patch("StatefulSet", name, patch, ns)
                self.say(f"statefulset.apps/{name} claim retention set to Retain for the migration")
            self.kube.delete("StatefulSet", name, ns, uid=self.plan.uid, propagation="Orphan")
            self.say(f"statefulset.apps/{name} deleted (orphan: pods, PVCs and PVs kept)")
        self.wait(
            "StatefulSet",
            p.gone(name, self.plan.uid),
            f"statefulset {name} to go",
            namespace=ns,
            field_selector=f"metadata.name={name}",
        )
        pods = {self.plan.pod_name(o) for o in range(self.plan.replicas)}
        self.wait(
            "Pod",
            p.not_owned_by(self.plan.uid, pods),
            "the garbage collector to orphan the pods",
            namespace=ns,
        )

    def _stop_if_recreated_elsewhere(self, live: Obj | None) -> None:
        """Once the tool has deleted the StatefulSet, the only one of that name it accepts is the
        one it creates itself (annotated with the old uid). Any other was put back by someone
        else, with the in-tree templates: adopting it would end the run "migrated" with the
        application still asking for in-tree volumes, and it would recreate pods under the run."""
        if live is None or live["metadata"]["uid"] == self.plan.uid:
            return
        if (live["metadata"].get("annotations") or {}).get(RECREATED_FROM) == self.plan.uid:
            return
        ns, name = self.plan.namespace, self.plan.statefulset
        fields = live["metadata"].get("managedFields") or [{}]
        writer = f", written by {fields[0]['manager']}" if fields[0].get("manager") else ""
        raise PermanentError(
            f"statefulset {ns}/{name} was created again by someone else while the migration ran "
            f"(uid {live['metadata']['uid']}{writer}), not by this run: something manages it (Argo CD, "
            "Flux, a Helm release, an operator?) and puts the in-tree templates back. Nothing is lost: "
            f"migrated volumes are on CSI, the rest untouched, all recorded in {self.workdir.path}. Pause "
            f"that manager, run `kubectl -n {ns} delete statefulset {name} --cascade=orphan`, and run "
            "the same command again"
        )

    @staticmethod
    def _own_retention_patch(live: Obj, backup: Obj) -> Obj | None:
        """The user's claim retention policy (from the backup) when the live StatefulSet carries
        the tool's own (RETAIN_CLAIMS) in its place, else None."""
        original = backup["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
        current = live["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
        if current == RETAIN_CLAIMS and any(original.get(k) == "Delete" for k in RETAIN_CLAIMS):
            return dict(original)
        return None

    def _refresh_backups(self, sts: Obj) -> None:
        """A run resumed before the StatefulSet was deleted may find it changed since the
        backup (a rollout, a replaced pod). Nothing is deleted yet: back up the current
        StatefulSet and pods again, so that what is recreated is what ran last."""
        backup = self.workdir.load_backup("StatefulSet", self.plan.statefulset)
        if self.plan.strategy == "offline" and sts["spec"].get("replicas") == 0:
            return  # our own scale-down, interrupted before it was recorded: the backup stands
        if int(sts["spec"].get("replicas", 1)) != self.plan.replicas and self.plan.strategy == "rolling":
            raise PermanentError(
                f"statefulset {self.plan.namespace}/{self.plan.statefulset} was scaled since it was planned; "
                "nothing was deleted: start again with a new --working-directory"
            )
        if sts["metadata"].get("deletionTimestamp"):
            return  # our own orphan delete, interrupted before it was recorded: the backup stands
        ours = self._own_retention_patch(sts, backup)
        if ours:
            # Our own patch (claims kept for the migration) bumped the generation: recreate with
            # the user's policy, not ours.
            sts["spec"]["persistentVolumeClaimRetentionPolicy"] = ours
        generation = int(sts["metadata"].get("generation") or 0) - (1 if ours else 0)
        changed = generation != backup["metadata"].get("generation")
        pods = []
        for ordinal in range(self.plan.replicas):
            pod = self.kube.get("Pod", self.plan.pod_name(ordinal), self.plan.namespace)
            if pod is None:
                continue
            pods.append(pod)
            if not self.workdir.has_backup("Pod", pod["metadata"]["name"]):
                changed = True
            else:
                old = self.workdir.load_backup("Pod", pod["metadata"]["name"])
                changed = changed or old["metadata"]["uid"] != pod["metadata"]["uid"]
        if not changed:
            return
        for kind, api_version, obj in [("StatefulSet", "apps/v1", sts)] + [("Pod", "v1", x) for x in pods]:
            obj.setdefault("kind", kind)
            obj.setdefault("apiVersion", api_version)
            self.workdir.save_backup(obj, overwrite=True)
        self.say("the StatefulSet or its pods changed since the backup: backed them up again")

    def _evict(self, step: Step) -> None:
        ns, pod = self.plan.namespace, self.plan.pod_name(step.ordinal or 0)
        backup = self.workdir.load_backup("Pod", pod) if self.workdir.has_backup("Pod", pod) else None
        live = self.kube.get("Pod", pod, ns)
        if live is not None and backup is not None and live["metadata"]["uid"] != backup["metadata"]["uid"]:
            raise PermanentError(f"pod {ns}/{pod} was recreated by someone else while migrating; stop and inspect")
        self._evict_live(pod, live)

    def _evict_live(self, pod: str, live: Obj | None) -> None:
        """Evict `live` (pod `pod` as last read, None when gone) and wait until it is gone: through
        the disruption budget, or, while the StatefulSet is deleted and the cluster cannot count
        its pods, against the budget as the tool evaluates it."""
        ns = self.plan.namespace
        if live is not None:
            deadline = time.monotonic() + self.settings.timeout
            while True:
                try:
                    self.kube.evict(pod, ns)
                    self.say(f"pod/{pod} evicted")
                    break
                except NotFoundError:
                    break
                except TooManyRequestsError as exc:
                    budget = orphan_budget(self.kube, self.plan, live)
                    if budget is not None and budget[0]:
                        self.kube.delete("Pod", pod, ns, uid=live["metadata"]["uid"])
                        self.say(f"pod/{pod} deleted ({budget[1]})")
                        break
                    if time.monotonic() > deadline:
                        raise TemporaryError(f"pod {ns}/{pod} cannot be evicted: {exc}") from exc
                    self._sleep(1)  # the disruption budget allows it once the last pod is Ready
        uid = live["metadata"]["uid"] if live else None
        self.wait(
            "Pod",
            p.gone(pod, uid) if uid else p.gone(pod),
            f"pod {pod} to go",
            namespace=ns,
            field_selector=f"metadata.name={pod}",
        )

    def _wait_detached(self, step: Step) -> None:
        v = self._volume(step)
        self.wait("VolumeAttachment", p.no_attachment(v.pv), f"volume {v.pv} to be detached")
        deadline = time.monotonic() + self.settings.timeout
        while vms := self._vcenter(lambda: self.vsphere.attached_vms(v.vmdk)):
            if time.monotonic() > deadline:
                raise TemporaryError(f"{v.vmdk} is still attached to {', '.join(vms)}")
            self._sleep(2)  # vCenter has no watch here; detach is rare at this point

    def _delete_pvc(self, step: Step) -> None:
        v = self._volume(step)
        ns = self.plan.namespace
        backup = self.workdir.load_backup("PersistentVolumeClaim", v.pvc)
        uid = backup["metadata"]["uid"]
        live = self.kube.get("PersistentVolumeClaim", v.pvc, ns)
        if live is not None and live["metadata"]["uid"] != uid:
            raise PermanentError(f"persistentvolumeclaim {ns}/{v.pvc} was recreated by someone else; stop and inspect")
        if live is not None:
            self._ensure_retained(v)
            self.kube.delete("PersistentVolumeClaim", v.pvc, ns, uid=uid)
            self.say(f"persistentvolumeclaim/{v.pvc} deleted")
        self.wait(
            "PersistentVolumeClaim",
            p.gone(v.pvc, uid),
            f"pvc {v.pvc} to go",
            namespace=ns,
            field_selector=f"metadata.name={v.pvc}",
        )

    def _ensure_retained(self, v: VolumePlan) -> None:
        """Invariant 2, checked at the last moment: once the claim is gone, a PV on Delete
        would take the disk with it. Something (GitOps, a person) may have reverted it since
        the retain step."""
        backup = self.workdir.load_backup("PersistentVolume", v.pv)
        pv = self.kube.get("PersistentVolume", v.pv)
        if pv is None or pv["metadata"]["uid"] != backup["metadata"]["uid"]:
            raise PermanentError(f"persistentvolume {v.pv} is not the one backed up; stop and inspect")
        if pv["spec"].get("persistentVolumeReclaimPolicy") != "Retain":
            self.kube.patch("PersistentVolume", v.pv, {"spec": {"persistentVolumeReclaimPolicy": "Retain"}})
            self.say(f"persistentvolume/{v.pv} reclaim policy was changed back by someone: set to Retain again")
            pv = self.kube.get("PersistentVolume", v.pv)
            if pv is None or pv["spec"].get("persistentVolumeReclaimPolicy") != "Retain":
                raise PermanentError(f"persistentvolume {v.pv} does not stay Retain; its claim was not deleted")

    def _delete_pv(self, step: Step) -> Obj:
        v = self._volume(step)
        backup = self.workdir.load_backup("PersistentVolume", v.pv)
        uid = backup["metadata"]["uid"]
        live = self.kube.get("PersistentVolume", v.pv)
        if live is not None and live["metadata"]["uid"] == uid:
            if live["spec"].get("persistentVolumeReclaimPolicy") != "Retain":
                raise PermanentError(f"persistentvolume {v.pv} is not Retain; refusing to delete it")
            self.kube.delete("PersistentVolume", v.pv, uid=uid)
            self.say(f"persistentvolume/{v.pv} deleted (the disk is kept: reclaim policy Retain)")
        self.wait(
            "PersistentVolume",
            p.gone(v.pv, uid),
            f"pv {v.pv} to go",
            field_selector=f"metadata.name={v.pv}",
        )
        return {"gone_at": self.kube.server_date}  # the API server's clock, for _wait_cns_release

    def _wait_cns_release(self, step: Step) -> None:
        """Where the CSI driver keeps CnsVSphereVolumeMigration objects, wait until it has
        dropped the one for this disk: it unregisters the old volume from CNS, and a new
        registration made before that could be removed with it. Bounded: the syncer does this
        in the PV's delete event; past the bound it is down or missed the event, and a person
        must look (the message says where, and what is safe to do)."""
        if not self.kube.has_resource("CnsVSphereVolumeMigration"):
            return
        v = self._volume(step)
        timeout = min(self.settings.timeout, self.settings.release_timeout)

        def released(objs: dict[str, Obj]) -> bool:
            return not any(o.get("spec", {}).get("volumepath") == v.vmdk for o in objs.values())

        try:
            self.wait("CnsVSphereVolumeMigration", released, f"the CSI driver to release {v.vmdk}", timeout)
        except TemporaryError as exc:
            left = [
                o["metadata"]["name"]
                for o in self.kube.items("CnsVSphereVolumeMigration")
                if o.get("spec", {}).get("volumepath") == v.vmdk
            ]
            record = f"cnsvspherevolumemigration/{left[0]}" if left else "its CnsVSphereVolumeMigration record"
            gone_at = self.done.get(f"delete-pv/{v.pv}", {}).get("gone_at")
            logs = "kubectl -n vmware-system-csi logs deploy/vsphere-csi-controller -c vsphere-syncer"
            if syncer_renewed_since(self.kube, gone_at):
                # Running since, yet the record stays: it waits on vCenter, or it missed the delete
                # event (restarting, or not the leader, when the PV went) and never comes back to it.
                state = (
                    "The syncer has renewed its leader lease since the PV went, so it runs: look at its "
                    f"log for vCenter errors ({logs}); if it reaches vCenter, it missed the PV's deletion "
                    "(a restart in between) and will not release the disk by itself"
                )
            else:
                state = (
                    "The syncer has not renewed its leader lease since the PV went: is it running and "
                    f"reaching vCenter ({logs})? Once it runs it releases the disk by itself: then run the "
                    "same command again"
                )
            raise PermanentError(
                f"the vSphere CSI driver's syncer has not released {v.vmdk} {timeout:.0f}s after "
                f"persistentvolume/{v.pv} was deleted ({record} still exists). {state}. Nothing is "
                f"lost: the disk is kept (Retain) and recorded in {self.workdir.path}. If the syncer "
                f"runs and reaches vCenter and the record stays, no PersistentVolume names {v.vmdk} any more, so "
                f"deleting {record} is safe; then run the same command again"
            ) from exc

    def _ensure_fcd(self, step: Step) -> Obj:
        """The disk's FCD id: the one the CSI driver recorded (checked against vCenter), else
        register_fcd, which reuses an existing FCD or registers the disk."""
        v = self._volume(step)
        # Where preflight found the disk (recorded in the plan); a plan from an older release
        # has none, and the flag (or, as preflight did, every configured datacenter) is used.
        dc = v.datacenter or self.settings.datacenter
        hint = self._recorded_fcd(v.vmdk)
        if hint and self._vcenter(lambda: self.vsphere.fcd_file_path(hint, v.vmdk, dc)) == v.vmdk:
            self.say(f"disk {v.vmdk} is already first class disk {hint} (recorded by the CSI driver)")
            fcd_id = hint
        else:
            fcd_id = self._vcenter(lambda: self.vsphere.register_fcd(v.vmdk, v.pv, dc))
            self.say(f"disk {v.vmdk} is first class disk {fcd_id}")
        # A disk without keepAfterDeleteVm is deleted with a node VM it is attached to; the CSI
        # driver protects the disks it manages, and RegisterDisk (or a vCenter before 8.0u3)
        # does not set the flag.
        if not self._vcenter(lambda: self.vsphere.protect_fcd(fcd_id, v.vmdk, dc)):
            raise PermanentError(
                f"vCenter did not keep the keepAfterDeleteVm flag on first class disk {fcd_id} "
                f"({v.vmdk}); without it the disk is deleted with a node VM it is attached to"
            )
        return {"fcd_id": fcd_id, "keep_after_delete_vm": True}

    def _recorded_fcd(self, vmdk: str) -> str | None:
        folder = self.workdir.backup_dir / "cnsvspherevolumemigration"
        for path in sorted(folder.glob("*.yaml")) if folder.exists() else []:
            record = self.workdir.load_backup("CnsVSphereVolumeMigration", path.stem)
            if record.get("spec", {}).get("volumepath") == vmdk:
                return str(record["metadata"]["name"])
        return None

    def _disk_named_elsewhere(self, v: VolumePlan, fcd_id: str | None, kind: str) -> Obj | None:
        """The PV named v.pv of `kind` ("csi" or "in-tree") when it exists and names the disk;
        raises when any other PV names the disk (never a second PV for one disk)."""
        mine = None
        for other in self.kube.items("PersistentVolume"):
            spec = other.get("spec", {})
            names_disk = translate.disk_key(spec.get("vsphereVolume", {}).get("volumePath", "")) == translate.disk_key(
                v.vmdk
            ) or bool(fcd_id and spec.get("csi", {}).get("volumeHandle") == fcd_id)
            if not names_disk:
                continue
            csi = translate.is_csi_vsphere_pv(other)
            if other["metadata"]["name"] == v.pv and csi == (kind == "csi"):
                mine = other
                continue
            raise PermanentError(
                f"persistentvolume {other['metadata']['name']} still refers to {v.vmdk}; "
                "refusing to create a second PV for the same disk"
            )
        return mine

    def _create_pv(self, step: Step) -> None:
        v = self._volume(step)
        fcd_id = self.done[f"fcd/{v.pv}"]["fcd_id"]
        if self._disk_named_elsewhere(v, fcd_id, "csi") is not None:
            return  # created by an earlier attempt of this step
        backup_pv = self.workdir.load_backup("PersistentVolume", v.pv)
        backup_pvc = self.workdir.load_backup("PersistentVolumeClaim", v.pvc)
        new_pv = translate.csi_pv_from_intree(
            backup_pv, fcd_id, self.plan.csi_class, backup_pvc, self.plan.topology_keys
        )
        self.kube.create(new_pv)
        self.say(f"persistentvolume/{v.pv} created (csi.vsphere.vmware.com, volumeHandle {fcd_id})")

    def _create_pvc(self, step: Step) -> None:
        v = self._volume(step)
        fcd_id = self.done[f"fcd/{v.pv}"]["fcd_id"]
        ns = self.plan.namespace
        live = self.kube.get("PersistentVolumeClaim", v.pvc, ns)
        if live is None:
            backup = self.workdir.load_backup("PersistentVolumeClaim", v.pvc)
            self.kube.create(translate.recreated_pvc(backup, v.pv, self.plan.csi_class))
            self.say(f"persistentvolumeclaim/{v.pvc} created ({self.plan.csi_class})")
        elif live["spec"].get("volumeName") != v.pv:
            raise PermanentError(f"persistentvolumeclaim {ns}/{v.pvc} exists but is not bound to {v.pv}")
        self._wait_bound(v)
        pvc = self.kube.get("PersistentVolumeClaim", v.pvc, ns)
        if pvc is not None:
            message = events.migrated_message(self.plan, v, fcd_id)
            self._event("PersistentVolumeClaim", "v1", pvc, "MigratedToCSI", message)

    def _wait_bound(self, v: VolumePlan) -> None:
        self.wait(
            "PersistentVolumeClaim",
            p.pvc_bound(v.pvc, v.pv),
            f"pvc {v.pvc} to be Bound",
            namespace=self.plan.namespace,
            field_selector=f"metadata.name={v.pvc}",
        )

    def _recreate_pod(self, step: Step) -> None:
        ns, pod = self.plan.namespace, self.plan.pod_name(step.ordinal or 0)
        if not self.workdir.has_backup("Pod", pod):
            return  # there was no pod for this ordinal
        if self.kube.get("Pod", pod, ns) is None:
            self.kube.create(translate.pod_for_recreate(self.workdir.load_backup("Pod", pod)))
            self.say(f"pod/{pod} created")
        self.wait(
            "Pod",
            p.pod_ready(pod),
            f"pod {pod} to be Ready",
            namespace=ns,
            field_selector=f"metadata.name={pod}",
        )

    def _recreate_statefulset(self, step: Step) -> None:
        ns, name = self.plan.namespace, self.plan.statefulset
        backup = self.workdir.load_backup("StatefulSet", name)
        live = self.kube.get("StatefulSet", name, ns)
        self._stop_if_recreated_elsewhere(live)
        if live is None:
            new = translate.statefulset_for_recreate(backup, self.plan.csi_class, set(self.plan.migrate_templates))
            new["metadata"].setdefault("annotations", {})[RECREATED_FROM] = self.plan.uid
            live = self.kube.create(new)
            self.say(f"statefulset.apps/{name} created (volumeClaimTemplates on {self.plan.csi_class})")
        elif live["metadata"]["uid"] == self.plan.uid:
            raise PermanentError(f"statefulset {ns}/{name} still has its old uid; it was not deleted")
        sts = self._wait_owns_ready_pods(live["metadata"]["uid"], backup)
        if sts is not None:
            for v in self.plan.to_migrate():
                fcd_id = self.done.get(f"fcd/{v.pv}", {}).get("fcd_id", "")
                message = f"{v.pvc}: {events.migrated_message(self.plan, v, fcd_id)}"
                self._event("StatefulSet", "apps/v1", sts, "MigratedToCSI", message)

    def _wait_owns_ready_pods(self, uid: str, backup: Obj) -> Obj | None:
        """Until the StatefulSet `uid` owns its pods, all Ready; then, for a while and without
        failing over it, until its own status says so. Returns it as last read."""
        ns, name = self.plan.namespace, self.plan.statefulset
        replicas = int(backup["spec"].get("replicas", 1))
        pods = {self.plan.pod_name(o) for o in range(replicas)}
        selector = ",".join(f"{k}={v}" for k, v in backup["spec"]["selector"].get("matchLabels", {}).items())
        self.wait(
            "Pod",
            lambda objs: p.statefulset_adopted_and_ready(uid, replicas, pods, objs),
            f"statefulset {name} to adopt {replicas} Ready pods",
            namespace=ns,
            label_selector=selector or None,
        )
        self.say(f"statefulset.apps/{name} owns {replicas} Ready pods")
        # Every pod is Ready and adopted (checked above); the StatefulSet's own status can lag
        # behind its pods. Wait a while for it, but do not fail the migration over it.
        started = time.monotonic()
        try:
            self.kube.watch_until(
                "StatefulSet",
                p.statefulset_ready(replicas),
                f"statefulset {name} to report {replicas} ready",
                min(60.0, self.settings.timeout),
                namespace=ns,
                field_selector=f"metadata.name={name}",
            )
        except TemporaryError:
            self.say(
                f"warning: statefulset.apps/{name} status does not report {replicas} ready yet; its pods are Ready"
            )
        finally:
            self.timing.waited += time.monotonic() - started
        return self.kube.get("StatefulSet", name, ns)

    def _restore_reclaim_policy(self, step: Step) -> None:
        for v in self.plan.to_migrate():
            target = "Retain" if self.settings.keep_retain else v.reclaim_policy
            pv = self.kube.get("PersistentVolume", v.pv)
            noted = translate.ORIGINAL_RECLAIM_POLICY in (pv or {}).get("metadata", {}).get("annotations", {})
            if pv is None or (pv["spec"].get("persistentVolumeReclaimPolicy") == target and not noted):
                continue
            patch: Obj = {"spec": {"persistentVolumeReclaimPolicy": target}}
            if noted:
                patch["metadata"] = {"annotations": {translate.ORIGINAL_RECLAIM_POLICY: None}}
            self.kube.patch("PersistentVolume", v.pv, patch)
            self.say(f"persistentvolume/{v.pv} reclaim policy restored to {target}")

    # -- the steps, backwards (rollback) ------------------------------------------------------

    def _ensure_csi_retained(self, v: VolumePlan) -> None:
        """Invariant 2 backwards: the CSI PV is Retain before its claim or itself is deleted."""
        pv = self.kube.get("PersistentVolume", v.pv)
        if pv is not None and translate.is_csi_vsphere_pv(pv):
            self._retain(v, pv)

    def _undo_restore_reclaim_policy(self, step: Step) -> None:
        for v in self.plan.to_migrate():
            self._ensure_csi_retained(v)

    def _undo_recreate_statefulset(self, step: Step) -> None:
        ns, name = self.plan.namespace, self.plan.statefulset
        live = self.kube.get("StatefulSet", name, ns)
        if live is None or live["metadata"]["uid"] == self.plan.uid:
            return
        uid = live["metadata"]["uid"]
        if (live["metadata"].get("annotations") or {}).get(RECREATED_FROM) != self.plan.uid:
            raise PermanentError(
                f"statefulset {ns}/{name} (uid {uid}) was not created by this run; the rollback leaves it "
                f"alone. If it should go, run `kubectl -n {ns} delete statefulset {name} --cascade=orphan` "
                "and the same rollback command again"
            )
        if not live["metadata"].get("deletionTimestamp"):
            policy = live["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
            patch: Obj = {}
            if any(policy.get(k) == "Delete" for k in RETAIN_CLAIMS):
                patch["persistentVolumeClaimRetentionPolicy"] = RETAIN_CLAIMS
            if self.plan.strategy == "offline" and live["spec"].get("replicas") != 0:
                patch["replicas"] = 0
            if patch:
                self.kube.patch("StatefulSet", name, {"spec": patch}, ns)
                if "replicas" in patch:
                    self.say(f"statefulset.apps/{name} scaled to 0 (downtime starts)")
            if self.plan.strategy == "offline":
                pods = {self.plan.pod_name(o) for o in range(self.plan.replicas)}
                self.wait("Pod", lambda objs: not pods & set(objs), f"the pods of {name} to stop", namespace=ns)
            self.kube.delete("StatefulSet", name, ns, uid=uid, propagation="Orphan")
            self.say(f"statefulset.apps/{name} (CSI) deleted (orphan: pods, PVCs and PVs kept)")
        self.wait(
            "StatefulSet",
            p.gone(name, uid),
            f"statefulset {name} to go",
            namespace=ns,
            field_selector=f"metadata.name={name}",
        )
        pods = {self.plan.pod_name(o) for o in range(self.plan.replicas)}
        self.wait("Pod", p.not_owned_by(uid, pods), "the garbage collector to orphan the pods", namespace=ns)

    def _undo_recreate_pod(self, step: Step) -> None:
        ns, pod = self.plan.namespace, self.plan.pod_name(step.ordinal or 0)
        live = self.kube.get("Pod", pod, ns)
        if live is None or not self.workdir.has_backup("Pod", pod):
            return
        if live["metadata"]["uid"] == self.workdir.load_backup("Pod", pod)["metadata"]["uid"]:
            return  # still the original pod: it runs on in-tree volumes
        self._evict_live(pod, live)

    def _undo_create_pvc(self, step: Step) -> None:
        v, ns = self._volume(step), self.plan.namespace
        live = self.kube.get("PersistentVolumeClaim", v.pvc, ns)
        backup = self.workdir.load_backup("PersistentVolumeClaim", v.pvc)
        if live is None or live["metadata"]["uid"] == backup["metadata"]["uid"]:
            return
        if live["spec"].get("storageClassName") != self.plan.csi_class or live["spec"].get("volumeName") != v.pv:
            raise PermanentError(
                f"persistentvolumeclaim {ns}/{v.pvc} is neither the original nor the one this run created; "
                "stop and inspect"
            )
        uid = live["metadata"]["uid"]
        self._ensure_csi_retained(v)
        if not live["metadata"].get("deletionTimestamp"):
            self.kube.delete("PersistentVolumeClaim", v.pvc, ns, uid=uid)
            self.say(f"persistentvolumeclaim/{v.pvc} (CSI) deleted")
        self.wait(
            "PersistentVolumeClaim",
            p.gone(v.pvc, uid),
            f"pvc {v.pvc} to go (a pod still using it holds it)",
            namespace=ns,
            field_selector=f"metadata.name={v.pvc}",
        )
        self.wait("VolumeAttachment", p.no_attachment(v.pv), f"volume {v.pv} to be detached")

    def _undo_create_pv(self, step: Step) -> None:
        v = self._volume(step)
        live = self.kube.get("PersistentVolume", v.pv)
        if live is None or not translate.is_csi_vsphere_pv(live):
            return
        uid = live["metadata"]["uid"]
        claim = live["spec"].get("claimRef") or {}
        pvc = self.kube.get("PersistentVolumeClaim", v.pvc, self.plan.namespace)
        if pvc is not None and claim.get("uid") and pvc["metadata"]["uid"] == claim["uid"]:
            raise PermanentError(f"persistentvolume {v.pv} is still bound to its claim; it was not deleted")
        self._ensure_csi_retained(v)
        if not live["metadata"].get("deletionTimestamp"):
            self.wait("VolumeAttachment", p.no_attachment(v.pv), f"volume {v.pv} to be detached")
            self.kube.delete("PersistentVolume", v.pv, uid=uid)
            self.say(f"persistentvolume/{v.pv} (CSI) deleted (the disk is kept: reclaim policy Retain)")
        self.wait("PersistentVolume", p.gone(v.pv, uid), f"pv {v.pv} to go", field_selector=f"metadata.name={v.pv}")

    def _undo_delete_pv(self, step: Step) -> None:
        v = self._volume(step)
        backup = self.workdir.load_backup("PersistentVolume", v.pv)
        uid = backup["metadata"]["uid"]
        live = self.kube.get("PersistentVolume", v.pv)
        if live is not None and live["metadata"]["uid"] == uid:
            if not live["metadata"].get("deletionTimestamp"):
                return  # never deleted
            self.wait("PersistentVolume", p.gone(v.pv, uid), f"pv {v.pv} to go", field_selector=f"metadata.name={v.pv}")
        fcd_id = self.done.get(f"fcd/{v.pv}", {}).get("fcd_id")
        if self._disk_named_elsewhere(v, fcd_id, "in-tree") is not None:
            return  # created again by an earlier attempt of this undo
        self.kube.create(translate.intree_pv_from_backup(backup))
        self.say(f"persistentvolume/{v.pv} created again from its backup (in-tree {v.vmdk}, Retain until bound)")

    def _undo_delete_pvc(self, step: Step) -> None:
        v, ns = self._volume(step), self.plan.namespace
        backup = self.workdir.load_backup("PersistentVolumeClaim", v.pvc)
        uid = backup["metadata"]["uid"]
        live = self.kube.get("PersistentVolumeClaim", v.pvc, ns)
        if live is not None and live["metadata"]["uid"] == uid and live["metadata"].get("deletionTimestamp"):
            self.wait(
                "PersistentVolumeClaim",
                p.gone(v.pvc, uid),
                f"pvc {v.pvc} to go",
                namespace=ns,
                field_selector=f"metadata.name={v.pvc}",
            )
            live = None
        if live is None:
            self._release_claim_ref(v)
            self.kube.create(translate.intree_pvc_from_backup(backup))
            self.say(f"persistentvolumeclaim/{v.pvc} created again from its backup")
        elif live["metadata"]["uid"] != uid and (
            live["spec"].get("volumeName") != v.pv or live["spec"].get("storageClassName") == self.plan.csi_class
        ):
            raise PermanentError(f"persistentvolumeclaim {ns}/{v.pvc} is not the in-tree claim; stop and inspect")
        self._wait_bound(v)

    def _release_claim_ref(self, v: VolumePlan) -> None:
        """The original in-tree PV, Released when its claim went (a run stopped between the two
        deletes), still names the deleted claim's uid and would refuse the claim created again:
        it keeps the claim's name only, Retain (the undo of `retain` restores the policy)."""
        pv = self.kube.get("PersistentVolume", v.pv)
        if pv is None or not translate.is_intree_vsphere_pv(pv):
            return
        claim = pv["spec"].get("claimRef") or {}
        if not claim.get("uid"):
            return
        if pv["spec"].get("persistentVolumeReclaimPolicy") != "Retain":
            raise PermanentError(f"persistentvolume {v.pv} is not Retain; its claim was not created again")
        patch = {"spec": {"claimRef": {"uid": None, "resourceVersion": None}}}
        self.kube.patch("PersistentVolume", v.pv, patch)
        self.say(f"persistentvolume/{v.pv} freed for its claim (Released: the deleted claim's uid removed)")

    def _undo_evict(self, step: Step) -> None:
        ns, pod = self.plan.namespace, self.plan.pod_name(step.ordinal or 0)
        if not self.workdir.has_backup("Pod", pod):
            return
        if self.kube.get("Pod", pod, ns) is None:
            self.kube.create(translate.pod_for_recreate(self.workdir.load_backup("Pod", pod)))
            self.say(f"pod/{pod} created again from its backup")
        self.wait(
            "Pod", p.pod_ready(pod), f"pod {pod} to be Ready", namespace=ns, field_selector=f"metadata.name={pod}"
        )

    def _undo_delete_statefulset(self, step: Step) -> None:
        ns, name = self.plan.namespace, self.plan.statefulset
        backup = self.workdir.load_backup("StatefulSet", name)
        live = self.kube.get("StatefulSet", name, ns)
        if live is not None and live["metadata"]["uid"] == self.plan.uid:
            if not live["metadata"].get("deletionTimestamp"):
                ours = self._own_retention_patch(live, backup)
                if ours:
                    patch = {"spec": {"persistentVolumeClaimRetentionPolicy": ours}}
                    self.kube.patch("StatefulSet", name, patch, ns)
                    self.say(f"statefulset.apps/{name} claim retention policy restored")
                return  # never deleted
            self.wait(
                "StatefulSet",
                p.gone(name, self.plan.uid),
                f"statefulset {name} to go",
                namespace=ns,
                field_selector=f"metadata.name={name}",
            )
            live = None
        if live is None:
            live = self.kube.create(translate.strip_server_fields(backup))
            self.say(f"statefulset.apps/{name} created again from its backup (in-tree volumeClaimTemplates)")
        elif (live["metadata"].get("annotations") or {}).get(RECREATED_FROM) == self.plan.uid:
            raise PermanentError(f"statefulset {ns}/{name} is still the CSI one this run created")
        else:
            self.say(f"statefulset.apps/{name} exists (uid {live['metadata']['uid']}, not created by this run); kept")
        self._wait_owns_ready_pods(live["metadata"]["uid"], backup)

    def _undo_scale_down(self, step: Step) -> None:
        ns, name = self.plan.namespace, self.plan.statefulset
        live = self.kube.get("StatefulSet", name, ns)
        if live is None or live["metadata"]["uid"] != self.plan.uid:
            return  # created again from its backup, at its full size
        backup = self.workdir.load_backup("StatefulSet", name)
        replicas = int(backup["spec"].get("replicas", 1))
        if live["spec"].get("replicas") != replicas:
            policy = backup["spec"].get("persistentVolumeClaimRetentionPolicy") or RETAIN_CLAIMS
            patch = {"spec": {"replicas": replicas, "persistentVolumeClaimRetentionPolicy": policy}}
            self.kube.patch("StatefulSet", name, patch, ns)
            self.say(f"statefulset.apps/{name} scaled back to {replicas}")
        self._wait_owns_ready_pods(self.plan.uid, backup)

    def _undo_retain(self, step: Step) -> None:
        v = self._volume(step)
        pv = self.kube.get("PersistentVolume", v.pv)
        if pv is None or translate.is_csi_vsphere_pv(pv):
            raise PermanentError(f"persistentvolume {v.pv} is not the in-tree one; its reclaim policy stays Retain")
        noted = translate.ORIGINAL_RECLAIM_POLICY in (pv["metadata"].get("annotations") or {})
        if pv["spec"].get("persistentVolumeReclaimPolicy") == v.reclaim_policy and not noted:
            return
        if v.reclaim_policy != "Retain" and pv.get("status", {}).get("phase") != "Bound":
            raise PermanentError(f"persistentvolume {v.pv} is not Bound; it stays Retain")
        patch: Obj = {"spec": {"persistentVolumeReclaimPolicy": v.reclaim_policy}}
        if noted:
            patch["metadata"] = {"annotations": {translate.ORIGINAL_RECLAIM_POLICY: None}}
        self.kube.patch("PersistentVolume", v.pv, patch)
        self.say(f"persistentvolume/{v.pv} reclaim policy restored to {v.reclaim_policy}")
