"""Executing a plan: the rolling and offline migrations, step by step, resumable.

Every step is recorded in the working directory before and after it runs, and is idempotent:
it looks at the live object first (by name and uid) and does only what is left. A run killed at
any point is resumed by running the same command again. Invariants kept here:

1. nothing is mutated before every object is backed up (fsync'd);
2. every PV is Retain before any PVC or PV is deleted;
3. no VMDK or FCD is ever deleted, and no second PV is created for a disk another PV still names;
4. one run per StatefulSet (a Lease in its namespace).
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubectl_csi_migrate.errors import (
    CsiMigrateError,
    NotFoundError,
    PermanentError,
    TemporaryError,
    TooManyRequestsError,
    VCenterSessionEnded,
)
from kubectl_csi_migrate.kube import predicates as p
from kubectl_csi_migrate.kube.lock import Lease
from kubectl_csi_migrate.kube.lock import now as _now
from kubectl_csi_migrate.migration import translate
from kubectl_csi_migrate.migration.plan import Plan, VolumePlan
from kubectl_csi_migrate.migration.preflight import syncer_renewed_since
from kubectl_csi_migrate.migration.workdir import WorkDir

Obj = dict[str, Any]


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

API_OUTAGE_SECONDS = 60.0
"""How long a run rides out an API server that refuses connections (a restart) before it stops."""


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


@dataclass
class Timing:
    """Where the time went: waiting on the cluster and vCenter, or the tool's own work."""

    started: float = field(default_factory=time.monotonic)
    waited: float = 0.0
    vcenter: float = 0.0


