"""Where the run of one owner is: its working directory and its record in the cluster, found by
the run's key and checked to be that owner's run.

A run is named by its key (plan.run_key, `<kind>-<name>`): its Lease and its record
`csi-migrate-<key>` in the owner's namespace, its default working directory
`csi-migrate-<context>-<namespace>-<key>`. An earlier release keyed a StatefulSet's run by its
bare name (plan.legacy_key), which may be another owner's key (StatefulSet `deployment-web`'s is
Deployment `web`'s): such a run is still found, resumed, reported and rolled back, but only where
the plan it stores names this StatefulSet. What is found under the key a command will use and
holds another owner's run is refused (KeyClash) before anything changes: sharing it would mix the
two runs. The Lease is checked when it is taken (kube/lock.py: its owner annotation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubectl_csi_migrate.errors import KeyClash
from kubectl_csi_migrate.kube.client import Kube
from kubectl_csi_migrate.migration import record
from kubectl_csi_migrate.migration.plan import Plan, legacy_key, run_key, word
from kubectl_csi_migrate.migration.runrecord import Run, RunRecord
from kubectl_csi_migrate.migration.workdir import WorkDir, default_name

NOTHING_CHANGED = "; nothing was changed"


@dataclass
class Found:
    workdir: WorkDir
    """The working directory: the one given, or the owner's default (default_workdir)."""
    record: RunRecord | None
    """The record in the cluster of this owner's last run on this server (record.read), if any."""
    record_name: str
    """The ConfigMap the record was read from, or that a new run of the owner writes."""


def stored_plan(workdir: WorkDir) -> Plan | None:
    """The plan of the run a folder holds; None when it holds none (or an unreadable one)."""
    try:
        return workdir.plan()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def default_workdir(
    context: str, namespace: str, kind: str, name: str, server: str, base: str | Path | None = None
) -> WorkDir:
    """The owner's default working directory (in `base`, else the current folder): named by its
    key, or an earlier release's folder (a StatefulSet's bare name) when that one holds this
    owner's run and the first holds none."""

    def at(key: str) -> WorkDir:
        folder = default_name(context, namespace, key)
        return WorkDir(Path(base) / folder if base else folder)

    mine = at(run_key(kind, name))
    old = legacy_key(kind, name)
    if old is not None and not mine.has_run():
        earlier = at(old)
        plan = stored_plan(earlier)
        if plan is not None and plan.owner == (server, namespace, kind, name):
            return earlier
    return mine


def locate(kube: Kube, namespace: str, kind: str, name: str, directory: str | None, writes: bool = True) -> Found:
    """The working directory (`directory`, else the default) and the record of the run of the
    owner `kind`/`name`. Raises KeyClash when the folder, or the record under the key this
    command would use, holds another owner's run. A command that `writes` no record (status)
    reads none when the folder holds the run."""
    server = kube.info.server
    owner = (server, namespace, kind, name)
    what = f"{word(kind)} {namespace}/{name}"
    context = kube.info.context
    workdir = WorkDir(directory) if directory else default_workdir(context, namespace, kind, name, server)
    plan = stored_plan(workdir)
    if plan is not None and plan.owner != owner:
        hint = "choose another --working-directory" if directory else "pass --working-directory with another folder"
        raise KeyClash(f"{workdir.not_owner(plan, owner)}: {hint}{NOTHING_CHANGED}")
    # A run recorded in the folder keeps its key; a new one (or one started again from scratch)
    # takes the owner's.
    key = plan.key if plan is not None and workdir.backed_up() else run_key(kind, name)
    if plan is not None and not writes:
        return Found(workdir, None, record.name_of(key))
    found = record.read(kube, namespace, key)  # None too where its ConfigMap holds no run
    if found is not None:
        theirs = record.owner_of(found)
        if theirs[1:] != owner[1:]:
            raise KeyClash(_clash(found, record.name_of(key), what, namespace))
        if theirs[0] != server:
            found = None  # this owner's, as another address of the cluster named it: not resumed
    old = legacy_key(kind, name)
    if found is None and plan is None and old is not None:
        earlier = record.read(kube, namespace, old)
        if earlier is not None and record.owner_of(earlier) == owner:
            return Found(workdir, earlier, record.name_of(old))
    return Found(workdir, found, record.name_of(key))


