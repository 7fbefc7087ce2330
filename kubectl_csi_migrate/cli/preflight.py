"""`kubectl csi-migrate preflight [STS_NAME]`: every check for one StatefulSet, or a survey of
the namespace (-A: all namespaces). Read-only."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from kubectl_csi_migrate.cli import common, printers

EXIT_OK, EXIT_FAILED = 0, 1


def add_migration_flags(parser: argparse.ArgumentParser, csi_required: bool, statefulset: bool = True) -> None:
    """The flags every command that plans a migration takes; `statefulset`: with --strategy and
    --sts-name (a Deployment always stops whole, a claim's pod is stopped while it moves)."""
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
        help="where backups and the step record go (default: ./csi-migrate-<context>-<namespace>-<kind>-<name>, "
        "e.g. ...-statefulset-web, ...-deployment-api, ...-pvc-data)",
    )  # fmt: skip
    if not statefulset:
        return
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
        help="check a StatefulSet, Deployment or claim (or survey a namespace) without changing anything",
        description="With NAME (a StatefulSet; deploy/NAME, rs/NAME, pvc/NAME for the others): run "
        "every check the migration needs and report PASS/WARN/FAIL. Without: list every owner of "
        "in-tree vSphere volumes (StatefulSets, Deployments and ReplicaSets, claims no controller "
        "mounts), whether each can be migrated, and the command that would. Exit 1 on any FAIL.",
    )
    common.add_owner_argument(parser, "the StatefulSet to check")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="survey every namespace")
    add_migration_flags(parser, csi_required=False)
    parser.set_defaults(run=run)


def sts_name(args: argparse.Namespace) -> str | None:
    if args.name and args.sts_name and args.name != args.sts_name:
        from kubectl_csi_migrate.errors import UsageError

        raise UsageError(f"STS_NAME {args.name!r} and --sts-name {args.sts_name!r} disagree")
    return args.name or args.sts_name


def run(args: argparse.Namespace) -> int:
    from kubectl_csi_migrate.migration.plan import STATEFULSET, parse_ref, ref, word

    arg = sts_name(args)
    kube = common.kube_from(args)
    if arg is None:
        return survey(args, kube)
    kind, name = parse_ref(arg)
    connect = common.vcenter_factory(args, kube)
    try:
        checks, plan = check_one(args, kube, name, kind, connect)
    finally:
        connect.close()  # type: ignore[attr-defined]
    from kubectl_csi_migrate.migration.preflight import failed

    where = {"namespace": common.namespace_of(args, kube), "name": name}
    report = {
        "apiVersion": "csi-migrate.kubectl.io/v1",
        "kind": "PreflightReport",
        "owner": {"kind": kind, **where},
        **({"statefulset": where} if kind == STATEFULSET else {}),
        "result": "FAIL" if failed(checks) else "PASS",
        "checks": [c.to_dict() for c in checks],
        "plan": plan.to_dict() if plan else None,
    }
    human = printers.table(["CHECK", "STATUS", "MESSAGE"], [(c.name, c.status, c.message) for c in checks])
    if failed(checks):
        human += f"\n\npreflight: {sum(c.status == 'FAIL' for c in checks)} blocking problem(s)"
    else:
        human += f"\n\npreflight: {word(kind)} {name} can be migrated"
    printers.render(report, args.output, human, [ref(kind, name)])
    if failed(checks):
        printers.error(
            f"preflight failed for {word(kind)} {name}: " + "; ".join(c.message for c in checks if c.status == "FAIL")
        )
        return EXIT_FAILED
    return EXIT_OK


def plan_for(args: argparse.Namespace, kube: Any, snap: Any, keys: tuple[str, ...] = ()) -> Any:
    """The plan for one StatefulSet; `keys`: the CSI driver's topology keys (a survey, which
    creates no PV, passes none)."""
    from kubectl_csi_migrate.migration.plan import build_plan

    strategy = getattr(args, "strategy", None) or "rolling"
    return build_plan(
        snap, kube.info.context, kube.info.server, args.csi_storageclass, args.intree_storageclass, strategy, keys
    )


def check_one(
    args: argparse.Namespace, kube: Any, name: str, kind: str, connect: Callable[[], Any], workdir: Any = None
) -> tuple[list[Any], Any]:
    """Gather, plan and check one owner (vCenter through `connect`: the caller's session, which
    it logs out of); a missing one is a FAIL check. `workdir`: the run's working directory as the
    caller located it (default: --working-directory, else the owner's default folder; one holding
    another owner's run is the `working-directory` check's FAIL)."""
    from kubectl_csi_migrate.errors import NotFoundError
    from kubectl_csi_migrate.migration import plan as plan_mod
    from kubectl_csi_migrate.migration import preflight, translate
    from kubectl_csi_migrate.migration.locate import default_workdir
    from kubectl_csi_migrate.migration.workdir import WorkDir

    ns = common.namespace_of(args, kube)
    snap, missing = None, ""
    # `deploy NAME`: a Deployment, else a ReplicaSet of that name.
    for candidate in (kind, plan_mod.REPLICASET) if kind == plan_mod.DEPLOYMENT else (kind,):
        try:
            snap = plan_mod.gather(kube, ns, name, candidate)
            break
        except NotFoundError as exc:
            missing = missing or str(exc)
    if snap is None:
        return [preflight.Check(plan_mod.word(kind), preflight.FAIL, missing)], None
    plan = plan_for(args, kube, snap, translate.driver_topology_keys(kube.items_once("CSINode")))
    if workdir is None:
        server = kube.info.server
        folder = args.working_directory
        workdir = WorkDir(folder) if folder else default_workdir(kube.info.context, ns, snap.kind, name, server)
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
    from kubectl_csi_migrate.migration.plan import COMMAND, ref

    if rows:
        human = printers.table(
            ["NAMESPACE", "KIND", "NAME", "REPLICAS", "IN-TREE", "CSI", "MIGRATABLE", "COMMAND / PROBLEMS"],
            [
                (r["namespace"], COMMAND[r["kind"]], r["name"], r["replicas"], r["inTreeVolumes"], r["csiVolumes"],
                 "yes" if r["migratable"] else "no",
                 f"{COMMAND[r['kind']]} {r['name']}" if r["migratable"] else "; ".join(r["problems"]) or "-")
                for r in rows
            ],
        )  # fmt: skip
    else:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        human = f"No StatefulSets, Deployments or claims with in-tree vSphere volumes in {where}."
    printers.render(data, args.output, human, [ref(r["kind"], r["name"]) for r in rows])
    return EXIT_OK
