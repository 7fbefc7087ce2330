"""Where a run is: its phase, the last step done, each replica's progress, the lease holder and
the commands that resume it or roll it back. `summarize` is pure: built from the run's record (the
working directory's, or the cluster's when that is lost) and the Lease as read; `status_of` reads
them, and judges the Lease (another owner's is refused)."""

from __future__ import annotations

from typing import Any

from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration.kinds import may_have_run
from kubectl_csi_migrate.migration.owners import steps_for
from kubectl_csi_migrate.migration.plan import STATEFULSET, Plan, word
from kubectl_csi_migrate.migration.runrecord import RunRecord


def phase_of(run: Obj, steps: dict[str, Obj], lease_live: bool) -> str:
    if run.get("rolled_back"):
        return "rolled back"
    if run.get("rolling_back"):
        return "rolling back" if lease_live else "rollback stopped"
    if run.get("finished"):
        return "finished"
    if steps.get("backup", {}).get("event") != "done":
        return "not started (nothing changed)"
    return "migrating" if lease_live else "stopped"


def summarize(
    run: Obj,
    steps: dict[str, Obj],
    source: str,
    lease: Obj | None,
    lease_age: float | None,
    workdir: str,
    holder_alive: bool | None = None,
) -> Obj:
    """`steps`: step id -> its last event ({"event": ...}); `lease`: the run's Lease or None;
    `lease_age`: seconds since its last renewal by the API server's clock; `holder_alive`: whether
    the holding process runs, when it runs on this machine (None: elsewhere, judged by the age)."""
    plan = Plan.from_dict(run["plan"])
    ns, name = plan.namespace, plan.name
    all_steps = steps_for(plan)
    duration = float((lease or {}).get("spec", {}).get("leaseDurationSeconds") or 0)
    live = lease is not None and lease_age is not None and lease_age <= duration
    if lease is not None and holder_alive is not None:
        live = holder_alive
    phase = phase_of(run, steps, live)
    backwards = bool(run.get("rolling_back"))
    finished_event = "undone" if backwards else "done"
    last = None
    for step in all_steps:
        if steps.get(step.id, {}).get("event") == "done":
            last = step
    if backwards:
        undone = [s for s in all_steps if steps.get(s.id, {}).get("event") == "undone"]
        last = undone[0] if undone else last
    # The record in the cluster is written after some steps only: past its last step, some may
    # have run (the working directory records every step as it starts); a rollback undoes them
    # too, stopped and started again or not (kinds.steps_to_undo).
    maybe = set() if source == "working directory" else may_have_run(plan, steps)
    replicas = []
    for ordinal in plan.ordinals_descending():
        mine = [s for s in all_steps if s.ordinal == ordinal]
        if not mine:
            continue
        events = [steps.get(s.id, {}).get("event") for s in mine]
        count = sum(1 for e in events if e == finished_event)
        if backwards:
            pending = [
                s for s, e in zip(mine, events, strict=True) if e in ("start", "done", "undo-start") or s.id in maybe
            ]
            if not pending:
                state = "rolled back"
            elif any(e in ("undone", "undo-start") for e in events):
                state = "rolling back"
            else:
                state = "to roll back"
        elif count == len(mine):
            state = "done"
        elif any(e is not None for e in events):
            state = "in progress"
        elif any(s.id in maybe for s in mine):
            state = "may have started"
        else:
            state = "left"
        nxt = next((s.id for s, e in zip(mine, events, strict=True) if e != "done"), None)
        replicas.append(
            {"ordinal": ordinal, "pod": pod_label(plan, ordinal), "state": state, "stepsDone": f"{count}/{len(mine)}"}
            | ({"next": nxt} if state in ("in progress", "may have started") and nxt else {})
        )
    workdir_flag = f" --working-directory {workdir}"
    options = run.get("options") or {}
    resume = (
        f"kubectl csi-migrate {plan.command} -n {ns} --csi-storageclass {plan.csi_class}"
        + (" --strategy offline" if plan.strategy == "offline" and plan.kind.chooses_strategy else "")
        + (" --keep-retain" if options.get("keep_retain") else "")
        + workdir_flag
    )
    rollback = f"kubectl csi-migrate rollback {plan.arg} -n {ns}{workdir_flag}"
    commands: Obj = {}
    if phase in ("stopped", "migrating"):
        commands = {"resume": resume, "rollback": rollback}
    elif phase in ("rolling back", "rollback stopped", "finished"):
        commands = {"rollback": rollback}
    holder = (lease or {}).get("spec", {}).get("holderIdentity")
    return {
        "apiVersion": "csi-migrate.kubectl.io/v1",
        "kind": "MigrationStatus",
        "owner": {"kind": plan.kind, "namespace": ns, "name": name},
        **({"statefulset": {"namespace": ns, "name": name}} if plan.kind == STATEFULSET else {}),
        "phase": phase,
        "strategy": plan.strategy,
        "storageClass": plan.csi_class,
        "runId": run.get("run_id", ""),
        "source": source,
        "workingDirectory": workdir,
        "lastStep": last.id if last else None,
        "steps": {
            "total": len(all_steps),
            "done": sum(1 for s in all_steps if steps.get(s.id, {}).get("event") == "done"),
            "undone": sum(1 for s in all_steps if steps.get(s.id, {}).get("event") == "undone"),
        },
        "replicas": replicas,
        "mayHaveRun": [s.id for s in all_steps if s.id in maybe],
        "lease": None
        if lease is None
        else {
            "holder": holder,
            "secondsSinceRenewal": None if lease_age is None else round(lease_age),
            "live": live,
        },
        "commands": commands,
    }