def _clash(found: RunRecord, name: str, what: str, namespace: str) -> str:
    """Why another owner's record under this owner's key refuses the command, and what to do."""
    run = found.run
    other = run.plan
    delete = f"`kubectl -n {namespace} delete configmap {name}` once it is no longer needed"
    if run.rolled_back:
        advice = f"that run was rolled back: delete its record ({delete})"
    elif run.finished:
        advice = f"that run finished (its rollback reads this record or its working directory): {delete}"
    else:
        advice = f"finish or roll back that run first (`kubectl csi-migrate rollback {other.arg} -n {namespace}`)"
    return f"configmap/{name} holds the record of the run of {other.what}, not of {what}: {advice}{NOTHING_CHANGED}"


def rebuild(found: Found, say: Any, for_rollback: bool) -> bool:
    """When the working directory holds no run, and the cluster holds the record of an unfinished
    run of this owner (a finished one too, for a rollback): write the working directory again from
    that record and say so. True when it did. When the folder holds the run and the record is
    further on (the run carried on or rolled back from elsewhere): bring the folder up to it and
    say so; when the record is of a later run: OutOfDate (record.ahead), nothing changed."""
    workdir, found_record = found.workdir, found.record
    if found_record is None:
        return False
    if workdir.has_run():
        plan = stored_plan(workdir)
        if plan is not None and plan.owner == record.owner_of(found_record):
            taken = record.catch_up(workdir, found_record, found.record_name)
            if taken:
                say(
                    f"the working directory {workdir.path} lagged the run's record in the cluster "
                    f"(configmap/{found.record_name}: {taken}): brought it up to date from there"
                )
        return False
    run = found_record.run
    if run.rolled_back or (run.finished and not for_rollback):
        return False
    if workdir.problem(record.owner_of(found_record)) is not None:
        return False  # a folder that is not ours to write: the usual checks say why
    record.rebuild(workdir, found_record)
    say(
        f"the working directory {workdir.path} held no record of this run: rebuilt it from "
        f"configmap/{found.record_name} (the run's record in the cluster)"
    )
    return True


def resolve_kind(kube: Kube, namespace: str, kind: str, name: str, directory: str | None) -> str:
    """The kind of owner `name` is: `deploy NAME` also takes a ReplicaSet of its own (no
    Deployment of that name), whose run is keyed by that kind, whether or not a working directory
    is given (the fleet and the printed resume commands give one): the live ReplicaSet, else the
    run the working directory holds, else the record in the cluster of a ReplicaSet's run."""
    if kind != "Deployment" or kube.get("Deployment", name, namespace) is not None:
        return kind
    folder = WorkDir(directory) if directory else None
    if kube.get("ReplicaSet", name, namespace) is not None:
        return "ReplicaSet"
    if folder is not None and folder.backed_up():
        planned = folder.run().plan
        return (
            "ReplicaSet" if (planned.kind, planned.namespace, planned.name) == ("ReplicaSet", namespace, name) else kind
        )
    earlier = record.read(kube, namespace, run_key("ReplicaSet", name))
    if earlier is not None and record.owner_of(earlier)[1:] == (namespace, "ReplicaSet", name):
        return "ReplicaSet"
    return kind


def check_resume(workdir: WorkDir, run: Run, csi_class: str, strategy: str | None, keep_retain: bool) -> None:
    """A run resumed from `workdir` goes on as it started: the same CSI class, strategy and
    --keep-retain (UsageError otherwise, nothing changed)."""
    from kubectl_csi_migrate.errors import UsageError

    plan = run.plan
    recorded = (plan.csi_class, plan.strategy, run.keep_retain)
    if recorded != (csi_class, strategy or plan.strategy, keep_retain):
        strategy_flag = ", --strategy" if plan.kind.chooses_strategy else ""
        raise UsageError(
            f"the unfinished run in {workdir.path} migrates to {plan.csi_class} ({plan.strategy}"
            f"{', --keep-retain' if recorded[2] else ''}); resume it with the same --csi-storageclass"
            f"{strategy_flag} and --keep-retain, or choose another --working-directory"
        )
