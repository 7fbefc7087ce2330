"""Executing a plan: each step of `steps_for(plan)` done in order (a run), or undone in reverse
(a rollback); both resumable.

Every step is recorded in the working directory before and after it runs, and is idempotent:
it looks at the live object first (by name and uid) and does only what is left. A run or a
rollback killed at any point is resumed by the same command. Invariants kept here:

1. nothing is mutated before every object is backed up (fsync'd);
2. every PV is Retain before any PVC or PV is deleted, forwards and backwards;
3. no VMDK or FCD is ever deleted, and no second PV is created for a disk another PV still names;
4. one run per owner (a Lease in its namespace, named by the run's key);
5. a PV created from a backup never carries a stale claim uid or a Delete policy while unbound.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from kubectl_csi_migrate.errors import (
    PermanentError,
    Stopping,
    VCenterSessionEnded,
)
from kubectl_csi_migrate.kube import predicates as p
from kubectl_csi_migrate.kube.cache import Cache, selector
from kubectl_csi_migrate.kube.client import Kube
from kubectl_csi_migrate.kube.lock import Lease
from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration import budget, events, report, workload
from kubectl_csi_migrate.migration.context import Settings
from kubectl_csi_migrate.migration.kinds import KINDS, steps_to_undo
from kubectl_csi_migrate.migration.owners import steps_for
from kubectl_csi_migrate.migration.plan import STATEFULSET, Plan, Strategy, VolumePlan, object_name
from kubectl_csi_migrate.migration.record import ClusterRecord, check_current
from kubectl_csi_migrate.migration.steps import Step, StepKind, step_id
from kubectl_csi_migrate.migration.workdir import WorkDir
from kubectl_csi_migrate.threads import wait_for

if TYPE_CHECKING:
    from kubectl_csi_migrate.vsphere.client import VCenter

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

OFFLINE_PARALLEL = 10
"""How many volumes an offline run moves at once. The CSI driver's syncer releases the disks one
after another (one lock per vCenter) and takes the same lock to register each new CSI PV: with
few volumes in flight, registrations come between the releases the run waits for; with ten, the
releases queue first (10 in-tree volumes with a real vCenter's latencies modelled: 28.7 s with 4
at once, 19.5 s with 10, against 18 s for the releases alone; `scripts/benchmark latency`). Ten
is also the external-attacher's default number of workers."""

STOP_CHECK_SECONDS = 1.0
"""A wait in a worker thread looks this often whether the run is stopping (Ctrl-C, a signal, or
another volume failed), so that a stop does not sit out `--timeout`: a wait on the run's caches
(pods, claims, PVs; no request of its own)."""
STOP_CHECK_WATCH_SECONDS = 5.0
"""The same for a wait on a watch of its own (a detach, the driver's release of a disk), which is
opened again (a list and a watch) that often."""