def pod_label(plan: Plan, ordinal: int) -> str:
    """The pod a replica's steps stop: a StatefulSet's by ordinal, a claim's bare pod; a
    Deployment's pods all stop together (its row is the Deployment's)."""
    if plan.kind == STATEFULSET:
        return plan.pod_name(ordinal)
    return plan.pod or plan.ref


def owner_words(owner: Obj) -> str:
    return f"{word(owner['kind'])} {owner['namespace']}/{owner['name']}"


def render(status: Obj) -> str:
    s = status
    lines = [
        f"{owner_words(s['owner'])}: {s['phase']} "
        f"({s['strategy']}, to {s['storageClass']}); {s['steps']['done']}/{s['steps']['total']} steps done"
        + (f", {s['steps']['undone']} undone" if s["steps"]["undone"] else ""),
        f"record: {s['source']} ({s['workingDirectory']})",
        f"last step: {s['lastStep'] or '-'}",
    ]
    if s.get("mayHaveRun"):
        lines.append(
            f"may have run since: {', '.join(s['mayHaveRun'])} (the record in the cluster is written after "
            "some steps only; resuming or rolling back does them again or undoes them)"
        )
    lease = s["lease"]
    if lease is None:
        lines.append("lease: free (no run holds it)")
    else:
        age = lease["secondsSinceRenewal"]
        renewed = f"renewed {age if age is not None else '?'}s ago"
        if lease["live"]:
            lines.append(f"lease: held by {lease['holder']} ({renewed}): that run is running")
        else:
            lines.append(
                f"lease: left by {lease['holder']} ({renewed}), which is not running (stopped or killed); "
                "the next run of this record takes it over"
            )
    if s["replicas"]:
        width = max(len(r["pod"]) for r in s["replicas"])
        lines.append(f"{'REPLICA':<8} {'POD':<{width}} {'STATE':<16} STEPS")
        for r in s["replicas"]:
            extra = f" (next: {r['next']})" if r.get("next") else ""
            lines.append(f"{r['ordinal']:<8} {r['pod']:<{width}} {r['state']:<16} {r['stepsDone']}{extra}")
    if s["phase"] == "migrating" and s["commands"]:
        lines.append("that run is running: it finishes by itself; if it stops before the end:")
    for what, command in s["commands"].items():
        lines.append(f"{'to ' + what.replace('rollback', 'roll back') + ':':<13} {command}")
    return "\n".join(lines)


