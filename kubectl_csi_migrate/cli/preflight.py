"""`kubectl csi-migrate preflight [STS_NAME]`: every check for one StatefulSet, or a survey of
the namespace (-A: all namespaces). Read-only."""

from __future__ import annotations

import argparse
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
    from kubectl_csi_migrate.migration import app
    from kubectl_csi_migrate.migration.plan import STATEFULSET, parse_ref, ref, word

    arg = sts_name(args)
    kube = common.kube_from(args)
    if arg is None:
        return survey(args, kube)
    kind, name = parse_ref(arg)
    connect = common.vcenter_factory(args, kube)
    try:
        checks, plan = app.check(kube, request_of(args, kube, kind, name), connect)
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


def request_of(args: argparse.Namespace, kube: Any, kind: str, name: str) -> Any:
    """The application layer's request (migration/app.py) for one owner, from the flags."""
    from kubectl_csi_migrate.migration.app import Request

    return Request(
        kind=kind,
        name=name,
        namespace=common.namespace_of(args, kube),
        csi_storageclass=args.csi_storageclass,
        intree_storageclass=args.intree_storageclass,
        strategy=getattr(args, "strategy", None),
        working_directory=args.working_directory,
        datacenter=args.vsphere_datacenter,
        keep_retain=getattr(args, "keep_retain", False),
        timeout=getattr(args, "timeout", Request.timeout),
    )


def plan_for(args: argparse.Namespace, kube: Any, snap: Any) -> Any:
    """The plan for one gathered owner, from the flags, without the driver's topology keys (a
    survey, which creates no PV)."""
    from kubectl_csi_migrate.migration import app

    return app.plan_for(kube, snap, args.csi_storageclass, args.intree_storageclass, getattr(args, "strategy", None))


def survey(args: argparse.Namespace, kube: Any) -> int:
    from kubectl_csi_migrate.migration.owners import gather_all
    from kubectl_csi_migrate.migration.preflight import survey_row

    namespace = None if args.all_namespaces else common.namespace_of(args, kube)
    rows = []
    for snap in gather_all(kube, namespace):
        plan = plan_for(args, kube, snap)
        row = survey_row(snap, plan)
        if row["inTreeVolumes"]:
            rows.append(row)
    data = {"apiVersion": "csi-migrate.kubectl.io/v1", "kind": "PreflightSurvey", "items": rows}
    from kubectl_csi_migrate.migration.plan import OwnerKind, ref

    if rows:
        human = printers.table(
            ["NAMESPACE", "KIND", "NAME", "REPLICAS", "IN-TREE", "CSI", "MIGRATABLE", "COMMAND / PROBLEMS"],
            [
                (r["namespace"], OwnerKind(r["kind"]).command, r["name"], r["replicas"], r["inTreeVolumes"],
                 r["csiVolumes"], "yes" if r["migratable"] else "no",
                 f"{OwnerKind(r['kind']).command} {r['name']}" if r["migratable"] else "; ".join(r["problems"]) or "-")
                for r in rows
            ],
        )  # fmt: skip
    else:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        human = f"No StatefulSets, Deployments or claims with in-tree vSphere volumes in {where}."
    printers.render(data, args.output, human, [ref(r["kind"], r["name"]) for r in rows])
    return EXIT_OK