class Migration:
    """One run of one plan. `say` receives one line per action, kubectl style."""

    def __init__(
        self,
        kube: Any,
        vc: Any,
        plan: Plan,
        workdir: WorkDir,
        say: Callable[[str], None],
        settings: Settings | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.kube = kube
        self.vc = vc
        self.plan = plan
        self.workdir = workdir
        self.say = say
        self.progress = progress or (lambda _line: None)
        self.settings = settings or Settings()
        self.timing = Timing()
        self.done: dict[str, Obj] = {}
        self.volume_results: dict[str, Obj] = {}
        self.run_id = ""

    # -- the two strategies -------------------------------------------------------------------

    def run(self) -> Obj:
        resuming = self.workdir.backed_up()
        if resuming:
            self.run_id = self.workdir.load_run()["run_id"]
            self.done = {k: v for k, v in self.workdir.steps().items() if v["event"] == "done"}
            self.say(f"resuming the run in {self.workdir.path} ({len(self.done)} steps already done)")
        else:
            self.run_id = uuid.uuid4().hex
        lease = Lease(self.kube, self.plan.namespace, f"csi-migrate-{self.plan.statefulset}", self.run_id, self.say)
        lease.acquire(f"statefulset {self.plan.namespace}/{self.plan.statefulset}")
        self.kube.before_mutation = lease.check
        self.kube.outage_seconds = API_OUTAGE_SECONDS
        if not resuming:  # nothing was changed yet: (re)start the record
            self.workdir.create(self.plan, self.run_id, {"keep_retain": self.settings.keep_retain})
        try:
            self.step("backup", self._backup)
            self.step("retain", self._set_retain)
            if self.plan.strategy == "offline":
                self.step("scale-down", self._scale_down)
            self.step("delete-statefulset", self._delete_statefulset)
            ordinals = self.plan.ordinals_descending()
            for index, ordinal in enumerate(ordinals, 1):
                self.progress(f"replica {index}/{len(ordinals)}: {self.plan.pod_name(ordinal)}")
                self._stop_if_recreated_elsewhere(
                    self.kube.get("StatefulSet", self.plan.statefulset, self.plan.namespace)
                )
                if self.plan.strategy == "rolling":
                    self._migrate_replica(ordinal)
                else:
                    for volume in self.plan.to_migrate(ordinal):
                        self._migrate_volume(volume)
            self.step("recreate-statefulset", self._recreate_statefulset)
            self.step("restore-reclaim-policy", self._restore_reclaim_policy)
        finally:
            self.kube.before_mutation = None
            self.kube.outage_seconds = 0.0
            lease.release()
        report = self.report()
        self.workdir.mark_finished(report)
        return report

    def _migrate_replica(self, ordinal: int) -> None:
        pod = self.plan.pod_name(ordinal)
        self.step(f"evict/{pod}", lambda: self._evict(pod))
        for volume in self.plan.to_migrate(ordinal):
            self._migrate_volume(volume)
        self.step(f"recreate-pod/{pod}", lambda: self._recreate_pod(pod))

    def _migrate_volume(self, v: VolumePlan) -> None:
        started = time.time()
        self.step(f"detach/{v.pv}", lambda: self._wait_detached(v))
        self.step(f"delete-pvc/{v.pvc}", lambda: self._delete_pvc(v))
        self.step(f"delete-pv/{v.pv}", lambda: self._delete_pv(v))
        self.step(f"cns-release/{v.pv}", lambda: self._wait_cns_release(v))
        fcd = self.step(f"fcd/{v.pv}", lambda: self._ensure_fcd(v))
        self.step(f"create-pv/{v.pv}", lambda: self._create_pv(v, fcd["fcd_id"]))
        self.step(f"create-pvc/{v.pvc}", lambda: self._create_pvc(v, fcd["fcd_id"]))
        self.volume_results[v.pv] = {
            "fcd_id": fcd["fcd_id"],
            "started": started,
            "finished": time.time(),
        }

    # -- the step record ------------------------------------------------------------------------

    def step(self, name: str, action: Callable[[], Obj | None]) -> Obj:
        if name in self.done:
            return self.done[name]
        self.workdir.record(name, "start")
        result = action() or {}
        self.workdir.record(name, "done", **result)
        self.done[name] = {"step": name, "event": "done", **result}
        return self.done[name]

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
            self.say(f"still waiting for {what}: {waited:.0f}s of {limit:.0f}s")
            if not hinted and waited >= limit / 2 and kind in WAIT_HINTS:
                hinted = True
                self.say(f"hint: {WAIT_HINTS[kind]}")

        try:
            return self.kube.watch_until(kind, predicate, what, limit, tick=tick, tick_every=WAIT_TICK, **selectors)
        finally:
            self.timing.waited += time.monotonic() - started

    def _vcenter(self, call: Callable[[], Any]) -> Any:
        """A vCenter call, timed; a session vCenter ended during a long wait (its idle timeout,
        a restart) is logged in again once and the call repeated (every call is idempotent)."""
        started = time.monotonic()
        try:
            try:
                return call()
            except VCenterSessionEnded:
                self.vc.relogin()
                self.say("logged in to vCenter again (it had ended the session during the run)")
                return call()
        finally:
            self.timing.vcenter += time.monotonic() - started

    # -- steps -------------------------------------------------------------------------------

    def _backup(self) -> Obj:
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

    def _set_retain(self) -> None:
        for v in self.plan.to_migrate():
            pv = self.kube.get("PersistentVolume", v.pv)
            if pv is None or pv["spec"].get("persistentVolumeReclaimPolicy") == "Retain":
                continue
            patch = {
                "metadata": {"annotations": {translate.ORIGINAL_RECLAIM_POLICY: v.reclaim_policy}},
                "spec": {"persistentVolumeReclaimPolicy": "Retain"},
            }
            self.kube.patch("PersistentVolume", v.pv, patch)
            self.say(f"persistentvolume/{v.pv} reclaim policy set to Retain")

    def _scale_down(self) -> None:
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

    def _delete_statefulset(self) -> None:
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

    def _evict(self, pod: str) -> None:
        ns = self.plan.namespace
        backup = self.workdir.load_backup("Pod", pod) if self.workdir.has_backup("Pod", pod) else None
        live = self.kube.get("Pod", pod, ns)
        if live is not None and backup is not None and live["metadata"]["uid"] != backup["metadata"]["uid"]:
            raise PermanentError(f"pod {ns}/{pod} was recreated by someone else while migrating; stop and inspect")
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
                    budget = self._orphan_budget(live)
                    if budget is not None and budget[0]:
                        self.kube.delete("Pod", pod, ns, uid=live["metadata"]["uid"])
                        self.say(f"pod/{pod} deleted ({budget[1]})")
                        break
                    if time.monotonic() > deadline:
                        raise TemporaryError(f"pod {ns}/{pod} cannot be evicted: {exc}") from exc
                    waited = time.monotonic()
                    time.sleep(1)  # the disruption budget allows it once the last pod is Ready
                    self.timing.waited += time.monotonic() - waited
        uid = live["metadata"]["uid"] if live else None
        self.wait(
            "Pod",
            p.gone(pod, None if uid is None else uid) if uid else p.gone(pod),
            f"pod {pod} to go",
            namespace=ns,
            field_selector=f"metadata.name={pod}",
        )

    def _orphan_budget(self, pod: Obj) -> tuple[bool, str] | None:
        """While the StatefulSet is deleted its pods have no controller, and the disruption
        controller cannot count them for a maxUnavailable or percentage budget: it reports
        expectedPods 0 and allows nothing. Then evaluate the budget here, against the
        StatefulSet's replica count, and say so. None: a budget the cluster did evaluate."""
        labels = pod["metadata"].get("labels", {})
        ready = sum(
            1
            for o in range(self.plan.replicas)
            if (other := self.kube.get("Pod", self.plan.pod_name(o), self.plan.namespace)) and p.is_pod_ready(other)
        )
        verdicts = []
        for pdb in self.kube.items("PodDisruptionBudget", self.plan.namespace):
            if not p.selector_matches(pdb["spec"].get("selector") or {}, labels):
                continue
            if pdb.get("status", {}).get("expectedPods", 0) != 0:
                return None
            allowed = budget_allows(pdb["spec"], self.plan.replicas, ready)
            verdicts.append((allowed, pdb["metadata"]["name"]))
        if not verdicts:
            return None
        names = ", ".join(n for _, n in verdicts)
        if all(a for a, _ in verdicts):
            return True, f"poddisruptionbudget {names} checked by csi-migrate: {ready}/{self.plan.replicas} Ready"
        return False, names

    def _wait_detached(self, v: VolumePlan) -> None:
        self.wait("VolumeAttachment", p.no_attachment(v.pv), f"volume {v.pv} to be detached")
        deadline = time.monotonic() + self.settings.timeout
        while vms := self._vcenter(lambda: self.vc.attached_vms(v.vmdk)):
            if time.monotonic() > deadline:
                raise TemporaryError(f"{v.vmdk} is still attached to {', '.join(vms)}")
            waited = time.monotonic()
            time.sleep(2)  # vCenter has no watch here; detach is rare at this point
            self.timing.waited += time.monotonic() - waited

    def _delete_pvc(self, v: VolumePlan) -> None:
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

    def _delete_pv(self, v: VolumePlan) -> Obj:
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

    def _wait_cns_release(self, v: VolumePlan) -> None:
        """Where the CSI driver keeps CnsVSphereVolumeMigration objects, wait until it has
        dropped the one for this disk: it unregisters the old volume from CNS, and a new
        registration made before that could be removed with it. Bounded: the syncer does this
        in the PV's delete event; past the bound it is down or missed the event, and a person
        must look (the message says where, and what is safe to do)."""
        if not self.kube.has_resource("CnsVSphereVolumeMigration"):
            return
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

    def _ensure_fcd(self, v: VolumePlan) -> Obj:
        """The disk's FCD id: the one the CSI driver recorded (checked against vCenter), else
        register_fcd, which reuses an existing FCD or registers the disk."""
        # Where preflight found the disk (recorded in the plan); a plan from an older release
        # has none, and the flag (or, as preflight did, every configured datacenter) is used.
        dc = v.datacenter or self.settings.datacenter
        hint = self._recorded_fcd(v.vmdk)
        if hint and self._vcenter(lambda: self.vc.fcd_file_path(hint, v.vmdk, dc)) == v.vmdk:
            self.say(f"disk {v.vmdk} is already first class disk {hint} (recorded by the CSI driver)")
            fcd_id = hint
        else:
            fcd_id = self._vcenter(lambda: self.vc.register_fcd(v.vmdk, v.pv, dc))
            self.say(f"disk {v.vmdk} is first class disk {fcd_id}")
        # A disk without keepAfterDeleteVm is deleted with a node VM it is attached to; the CSI
        # driver protects the disks it manages, and RegisterDisk (or a vCenter before 8.0u3)
        # does not set the flag.
        if not self._vcenter(lambda: self.vc.protect_fcd(fcd_id, v.vmdk, dc)):
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

    def _create_pv(self, v: VolumePlan, fcd_id: str) -> None:
        backup_pv = self.workdir.load_backup("PersistentVolume", v.pv)
        backup_pvc = self.workdir.load_backup("PersistentVolumeClaim", v.pvc)
        for other in self.kube.items("PersistentVolume"):
            spec = other.get("spec", {})
            names_disk = (
                translate.disk_key(spec.get("vsphereVolume", {}).get("volumePath", "")) == translate.disk_key(v.vmdk)
                or spec.get("csi", {}).get("volumeHandle") == fcd_id
            )
            if names_disk:
                if other["metadata"]["name"] == v.pv and translate.is_csi_vsphere_pv(other):
                    return  # created by an earlier attempt of this step
                raise PermanentError(
                    f"persistentvolume {other['metadata']['name']} still refers to {v.vmdk}; "
                    "refusing to create a second PV for the same disk"
                )
        new_pv = translate.csi_pv_from_intree(
            backup_pv, fcd_id, self.plan.csi_class, backup_pvc, self.plan.topology_keys
        )
        self.kube.create(new_pv)
        self.say(f"persistentvolume/{v.pv} created (csi.vsphere.vmware.com, volumeHandle {fcd_id})")

    def _create_pvc(self, v: VolumePlan, fcd_id: str) -> None:
        ns = self.plan.namespace
        live = self.kube.get("PersistentVolumeClaim", v.pvc, ns)
        if live is None:
            backup = self.workdir.load_backup("PersistentVolumeClaim", v.pvc)
            self.kube.create(translate.recreated_pvc(backup, v.pv, self.plan.csi_class))
            self.say(f"persistentvolumeclaim/{v.pvc} created ({self.plan.csi_class})")
        elif live["spec"].get("volumeName") != v.pv:
            raise PermanentError(f"persistentvolumeclaim {ns}/{v.pvc} exists but is not bound to {v.pv}")
        self.wait(
            "PersistentVolumeClaim",
            p.pvc_bound(v.pvc, v.pv),
            f"pvc {v.pvc} to be Bound",
            namespace=ns,
            field_selector=f"metadata.name={v.pvc}",
        )
        pvc = self.kube.get("PersistentVolumeClaim", v.pvc, ns)
        if pvc is not None:
            self._event("PersistentVolumeClaim", "v1", pvc, "MigratedToCSI", self._migrated_message(v, fcd_id))

    def _migrated_message(self, v: VolumePlan, fcd_id: str) -> str:
        return (
            f"kubectl csi-migrate moved persistentvolume {v.pv} from the in-tree vSphere plugin to "
            f"csi.vsphere.vmware.com (storageclass {self.plan.csi_class}): same disk {v.vmdk}, now first "
            f"class disk {fcd_id}; no data copied"
        )

    def _event(self, kind: str, api_version: str, obj: Obj, reason: str, message: str) -> None:
        """Record a Kubernetes Event, readable in `kubectl describe`. Best effort: a migration
        does not fail because an Event could not be written."""
        meta = obj["metadata"]
        now = _now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": api_version,
                "kind": kind,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": "Normal",
            "source": {"component": "kubectl-csi-migrate"},
            "reportingComponent": "kubectl-csi-migrate",
            "reportingInstance": socket.gethostname(),
            "firstTimestamp": now.split(".")[0] + "Z",
            "lastTimestamp": now.split(".")[0] + "Z",
            "count": 1,
        }
        try:
            self.kube.create(event)
        except CsiMigrateError as exc:
            self.say(f"warning: could not record event {reason} on {kind.lower()}/{meta['name']}: {exc}")

    def _recreate_pod(self, pod: str) -> None:
        ns = self.plan.namespace
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

    def _recreate_statefulset(self) -> None:
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
        uid = live["metadata"]["uid"]
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
        sts = self.kube.get("StatefulSet", name, ns)
        if sts is not None:
            for v in self.plan.to_migrate():
                fcd_id = self.done.get(f"fcd/{v.pv}", {}).get("fcd_id", "")
                self._event(
                    "StatefulSet", "apps/v1", sts, "MigratedToCSI", f"{v.pvc}: {self._migrated_message(v, fcd_id)}"
                )

    def _restore_reclaim_policy(self) -> None:
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

    # -- the lock --------------------------------------------------------------------------------

    # -- report ---------------------------------------------------------------------------------

    def report(self) -> Obj:
        wall = time.monotonic() - self.timing.started
        volumes = []
        for v in self.plan.volumes:
            entry: Obj = {
                "pvc": v.pvc,
                "template": v.template,
                "ordinal": v.ordinal,
                "oldPV": v.pv,
                "vmdk": v.vmdk,
                "result": "migrated" if v.action == "migrate" else v.action,
            }
            if v.action == "migrate":
                fcd = self.done.get(f"fcd/{v.pv}", {})
                entry.update(
                    {
                        "newPV": v.pv,
                        "fcdId": fcd.get("fcd_id", ""),
                        "keepAfterDeleteVm": bool(fcd.get("keep_after_delete_vm")),
                        "storageClass": self.plan.csi_class,
                    }
                )
                timing = self.volume_results.get(v.pv)
                if timing:
                    entry["seconds"] = round(timing["finished"] - timing["started"], 3)
            else:
                entry["fcdId"] = v.fcd_id
            volumes.append(entry)
        return {
            "apiVersion": "csi-migrate.kubectl.io/v1",
            "kind": "MigrationReport",
            "plan": self.plan.to_dict(),
            "volumes": volumes,
            "timing": {
                "wallSeconds": round(wall, 3),
                "waitSeconds": round(self.timing.waited, 3),
                "vcenterSeconds": round(self.timing.vcenter, 3),
                "toolSeconds": round(max(0.0, wall - self.timing.waited - self.timing.vcenter), 3),
            },
            "apiRequests": self.kube.requests,
            "workingDirectory": str(self.workdir.path),
        }


