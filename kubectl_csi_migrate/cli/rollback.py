"""`kubectl csi-migrate rollback STS_NAME`: put a StatefulSet back on its in-tree volumes, from
wherever its run stopped or after it finished, undoing the steps done in reverse."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kubectl_csi_migrate.cli import common, printers
from kubectl_csi_migrate.cli.preflight import sts_name

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "rollback",
        parents=parents,
        help="put a StatefulSet (deploy/NAME, pvc/NAME) back on its in-tree volumes (undo a run)",
        description="Undo, last first, every step a run of `sts` started: the same disks, PV and "
        "PVC names, the StatefulSet with its original templates, pods recreated one at a time in "
        "the rolling case, the original reclaim policies restored last. Disks registered as first "
        "class disks stay registered (harmless: the in-tree PVs reach them by path). Reads the "
        "run's working directory (the same --working-directory rules as `sts`); running the same "
        "command again resumes an interrupted rollback.",
    )
    common.add_owner_argument(parser)
    parser.add_argument("--sts-name", metavar="STS_NAME", help=argparse.SUPPRESS)
    parser.add_argument(
        "--working-directory", metavar="DIR",
        help="the run's working directory (default: ./csi-migrate-<context>-<namespace>-<kind>-<name>)",
    )  # fmt: skip
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.add_argument(
        "--dry-run", nargs="?", const="client", default="none", choices=("none", "client"),
        help="print what would be undone, in order, and change nothing",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=common.seconds, default=600.0, metavar="DURATION",
        help="longest wait for any one thing (a pod to stop, a claim to bind...), default 10m",
    )  # fmt: skip
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from kubectl_csi_migrate.errors import KeyClash
    from kubectl_csi_migrate.migration import app, preflight
    from kubectl_csi_migrate.migration.plan import parse_ref

    arg = sts_name(args)
    if not arg:
        printers.error("a StatefulSet name is required (rollback NAME, or deploy/NAME, pvc/NAME)")
        return EXIT_USAGE
    kind, owner = parse_ref(arg)
    kube = common.kube_from(args)
    ns = common.namespace_of(args, kube)
    structured = args.output is not None
    info = sys.stderr if structured else sys.stdout

    live = printers.LiveLine(sys.stderr) if sys.stderr.isatty() else None

    def say(line: str) -> None:
        if live:
            live.clear()
        info.write(line + "\n")
        info.flush()

    # The run's folder and record, checked to be this owner's (KeyClash: one `error:` line).
    prepared = app.prepare_rollback(kube, kind, owner, ns, args.working_directory, say)
    workdir, plan, to_undo = prepared.workdir, prepared.plan, prepared.to_undo
    if prepared.problem or plan is None:
        printers.error(f"{prepared.problem}; nothing to roll back")
        return EXIT_FAILED
    if prepared.rolled_back:
        printers.error(f"the run in {workdir.path} was rolled back already; nothing to do")
        return EXIT_OK
    down = f": the application is DOWN until the {plan.kind} is back" if plan.strategy == "offline" else ""
    human_plan = (
        f"Rollback: {plan.what} back to its in-tree volumes, {len(to_undo)} step(s) to undo "
        f"({plan.strategy}{down})\n"
        f"working directory: {workdir.path}\n"
        + "\n".join(f"  {i}. {s.undoes}  [{s.id}]" for i, s in enumerate(to_undo, 1))
    )
    if args.dry_run != "none":
        data = {
            "apiVersion": "csi-migrate.kubectl.io/v1",
            "kind": "RollbackPlan",
            "plan": plan.to_dict(),
            "steps": [{"id": s.id, "undo": s.undoes} for s in to_undo],
        }
        printers.render(data, args.output, human_plan + "\n(client dry run: nothing was changed)", [])
        return EXIT_OK
    rbac = app.check_rollback_access(kube, prepared)
    if rbac.status == preflight.FAIL:
        printers.error(f"preflight: rbac: {rbac.message}")
        printers.error(f"{plan.what} was not changed")
        return EXIT_FAILED
    if not args.yes:
        refused = "not a terminal: pass --yes to roll back without confirmation (or --dry-run to see the steps)"
        if (code := printers.confirm(human_plan, refused)) is not None:
            return code
    elif not structured:
        info.write(human_plan + "\n")

    try:
        report = app.rollback(kube, prepared, args.timeout, say, live.waiting if live else None)
    except KeyboardInterrupt:
        printers.error(f"interrupted; run the same rollback command again to finish it ({workdir.path})")
        return 130
    except KeyClash:
        raise  # the Lease is another owner's: refused before any change, one line
    except Exception as exc:
        from kubectl_csi_migrate.errors import CsiMigrateError

        if isinstance(exc, (CsiMigrateError, OSError)):
            printers.error(str(exc))
            printers.error(
                f"the rollback is recorded in {workdir.path}; fix the problem and run the same rollback command again"
            )
            return EXIT_FAILED
        raise
    back = sum(1 for v in report["volumes"] if v["result"] == "rolled back")
    human = (
        f"{plan.what}: rolled back, {back} volume(s) on their in-tree PVs again, in "
        f"{report['timing']['wallSeconds']:.1f}s; record in {workdir.path}"
    )
    printers.render(report, args.output, human, [plan.ref])
    return EXIT_OK