def status_of(
    kube: Any, ns: str, workdir: Any, found: RunRecord | None, record_name: str, from_workdir: bool | None = None
) -> dict[str, Any] | None:
    """The status of the run the working directory holds (`from_workdir`, by default when it holds
    one: the caller checked it is the owner's), else of the one `found` (its record, read from
    configmap `record_name`); None when there is neither. A Lease of the run's name that locks
    another owner is refused (KeyClash)."""
    from kubectl_csi_migrate.errors import KeyClash
    from kubectl_csi_migrate.kube.lock import owner_of_lease
    from kubectl_csi_migrate.migration.driver import lease_age
    from kubectl_csi_migrate.migration.plan import object_name

    if workdir.has_run() if from_workdir is None else from_workdir:
        run, steps, source = workdir.load_run(), workdir.steps(), "working directory"
    else:
        if found is None or found.run.plan.server != kube.info.server:
            return None
        run, steps = found.run.to_dict(), found.steps
        source = f"configmap/{record_name} in the cluster (the working directory is missing)"
    plan = Plan.from_dict(run["plan"])
    lease_name = object_name(plan.key)
    lease = kube.get("Lease", lease_name, ns)
    theirs = owner_of_lease(lease or {})
    if theirs and theirs != f"{plan.kind}/{plan.name}":
        raise KeyClash(f"lease {ns}/{lease_name} locks the runs of {theirs}, not of {plan.what}")
    age = lease_age(lease["spec"].get("renewTime", ""), kube.server_date) if lease else None
    holder = str((lease or {}).get("spec", {}).get("holderIdentity") or "")
    return summarize(run, steps, source, lease, age, str(workdir.path), _alive_here(holder))


def _alive_here(holder: str) -> bool | None:
    """Whether the process `<host>/<run id>/<pid>` runs, when this process can tell (host.alive)."""
    from kubectl_csi_migrate.host import alive

    host, _, rest = holder.partition("/")
    pid = rest.rpartition("/")[2]
    return alive(host, int(pid)) if pid.isdigit() else None


def every_status(kube: Any, ns: str) -> tuple[list[Obj], list[str]]:
    """The status of every run recorded in the namespace: each owner once (its record under its own
    key before an earlier release's), from its default working directory when that holds the run;
    and a warning for each run whose Lease locks another owner (left out)."""
    from kubectl_csi_migrate.errors import KeyClash
    from kubectl_csi_migrate.migration import locate
    from kubectl_csi_migrate.migration import record as cluster_record
    from kubectl_csi_migrate.migration.plan import object_name, run_key

    records: dict[tuple[str, str, str, str], tuple[str, Any]] = {}
    warnings = []
    for cm in kube.items("ConfigMap", ns, label_selector=cluster_record.LABEL):
        try:
            found = cluster_record.parse(cm)
        except KeyClash as exc:  # RecordTooNew: a later release's run, left out
            warnings.append(str(exc))
            continue
        if found is None:
            continue
        owner = found.run.owner
        name = cm["metadata"]["name"]
        if owner not in records or name == object_name(run_key(owner[2], owner[3])):
            records[owner] = (name, found)
    statuses = []
    for owner in sorted(records, key=lambda o: (o[2] != STATEFULSET, o[2], o[3])):
        server, _, kind, name = owner
        if server != kube.info.server:
            continue
        try:
            workdir = locate.default_workdir(kube.info.context, ns, kind, name, server)
            plan = locate.stored_plan(workdir)
            ours = plan is not None and plan.owner == owner  # else another owner's folder: the record says
            status = status_of(kube, ns, workdir, records[owner][1], records[owner][0], ours)
        except KeyClash as exc:
            warnings.append(str(exc))
            continue
        if status is not None:
            statuses.append(status)
    return statuses, warnings
