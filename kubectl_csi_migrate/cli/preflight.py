"""`kubectl csi-migrate preflight [STS_NAME]`: every check for one StatefulSet, or a survey of
the namespace (-A: all namespaces). Read-only."""

from __future__ import annotations

import argparse
from typing import Any

from kubectl_csi_migrate.cli import common, printers

EXIT_OK, EXIT_FAILED = 0, 1


def add_migration_flags(parser: argparse.ArgumentParser, csi_required: bool) -> None:
    group = parser.add_argument_group("migration")
    group.add_argument(
        "--csi-storageclass", required=csi_required, default=None if csi_required else "standard-rwo",
        help="the vSphere CSI StorageClass the volumes move to"
        + ("" if csi_required else " (default: standard-rwo, GKE on VMware's name)"),
    )  # fmt: skip
    group.add_argument(
        "--intree-storageclass",
        help="only migrate volumes of this in-tree class (default: every in-tree vSphere volume)",
    )
    group.add_argument(
        "--working-directory", metavar="DIR",
        help="where backups and the step record go (default: ./csi-migrate-<context>-<namespace>-<sts>)",
    )  # fmt: skip
    group.add_argument(
        "--strategy", choices=("rolling", "offline"), default="rolling",
        help="rolling: one replica at a time, no downtime (default); offline: scale to zero, faster",
    )  # fmt: skip
    group.add_argument(
        "--sts-name",
        metavar="STS_NAME",
        help="the StatefulSet (STS_NAME as Google's StatefulSet CSI migration tool spells it)",
    )


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "preflight",
        parents=parents,
        help="check a StatefulSet (or survey a namespace) without changing anything",
        description="With STS_NAME: run every check the migration needs and report PASS/WARN/FAIL. "
        "Without: list the StatefulSets that have in-tree vSphere volumes and whether each can be "
        "migrated. Exit 1 on any FAIL.",
    )
    parser.add_argument("name", nargs="?", metavar="STS_NAME", help="the StatefulSet to check")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="survey every namespace")
    add_migration_flags(parser, csi_required=False)
    parser.set_defaults(run=run)


def sts_name(args: argparse.Namespace) -> str | None:
    if args.name and args.sts_name and args.name != args.sts_name:
        from kubectl_csi_migrate.errors import UsageError

        raise UsageError(f"STS_NAME {args.name!r} and --sts-name {args.sts_name!r} disagree")
    return args.name or args.sts_name


def run(args: argparse.Namespace) -> int:
    name = sts_name(args)
    kube = common.kube_from(args)
    if name is None:
        return survey(args, kube)
    checks, plan = check_one(args, kube, name)
    from kubectl_csi_migrate.migration.preflight import failed

    report = {
        "apiVersion": "csi-migrate.kubectl.io/v1",
        "kind": "PreflightReport",
        "statefulset": {"namespace": common.namespace_of(args, kube), "name": name},
        "result": "FAIL" if failed(checks) else "PASS",
        "checks": [c.to_dict() for c in checks],
        "plan": plan.to_dict() if plan else None,
    }
    human = printers.table(["CHECK", "STATUS", "MESSAGE"], [(c.name, c.status, c.message) for c in checks])
    if failed(checks):
        human += f"\n\npreflight: {sum(c.status == 'FAIL' for c in checks)} blocking problem(s)"
    else:
        human += f"\n\npreflight: statefulset {name} can be migrated"
    printers.render(report, args.output, human, [f"statefulset.apps/{name}"])
    if failed(checks):
        printers.error(
            f"preflight failed for statefulset {name}: " + "; ".join(c.message for c in checks if c.status == "FAIL")
        )
        return EXIT_FAILED
    return EXIT_OK


def plan_for(args: argparse.Namespace, kube: Any, snap: Any, keys: tuple[str, ...] = ()) -> Any:
    """The plan for one StatefulSet; `keys`: the CSI driver's topology keys (a survey, which
    creates no PV, passes none)."""
    from kubectl_csi_migrate.migration.plan import build_plan

    return build_plan(
        snap, kube.info.context, kube.info.server, args.csi_storageclass, args.intree_storageclass, args.strategy, keys
    )


def check_one(args: argparse.Namespace, kube: Any, name: str) -> tuple[list[Any], Any]:
    """Gather, plan and check one StatefulSet; a missing StatefulSet is a FAIL check."""
    from kubectl_csi_migrate.errors import NotFoundError
    from kubectl_csi_migrate.migration import plan as plan_mod
    from kubectl_csi_migrate.migration import preflight, translate
    from kubectl_csi_migrate.migration.workdir import WorkDir, default_name

    ns = common.namespace_of(args, kube)
    try:
        snap = plan_mod.gather(kube, ns, name)
    except NotFoundError as exc:
        return [preflight.Check("statefulset", preflight.FAIL, str(exc))], None
    plan = plan_for(args, kube, snap, translate.driver_topology_keys(kube.items("CSINode")))
    workdir = WorkDir(args.working_directory or default_name(kube.info.context, ns, name))
    connect = common.vcenter_factory(args, kube)
    return preflight.run_checks(kube, snap, plan, connect, workdir, args.intree_storageclass, args.vsphere_datacenter)


def survey(args: argparse.Namespace, kube: Any) -> int:
    from kubectl_csi_migrate.migration import plan as plan_mod
    from kubectl_csi_migrate.migration.preflight import survey_row

    namespace = None if args.all_namespaces else common.namespace_of(args, kube)
    rows = []
    for snap in plan_mod.gather_all(kube, namespace):
        plan = plan_for(args, kube, snap)
        row = survey_row(snap, plan)
        if row["inTreeVolumes"]:
            rows.append(row)
    data = {"apiVersion": "csi-migrate.kubectl.io/v1", "kind": "PreflightSurvey", "items": rows}
    if rows:
        human = printers.table(
            ["NAMESPACE", "NAME", "REPLICAS", "IN-TREE", "CSI", "MIGRATABLE", "PROBLEMS"],
            [
                (r["namespace"], r["name"], r["replicas"], r["inTreeVolumes"], r["csiVolumes"],
                 "yes" if r["migratable"] else "no", "; ".join(r["problems"]) or "-")
                for r in rows
            ],
        )  # fmt: skip
    else:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        human = f"No StatefulSets with in-tree vSphere volumes in {where}."
    printers.render(data, args.output, human, [f"statefulset.apps/{r['name']}" for r in rows])
    return EXIT_OK
