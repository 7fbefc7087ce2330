"""`kubectl csi-migrate status [STS_NAME]`: where a run is, from its working directory (or the
record in the cluster when that is lost) and its Lease. Read-only."""

from __future__ import annotations

import argparse
from typing import Any

from kubectl_csi_migrate.cli import common, printers
from kubectl_csi_migrate.cli.preflight import sts_name

EXIT_OK, EXIT_FAILED = 0, 1


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "status",
        parents=parents,
        help="show where a migration (or rollback) of a StatefulSet, Deployment or claim is, and how to resume it",
        description="With NAME (deploy/NAME, pvc/NAME): the run's phase, last step, each replica's "
        "progress, the lease holder and the commands to resume or roll back, read from the working "
        "directory, or from the run's record in the cluster (configmap csi-migrate-statefulset-NAME, "
        "csi-migrate-deployment-NAME, csi-migrate-pvc-NAME) when the directory is lost. Without: "
        "every run recorded in the namespace. Changes nothing.",
    )
    common.add_owner_argument(parser)
    parser.add_argument("--sts-name", metavar="STS_NAME", help=argparse.SUPPRESS)
    parser.add_argument(
        "--working-directory", metavar="DIR",
        help="the run's working directory (default: ./csi-migrate-<context>-<namespace>-<kind>-<name>)",
    )  # fmt: skip
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from kubectl_csi_migrate.migration import locate
    from kubectl_csi_migrate.migration.plan import legacy_key, parse_ref, run_key, word
    from kubectl_csi_migrate.migration.record import name_of
    from kubectl_csi_migrate.migration.status import status_of

    kube = common.kube_from(args)
    ns = common.namespace_of(args, kube)
    arg = sts_name(args)
    if not arg:
        return _every_run(args, kube, ns)
    kind, owner = parse_ref(arg)
    # The run's folder and record, checked to be this owner's (KeyClash: one `error:` line).
    found = locate.locate(kube, ns, kind, owner, args.working_directory, writes=False)
    status = status_of(kube, ns, found.workdir, found.record, found.record_name)
    if status is None:
        names = [name_of(k) for k in dict.fromkeys((run_key(kind, owner), legacy_key(kind, owner))) if k]
        printers.error(
            f"no run of {word(kind)} {ns}/{owner} recorded in {found.workdir.path} or in the cluster "
            f"({' or '.join('configmap/' + n for n in names)})"
        )
        return EXIT_FAILED
    from kubectl_csi_migrate.migration.status import render

    printers.render(status, args.output, render(status), [_ref(status)])
    return EXIT_OK


def _every_run(args: argparse.Namespace, kube: Any, ns: str) -> int:
    """Every run recorded in the namespace (migration/status.py: every_status)."""
    import sys

    from kubectl_csi_migrate.migration.status import every_status, render

    statuses, warnings = every_status(kube, ns)
    for warning in warnings:
        sys.stderr.write(f"warning: {warning}\n")
    if not statuses:
        printers.render(
            {"apiVersion": "v1", "kind": "List", "items": []}, args.output, f"no run recorded in namespace {ns}", []
        )
        return EXIT_OK
    data = {"apiVersion": "v1", "kind": "List", "items": statuses}
    human = "\n\n".join(render(s) for s in statuses)
    printers.render(data, args.output, human, [_ref(s) for s in statuses])
    return EXIT_OK


def _ref(status: dict[str, Any]) -> str:
    from kubectl_csi_migrate.migration.plan import ref

    return ref(status["owner"]["kind"], status["owner"]["name"])