RETAIN_CLAIMS = {"whenDeleted": "Retain", "whenScaled": "Retain"}
# On the StatefulSet the tool recreates: the uid of the one it replaced. It tells the tool's own
# StatefulSet from one put back by someone else.
RECREATED_FROM = "csi-migrate.kubectl.io/recreated-from"


def budget_allows(spec: Obj, replicas: int, ready: int) -> bool:
    """Would a PodDisruptionBudget `spec` allow one more pod down, `ready` of `replicas` being
    Ready now? Percentages round up, as the disruption controller rounds them."""

    def count(value: Any) -> int:
        if isinstance(value, str) and value.endswith("%"):
            return -(-replicas * int(value[:-1]) // 100)
        return int(value)

    if "minAvailable" in spec:
        return ready - 1 >= count(spec["minAvailable"])
    if "maxUnavailable" in spec:
        return replicas - (ready - 1) <= count(spec["maxUnavailable"])
    return True


def describe_steps(plan: Plan) -> list[str]:
    """What a run of `plan` does, in order, one line per action (for --dry-run and the plan)."""
    ns, name = plan.namespace, plan.statefulset
    lines = ["back up the StatefulSet, its pods, PVCs and PVs to the working directory"]
    lines += [f"set persistentvolume/{v.pv} reclaim policy to Retain" for v in plan.to_migrate()]
    if plan.strategy == "offline":
        lines.append(f"scale statefulset.apps/{name} to 0 (the application is down from here)")
    lines.append(f"delete statefulset.apps/{name} with propagationPolicy Orphan (pods keep running)")
    for ordinal in plan.ordinals_descending():
        pod = plan.pod_name(ordinal)
        if plan.strategy == "rolling":
            lines.append(f"evict pod/{pod} and wait until its volumes are detached")
        for v in plan.to_migrate(ordinal):
            lines.append(f"delete persistentvolumeclaim/{v.pvc} and persistentvolume/{v.pv} (disk kept)")
            lines.append(f"register {v.vmdk} as a first class disk (or reuse its id)")
            lines.append(
                f"create persistentvolume/{v.pv} on {plan.csi_class} and persistentvolumeclaim/{v.pvc}, wait Bound"
            )
        if plan.strategy == "rolling":
            lines.append(f"recreate pod/{pod} and wait until Ready")
    lines.append(
        f"recreate statefulset.apps/{name} in {ns} with volumeClaimTemplates on {plan.csi_class}; "
        "wait until it owns every pod"
    )
    lines.append("restore each PV's original reclaim policy")
    return lines
