"""`kubectl csi-migrate sts NAME`, `deploy NAME`, `pvc NAME`: migrate the in-tree volumes of a
StatefulSet, of a Deployment (or ReplicaSet), or claims on their own; or resume a run."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kubectl_csi_migrate.cli import common, printers
from kubectl_csi_migrate.cli.flags import add_flags, positive
from kubectl_csi_migrate.cli.preflight import request_of, sts_name

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


# The commands that migrate: the kind of owner each names, its help, its argument's name.
OWNERS = (
    ("sts", "StatefulSet", "STS_NAME", "migrate a StatefulSet's in-tree vSphere volumes to the vSphere CSI driver",
     "Run preflight, show the plan, then move each in-tree vSphere volume of the StatefulSet to a CSI "
     "volume on the same disk (no data copied), one replica at a time (or --strategy offline)."),
    ("deploy", "Deployment", "NAME", "migrate the in-tree vSphere claims of a Deployment (or a ReplicaSet)",
     "Run preflight, show the plan, then scale the Deployment (or a ReplicaSet of its own) to 0, move each "
     "in-tree vSphere claim its pods mount to a CSI volume on the same disk (no data copied), and scale it "
     "back to its replica count: the application is down meanwhile, as the plan says."),
    ("pvc", "PersistentVolumeClaim", "NAME", "migrate in-tree vSphere claims on their own (a bare pod's, or unmounted)",
     "Run preflight, show the plan, then move the claim to a CSI volume on the same disk (no data copied). "
     "A bare pod mounting it is evicted first and created again from its backup; an unmounted claim needs "
     "no stop. A claim a controller's pods mount is refused: migrate its StatefulSet or Deployment."),
)  # fmt: skip


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    for command, kind, metavar, help_text, description in OWNERS:
        words = {"StatefulSet": "StatefulSets", "Deployment": "Deployments", "PersistentVolumeClaim": "claims"}[kind]
        parser = sub.add_parser(
            command,
            parents=parents,
            help=help_text,
            description=description + " Running the same command again with the same working directory resumes "
            "an interrupted run.",
        )
        parser.add_argument("names", nargs="*", metavar=metavar, help=f"one or more {words}")
        add_flags(parser, statefulset=kind == "StatefulSet")
        many = parser.add_argument_group(f"several {words}")
        many.add_argument("-l", "--selector", help=f"every {kind} with these labels (as kubectl -l)")
        many.add_argument(
            "--all", action="store_true", help=f"every {kind} in the namespace that has in-tree vSphere volumes"
            + (" (no controller's pods mounting it)" if kind == "PersistentVolumeClaim" else "")
        )  # fmt: skip
        many.add_argument("-A", "--all-namespaces", action="store_true", help="with --all or -l: in every namespace")
        many.add_argument(
            "-f", "--from-file", metavar="FILE",
            help="the owners listed in FILE ('-': standard input): the survey's JSON "
            "(`preflight -A -o json`: each row by its own command; rows it found not migratable are skipped), "
            f"or any JSON list of objects with a namespace and a name (taken as {words})",
        )  # fmt: skip
        many.add_argument(
            "--parallel", type=positive, default=1, metavar="N",
            help="migrate up to N owners at once (default 1); a StatefulSet keeps at most one replica down",
        )  # fmt: skip
        many.add_argument("--fail-fast", action="store_true", help="start no other owner once one failed")
        parser.set_defaults(run=run, confirm_needs_yes=True, parser=parser, kind=kind)


def run(args: argparse.Namespace) -> int:
    from kubectl_csi_migrate.errors import UsageError
    from kubectl_csi_migrate.migration.plan import STATEFULSET, OwnerKind

    kind = OwnerKind(getattr(args, "kind", STATEFULSET))
    command = {"StatefulSet": "sts", "Deployment": "deploy"}.get(kind, "pvc")
    words = {"StatefulSet": "StatefulSet", "Deployment": "Deployment"}.get(kind, "claim")
    # The compatibility commands (rolling-migration...) name one StatefulSet, in `name`.
    names = getattr(args, "names", None) or ([args.name] if getattr(args, "name", None) else [])
    defaults = (("selector", None), ("all", False), ("all_namespaces", False), ("parallel", 1), ("from_file", None))
    for flag, default in defaults:
        setattr(args, flag, getattr(args, flag, default))
    several = len(names) > 1 or bool(args.selector) or bool(args.all) or args.from_file is not None
    if sum(map(bool, (names, args.selector, args.all, args.from_file is not None))) > 1:
        raise UsageError(f"give {words} names, -l SELECTOR, --all or --from-file, not several of them")
    if args.all_namespaces and not (args.selector or args.all):
        raise UsageError("-A/--all-namespaces needs --all or -l SELECTOR")
    if several:
        if getattr(args, "sts_name", None):
            raise UsageError("--sts-name names one StatefulSet; give several as STS_NAME arguments")
        from kubectl_csi_migrate.cli import fleet

        return fleet.run_many(args, common.kube_from(args, dry_run=args.dry_run), args.parser)
    args.name = names[0] if names else None
    name = sts_name(args) if kind.bare_name else args.name
    if not name:
        flag = ", or --sts-name" if kind.bare_name else ""
        printers.error(f"a {words} name is required ({command} NAME{flag})")
        return EXIT_USAGE
    kube = common.kube_from(args, dry_run=args.dry_run)
    # One vCenter session for preflight and the run, logged out of however the command ends.
    connect = common.vcenter_factory(args, kube)
    try:
        return _run_one(args, kube, kind, name, connect)
    finally:
        connect.close()  # type: ignore[attr-defined]


def _run_one(args: argparse.Namespace, kube: Any, kind: str, name: str, connect: Any) -> int:
    from kubectl_csi_migrate.errors import KeyClash, NothingChanged
    from kubectl_csi_migrate.migration import app, kinds
    from kubectl_csi_migrate.migration.owners import describe_steps
    from kubectl_csi_migrate.migration.plan import OwnerKind, word

    command = {"StatefulSet": "sts", "Deployment": "deploy"}.get(kind, "pvc")
    request = request_of(args, kube, kind, name)
    structured = args.output is not None
    info = sys.stderr if structured else sys.stdout

    live = printers.LiveLine(sys.stderr) if sys.stderr.isatty() else None

    def say(line: str) -> None:
        if live:
            live.clear()
        info.write(line + ("" if args.dry_run == "none" else f" ({args.dry_run} dry run)") + "\n")
        info.flush()

    # The run's folder and record, checked to be this owner's (KeyClash: one `error:` line).
    prepared = app.prepare(kube, request, connect, say)
    plan, workdir = prepared.plan, prepared.workdir
    if prepared.failures or plan is None:
        for c in prepared.failures:
            printers.error(f"preflight: {c.name}: {c.message}")
        target = name if OwnerKind(prepared.kind).bare_name else f"{command}/{name}"
        printers.error(
            f"{word(prepared.kind)} {name} was not changed; "
            f"run `kubectl csi-migrate preflight {target}` for the full report"
        )
        return EXIT_FAILED
    for c in prepared.warnings:
        sys.stderr.write(f"warning: {c.name}: {c.message}\n")
    if not plan.to_migrate():
        say(f"{plan.what}: no in-tree vSphere volume to migrate; nothing to do")
        if structured:
            empty = {
                "apiVersion": "csi-migrate.kubectl.io/v1",
                "kind": "MigrationReport",
                "plan": plan.to_dict(),
                "volumes": [],
            }
            printers.render(empty, args.output, "", [])
        return EXIT_OK

    plan_text = render_plan(plan, str(workdir.path), prepared.resuming)
    if args.dry_run != "none":
        if args.dry_run == "server":
            kinds.check_on_server(kube, plan)
        data = {
            "apiVersion": "csi-migrate.kubectl.io/v1",
            "kind": "MigrationPlan",
            "plan": plan.to_dict(),
            "steps": describe_steps(plan),
        }
        human = plan_text + "\n" + "\n".join(f"  {i}. {s}" for i, s in enumerate(describe_steps(plan), 1))
        printers.render(data, args.output, human + f"\n({args.dry_run} dry run: nothing was changed)", [plan.ref])
        return EXIT_OK

    if not args.yes:
        refused = "not a terminal: pass --yes to migrate without confirmation (or --dry-run to see the plan)"
        if (code := printers.confirm(plan_text, refused if args.confirm_needs_yes else None)) is not None:
            return code
    elif not structured:
        say(plan_text)

    progress = None
    if live:

        def progress(line: str) -> None:
            say_progress = f"--- {line}\n"
            live.clear()
            sys.stderr.write(say_progress)

    vc = connect()  # a login that fails is one `error:` line: nothing was recorded yet
    try:
        report = app.execute(kube, vc, request, prepared, say, progress, live.waiting if live else None)
    except KeyboardInterrupt:
        printers.error(f"interrupted; the run is recorded in {workdir.path}: run the same command again to resume")
        return 130
    except (KeyClash, NothingChanged):
        raise  # the Lease is another owner's, or a budget's stayed another run's: no change, one line
    except Exception as exc:
        from kubectl_csi_migrate.errors import CsiMigrateError

        if isinstance(exc, (CsiMigrateError, OSError)):
            printers.error(str(exc))
            printers.error(
                f"the run is recorded in {workdir.path}; fix the problem and run the same command again to resume"
            )
            return EXIT_FAILED
        raise
    human = summary(report)
    names = []
    for v in report["volumes"]:
        if v["result"] == "migrated":
            names += [f"persistentvolume/{v['newPV']}", f"persistentvolumeclaim/{v['pvc']}"]
    printers.render(report, args.output, human, [*names, plan.ref])
    return EXIT_OK


def render_plan(plan: Any, workdir: str, resuming: bool) -> str:
    if plan.kind == "StatefulSet":
        mode = (
            "rolling: one replica at a time, the application stays up"
            if plan.strategy == "rolling"
            else "offline: scaled to zero, the application is DOWN during the migration"
        )
        owner = f"{plan.what} ({plan.replicas} replicas)"
    elif plan.kind == "PersistentVolumeClaim":
        mode = (
            f"pod/{plan.pod} is DOWN while the claim moves, then created again from its backup"
            if plan.pod
            else "no pod mounts it: nothing stops"
        )
        owner = plan.what
    else:
        mode = f"scaled to 0, then back to {plan.replicas}: the application is DOWN during the migration"
        owner = f"{plan.what} ({plan.replicas} replicas)"
    head = (
        f"{'Resuming' if resuming else 'Plan'}: {owner} to storageclass {plan.csi_class}, {mode}\n"
        f"working directory: {workdir}\n"
    )
    if plan.kind == "StatefulSet":
        rows = [(v.ordinal, v.pvc, v.pv, v.vmdk or v.fcd_id or "-", v.action) for v in plan.volumes]
        return head + printers.table(["ORDINAL", "PVC", "PV", "DISK", "ACTION"], rows)
    claims = [(v.pvc, v.pv, v.vmdk or v.fcd_id or "-", v.action) for v in plan.volumes]
    return head + printers.table(["PVC", "PV", "DISK", "ACTION"], claims)


def summary(report: dict[str, Any]) -> str:
    migrated = [v for v in report["volumes"] if v["result"] == "migrated"]
    skipped = [v for v in report["volumes"] if v["result"] != "migrated"]
    t = report["timing"]
    from kubectl_csi_migrate.migration.plan import Plan

    plan = report["plan"]
    return (
        f"{Plan.from_dict(plan).what}: {len(migrated)} volume(s) migrated to "
        f"{plan['csi_class']}, {len(skipped)} left alone, in {t['wallSeconds']:.1f}s "
        f"(waiting on the cluster {t['waitSeconds']:.1f}s, vCenter {t['vcenterSeconds']:.1f}s); "
        f"backups and report in {report['workingDirectory']}"
    )
