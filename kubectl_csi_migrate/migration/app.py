"""The application layer of `sts`, `deploy`, `pvc` and `preflight NAME`: a `Request` (what the
command line bound from its flags) is prepared here (which kind the name names, the run's folder
and record, a resume's options checked, or preflight and the plan) and then executed. `cli/` binds
flags, prompts through one helper and prints; it decides nothing of the run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kubectl_csi_migrate.errors import NotFoundError
from kubectl_csi_migrate.kube.client import Kube
from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration import locate, owners, preflight, translate
from kubectl_csi_migrate.migration import plan as plans
from kubectl_csi_migrate.migration.context import Settings
from kubectl_csi_migrate.migration.plan import Plan, Strategy
from kubectl_csi_migrate.migration.workdir import WorkDir


@dataclass(frozen=True)
class Request:
    """One owner to check or migrate, as its command names it."""

    kind: str
    """The owner kind the command names (OwnerKind): `deploy NAME` names a Deployment, which may
    turn out to be a ReplicaSet of its own (`prepare`)."""
    name: str
    namespace: str
    csi_storageclass: str
    intree_storageclass: str | None = None
    strategy: str | None = None
    """rolling or offline (a StatefulSet's); None: rolling, or, resuming, the run's own."""
    working_directory: str | None = None
    datacenter: str | None = None
    keep_retain: bool = False
    timeout: float = Settings.timeout

    def settings(self) -> Settings:
        return Settings(keep_retain=self.keep_retain, timeout=self.timeout, datacenter=self.datacenter)


def plan_for(
    kube: Kube, snap: Any, csi_class: str, intree_class: str | None, strategy: str | None, keys: tuple[str, ...] = ()
) -> Plan:
    """The plan for one gathered owner; `keys`: the CSI driver's topology keys (a survey, which
    creates no PV, passes none)."""
    return owners.build_plan(
        snap, kube.info.context, kube.info.server, csi_class, intree_class, strategy or Strategy.ROLLING, keys
    )


def check(
    kube: Kube, request: Request, connect: Callable[[], Any], workdir: WorkDir | None = None
) -> tuple[list[preflight.Check], Plan | None]:
    """Gather, plan and check one owner (vCenter through `connect`: the caller's session, which it
    logs out of); a missing one is a FAIL check. `workdir`: the run's working directory as the
    caller located it (default: the request's, else the owner's default folder; one holding
    another owner's run is the `working-directory` check's FAIL)."""
    snap, missing = None, ""
    # `deploy NAME`: a Deployment, else a ReplicaSet of that name.
    kind, ns = request.kind, request.namespace
    for candidate in (kind, plans.REPLICASET) if kind == plans.DEPLOYMENT else (kind,):
        try:
            snap = owners.gather(kube, ns, request.name, candidate)
            break
        except NotFoundError as exc:
            missing = missing or str(exc)
    if snap is None:
        return [preflight.Check(plans.word(kind), preflight.FAIL, missing)], None
    keys = translate.driver_topology_keys(kube.items_once("CSINode"))
    plan = plan_for(kube, snap, request.csi_storageclass, request.intree_storageclass, request.strategy, keys)
    if workdir is None:
        folder = request.working_directory
        server = kube.info.server
        workdir = (
            WorkDir(folder)
            if folder
            else locate.default_workdir(kube.info.context, ns, snap.kind, request.name, server)
        )
    return preflight.run_checks(kube, snap, plan, connect, workdir, request.intree_storageclass, request.datacenter)


@dataclass
class Prepared:
    """A request ready to run, or refused by preflight (`failures`)."""

    kind: str
    """The owner kind as resolved (a ReplicaSet for `deploy NAME` of a ReplicaSet of its own)."""
    workdir: WorkDir
    plan: Plan | None
    resuming: bool
    checks: list[preflight.Check] = field(default_factory=list)
    """Preflight's checks (none when resuming: the run's own record stands for them)."""

    @property
    def failures(self) -> list[preflight.Check]:
        return [c for c in self.checks if c.status == preflight.FAIL]

    @property
    def warnings(self) -> list[preflight.Check]:
        return [c for c in self.checks if c.status == preflight.WARN]


def prepare(kube: Kube, request: Request, connect: Callable[[], Any], say: Callable[[str], None]) -> Prepared:
    """Which kind the name names; the run's folder and record (KeyClash when they are another
    owner's; the folder rebuilt or caught up from the record in the cluster, said through `say`);
    then a resume of the recorded run (its options checked against the request's) or preflight
    and a new plan. Changes nothing in the cluster."""
    ns, name = request.namespace, request.name
    kind = locate.resolve_kind(kube, ns, request.kind, name, request.working_directory)
    found = locate.locate(kube, ns, kind, name, request.working_directory)
    workdir = found.workdir
    locate.rebuild(found, say, for_rollback=False)
    if workdir.backed_up() and workdir.problem((kube.info.server, ns, kind, name)) is None:
        run = workdir.run()
        locate.check_resume(workdir, run, request.csi_storageclass, request.strategy, request.keep_retain)
        return Prepared(kind, workdir, run.plan, resuming=True)
    checks, plan = check(kube, replace(request, kind=kind), connect, workdir)
    return Prepared(kind, workdir, plan, resuming=False, checks=checks)


def execute(
    kube: Kube,
    vcenter: Any,
    request: Request,
    prepared: Prepared,
    say: Callable[[str], None],
    progress: Callable[[str], None] | None = None,
    waiting: Any = None,
) -> Obj:
    """Run (or resume) the prepared migration: its report."""
    from kubectl_csi_migrate.migration.run import Migration

    if prepared.plan is None or prepared.failures:
        raise ValueError("internal error: a request preflight refused was executed")
    migration = Migration(kube, vcenter, prepared.plan, prepared.workdir, say, request.settings(), progress, waiting)
    return migration.run()


@dataclass
class PreparedRollback:
    """A rollback ready to run, or what stops it (`problem`, `rolled_back`, `rbac`)."""

    workdir: WorkDir
    plan: Plan | None = None
    to_undo: list[Any] = field(default_factory=list)
    """The steps to undo, last first (kinds.steps_to_undo)."""
    problem: str | None = None
    """Why the folder holds no run of this owner to roll back."""
    rolled_back: bool = False
    """The run was rolled back already: nothing to do."""
    rbac: preflight.Check | None = None
    """The RBAC check of what a rollback needs (checked by `check_rollback_access`)."""


def prepare_rollback(
    kube: Kube, kind: str, name: str, namespace: str, directory: str | None, say: Callable[[str], None]
) -> PreparedRollback:
    """The run's folder and record (KeyClash when another owner's; rebuilt or caught up from the
    record in the cluster), the run to roll back and the steps to undo. Changes nothing."""
    from kubectl_csi_migrate.migration import kinds

    found = locate.locate(kube, namespace, kind, name, directory)
    workdir = found.workdir
    locate.rebuild(found, say, for_rollback=True)
    problem = workdir.run_problem((kube.info.server, namespace, kind, name))
    if problem:
        return PreparedRollback(workdir, problem=problem)
    run = workdir.run()
    plan = run.plan
    if run.rolled_back:
        return PreparedRollback(workdir, plan, rolled_back=True)
    return PreparedRollback(workdir, plan, kinds.steps_to_undo(plan, workdir.steps()))


def check_rollback_access(kube: Kube, prepared: PreparedRollback) -> preflight.Check:
    """Whether the user may do every request a rollback of this owner kind may make (before any
    change, from the same table the run's requests follow)."""
    from kubectl_csi_migrate.migration import kinds

    assert prepared.plan is not None
    prepared.rbac = preflight.check_rbac(kube, prepared.plan.namespace, kinds.access_for(prepared.plan.kind))
    return prepared.rbac


def rollback(
    kube: Kube, prepared: PreparedRollback, timeout: float, say: Callable[[str], None], waiting: Any = None
) -> Obj:
    """Undo the prepared run's steps, last first: its rollback report."""
    from kubectl_csi_migrate.migration.run import Migration

    if prepared.plan is None or prepared.problem or prepared.rolled_back:
        raise ValueError("internal error: a rollback with nothing to roll back was run")
    migration = Migration(kube, None, prepared.plan, prepared.workdir, say, Settings(timeout=timeout), live=waiting)
    return migration.rollback()