API_OUTAGE_SECONDS = 60.0
"""How long a run rides out an API server that refuses connections (a restart) before it stops."""


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
        self._vcenter_calls = threading.BoundedSemaphore(OFFLINE_PARALLEL)
        """vCenter calls side by side (offline: one per volume moved at once); pyVmomi's stub keeps
        a pool of connections, one per call in flight."""
        self._relogin = threading.Lock()
        self._sessions = 0
        """Logins again so far: a call that found the session ended logs in again only if no other
        call has since."""
        self.stopping = threading.Event()
        """Set when the run stops while worker threads move volumes: each stops before its next
        change and leaves any wait within STOP_CHECK_SECONDS."""
        self.done: dict[str, Obj] = {}
        self.run_id = ""
        self.record = ClusterRecord(kube, plan)
        self.pvs: Cache = kube.cache("PersistentVolume")
        """Every PV, for "does another PV name this disk?" (volumes.py): one list per run."""
        self.caches: dict[tuple[str, str | None], Cache] = {
            ("PersistentVolume", None): self.pvs,
            ("Pod", plan.namespace): kube.cache("Pod", plan.namespace),
            ("PersistentVolumeClaim", plan.namespace): kube.cache("PersistentVolumeClaim", plan.namespace),
        }
        """The kinds the run reads and waits on most, each listed once and followed by a watch: a
        wait on them (a pod gone or Ready, a claim Bound or gone) costs no request of its own."""

    # -- a run, a rollback --------------------------------------------------------------------

    def run(self) -> Obj:
        resuming = self.workdir.backed_up()
        if resuming:
            self.run_id = self.workdir.load_run()["run_id"]
            self.done = {k: v for k, v in self.workdir.steps().items() if v["event"] == "done"}
            self.say(f"resuming the run in {self.workdir.path} ({len(self.done)} steps already done)")
            self._scale_to_zero_again()
        else:
            self.run_id = uuid.uuid4().hex
        with self._locked(fresh=not resuming):
            if not resuming:  # nothing was changed yet: (re)start the record
                self.workdir.create(self.plan, self.run_id, {"keep_retain": self.settings.keep_retain})
            if self.plan.strategy == Strategy.OFFLINE:
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
            self.step(step)

    def _run_offline(self, steps: list[Step]) -> None:
        """Offline, every pod is down once the StatefulSet is gone: the volumes move at once,
        OFFLINE_PARALLEL at a time, each volume's steps in order. A failing volume stops the others
        before their next step; the first error is raised once every volume has stopped."""
        chains: dict[str, list[Step]] = {}
        for step in steps:
            if step.pv and step.ordinal is not None:  # a volume's own steps (not `retain`)
                chains.setdefault(step.pv, []).append(step)
        first = next((i for i, step in enumerate(steps) if step.pv in chains and step.ordinal is not None), len(steps))
        for step in steps[:first]:
            self.step(step)
        if chains:
            total = len(chains)

            def move(index: int, chain: list[Step]) -> report.Timing:
                self._local.timing = report.Timing()
                try:
                    if not self.stopping.is_set():
                        self.progress(f"volume {index}/{total}: {chain[0].pv}")
                    for step in chain:
                        if self.stopping.is_set():
                            break
                        self.step(step)
                except BaseException:
                    self.stopping.set()
                    raise
                finally:
                    timing, self._local.timing = self._local.timing, None
                    timing.ended, timing.worker = time.monotonic(), threading.current_thread().name
                return timing

            started = time.monotonic()
            pool = ThreadPoolExecutor(max_workers=OFFLINE_PARALLEL, thread_name_prefix="volume")
            futures: list[Any] = []
            try:
                for i, chain in enumerate(chains.values(), 1):
                    futures.append(pool.submit(move, i, chain))
                wait_for(futures, return_when=FIRST_EXCEPTION)
            finally:
                # A volume failed, or Ctrl-C, SIGTERM or SIGHUP (raised in this thread only): the
                # other workers stop before their next change, and the run ends (its Lease given
                # back) only once none is in flight: nothing changes after the run says it stopped.
                self._stop_workers(futures)
                pool.shutdown(wait=False)
            self._add_concurrent_timing(started, [f for f in futures if f.exception() is None])
            errors = [f.exception() for f in futures if f.exception() is not None]
            first_error = next((e for e in errors if not isinstance(e, Stopping)), errors[0] if errors else None)
            if first_error is not None:
                raise first_error
        for step in steps[first + sum(len(c) for c in chains.values()) :]:
            self.step(step)

    def _stop_workers(self, futures: list[Any]) -> None:
        """Unless every worker thread has ended: stop them and wait until none is in flight. A
        second Ctrl-C or signal meanwhile does not cut that wait short (a step half done by a
        thread nobody waits for would go on without the run's Lease)."""
        busy = [f for f in futures if not f.done()]
        if not busy:
            return
        self.stopping.set()
        with contextlib.suppress(Exception):  # a terminal gone (SIGHUP) must not cut this wait short
            self.say(
                f"stopping: waiting for the {len(busy)} volume(s) in flight to end their step "
                "(the same command resumes; a kill -9 now is safe too)"
            )
        while not all(f.done() for f in futures):
            try:
                wait_for(futures)
            except BaseException:  # a repeated interrupt: keep waiting
                continue

    def _add_concurrent_timing(self, started: float, futures: list[Any]) -> None:
        """Volumes moved side by side: the tool's own work is the busiest worker thread's (the sum
        of its volumes' own time, each from its start to its end: a volume waiting for a worker
        is not the tool's work), vCenter's the longest; the rest of the section's time went on
        waiting."""
        wall = time.monotonic() - started
        timings = [f.result() for f in futures]
        by_worker: dict[str, float] = {}
        for t in timings:
            by_worker[t.worker] = by_worker.get(t.worker, 0.0) + t.own(max(0.0, t.ended - t.started))
        own = max(by_worker.values(), default=0.0)
        vcenter = max((t.vcenter for t in timings), default=0.0)
        self.timing.vcenter += vcenter
        self.timing.waited += max(0.0, wall - own - vcenter)
        for t in timings:
            self.timing.volumes.update(t.volumes)
            for what, seconds in t.waits.items():
                self.timing.add_wait(what, seconds)

    def _stop_if_changed_elsewhere(self, step: Step) -> None:
        """Before each step of a run: the owner as the run left it? A StatefulSet put back by
        someone else once the run deleted it, or a Deployment or ReplicaSet scaled up while the
        run keeps it at 0: a GET each time, while the run has it so (a watch's view may be a
        moment old, and the step after it may be the one that cannot wait)."""
        plan = self.plan
        if plan.kind == STATEFULSET:
            if (
                step_id(StepKind.DELETE_STATEFULSET) in self.done
                and step_id(StepKind.RECREATE_STATEFULSET) not in self.done
            ):
                workload.stop_if_recreated_elsewhere(self, self.kube.get("StatefulSet", plan.name, plan.namespace))
        elif (
            step_id(StepKind.SCALE_TO_ZERO) in self.done
            and step_id(StepKind.SCALE_BACK) not in self.done
            and step.kind != StepKind.SCALE_BACK
        ):
            workload.stop_if_scaled_up(self)

    def _scale_to_zero_again(self) -> None:
        """A resumed run of a Deployment or ReplicaSet found scaled up again by someone else
        before the run scaled it back (workload.stop_if_scaled_up): its scale to 0 is done again."""
        if step_id(StepKind.SCALE_TO_ZERO) not in self.done or step_id(StepKind.SCALE_BACK) in self.workdir.steps():
            return  # not scaled down yet, or scaled back (or being) by this run
        live = self.kube.get(self.plan.kind, self.plan.name, self.plan.namespace)
        if live is not None and int(live["spec"].get("replicas", 1)) != 0:
            del self.done[step_id(StepKind.SCALE_TO_ZERO)]

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
                KINDS[step.kind].undo(self, step)
                self.workdir.record(step.id, "undone")
                self.record.save(self.workdir)
            result = report.build(
                self.plan, record, self.timing, self.kube.requests, str(self.workdir.path), "RollbackReport"
            )
            self.workdir.mark_rolled_back(result)
            self.record.save(self.workdir)
        return result

    @contextlib.contextmanager
    def _locked(self, fresh: bool = False) -> Iterator[None]:
        """The run's Lease held, then the Lease of each disruption budget covering a pod the run
        may take down (budget.py: waited for while another run holds one; `fresh`: nothing was
        changed yet), every change checked against them, API outages ridden out."""
        plan = self.plan
        owner = f"{plan.kind}/{plan.name}"
        lease = Lease(self.kube, plan.namespace, object_name(plan.key), self.run_id, self.say, owner=owner)
        lease.acquire(plan.what)

        def before_mutation() -> None:
            if self.stopping.is_set() and threading.current_thread() is not threading.main_thread():
                raise Stopping("the run is stopping; this volume stopped before its next change")
            lease.check()

        try:
            # A command elsewhere may have carried this run on (or begun a later one) between this
            # command's first look at the record (locate.rebuild caught the folder up then) and
            # the Lease: nothing is changed from a folder older than the record.
            if self.workdir.has_run():
                check_current(self.workdir, self.record.load_record(), self.record.name)
            budget.hold_leases(self, lease, fresh)
            self.kube.before_mutation = before_mutation
            self.kube.outage_seconds = API_OUTAGE_SECONDS
            yield
        finally:
            for cache in self.caches.values():
                cache.stop()
            self.kube.before_mutation = None
            self.kube.outage_seconds = 0.0
            for rider in reversed(lease.riders):
                rider.release()
            lease.release()

    # -- the step record ------------------------------------------------------------------------

    def step(self, step: Step) -> Obj:
        if step.id in self.done:
            return self.done[step.id]
        self._stop_if_changed_elsewhere(step)
        if step.kind == StepKind.DETACH:
            self.timing.volumes[step.pv] = (time.time(), time.time())
        self.workdir.record(step.id, "start")
        log.debug("step %s %s: do", step.kind, step.id)
        result = KINDS[step.kind].do(self, step) or {}
        self.workdir.record(step.id, "done", **result)
        self.done[step.id] = {"step": step.id, "event": "done", **result}
        if KINDS[step.kind].recorded_after:  # steps_to_undo allows for the lag
            self.record.save(self.workdir)
        if step.kind == StepKind.CREATE_PVC and step.pv in self.timing.volumes:
            self.timing.volumes[step.pv] = (self.timing.volumes[step.pv][0], time.time())
        return self.done[step.id]

    @property
    def vsphere(self) -> VCenter:
        """The vCenter client: a run has one; a rollback (which calls no vCenter) may not."""
        if self.vc is None:
            raise PermanentError("internal error: this step needs vCenter and the run has no connection")
        return self.vc

    def volume(self, step: Step) -> VolumePlan:
        return next(v for v in self.plan.volumes if v.pv == step.pv)

    # -- waiting ---------------------------------------------------------------------------------

    def wait(
        self,
        kind: str,
        predicate: p.Predicate,
        what: str,
        timeout: float | None = None,
        label: str | None = None,
        **selectors: Any,
    ) -> dict[str, Obj]:
        """Until `predicate` holds for the `kind` objects selected. A long wait says what it waits
        for every 30 s, and once half its time is gone, what to look at. Its time is added to the
        report's waits under `label` (default: the kind)."""
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

        cache = self.caches.get((kind, selectors.get("namespace")))
        select = selector(selectors.get("field_selector"), selectors.get("label_selector")) if cache else None
        every = WAIT_TICK
        if threading.current_thread() is not threading.main_thread():
            # A worker thread: signals reach the main thread only, which sets `stopping`; look
            # at it every STOP_CHECK_SECONDS (a server-side watch is opened again that often).
            every = STOP_CHECK_SECONDS if cache is not None and select is not None else STOP_CHECK_WATCH_SECONDS
            said = tick
            next_say = WAIT_TICK

            def tick(waited: float) -> None:
                nonlocal next_say
                if self.stopping.is_set():
                    raise Stopping(f"the run is stopping; it stopped waiting for {what}")
                if waited >= next_say:
                    next_say += WAIT_TICK
                    said(waited)

        try:
            with self.live(f"{what} ({limit:.0f}s at most)") if self.live else contextlib.nullcontext():
                if cache is not None and select is not None:
                    return cache.wait_until(predicate, what, limit, select, tick=tick, tick_every=every)
                return self.kube.watch_until(kind, predicate, what, limit, tick=tick, tick_every=every, **selectors)
        finally:
            self.timing.waited += time.monotonic() - started
            self.timing.add_wait(label or kind, time.monotonic() - started)

    def wait_gone(self, kind: str, name: str, uid: str | None, what: str, namespace: str | None = None) -> None:
        """Until the `kind` object `name` (of that uid, when given) is gone."""
        predicate = p.gone(name, uid) if uid else p.gone(name)
        self.wait(
            kind, predicate, what, namespace=namespace, label=f"{kind} gone", field_selector=f"metadata.name={name}"
        )

    def sleep(self, seconds: float) -> None:
        started = time.monotonic()
        if self.stopping.wait(seconds) and threading.current_thread() is not threading.main_thread():
            raise Stopping("the run is stopping")
        self.timing.waited += time.monotonic() - started
        self.timing.add_wait("pause", time.monotonic() - started)

    def vcenter(self, call: Callable[[], Any]) -> Any:
        """A vCenter call, timed; a session vCenter ended during a long wait (its idle timeout,
        a restart) is logged in again once and the call repeated (every call is idempotent)."""
        started = time.monotonic()
        try:
            with self._vcenter_calls:
                if self.stopping.is_set() and threading.current_thread() is not threading.main_thread():
                    raise Stopping("the run is stopping; this volume stopped before its next vCenter call")
                return self._vcenter_call(call)
        finally:
            self.timing.vcenter += time.monotonic() - started

    def _vcenter_call(self, call: Callable[[], Any]) -> Any:
        sessions = self._sessions
        try:
            return call()
        except VCenterSessionEnded:
            with self._relogin:
                if self._sessions == sessions:  # not logged in again by another volume meanwhile
                    self.vsphere.relogin()
                    self._sessions += 1
                    self.say("logged in to vCenter again (it had ended the session during the run)")
            return call()

    def event(self, kind: str, api_version: str, obj: Obj, reason: str, message: str) -> None:
        events.record(self.kube, self.say, kind, api_version, obj, reason, message)
