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
        "directory, or from the run's record in the cluster (configmap csi-migrate-NAME, "
        "csi-migrate-deployment-NAME, csi-migrate-pvc-NAME) when the directory is lost. Without: "
        "every run recorded in the namespace. Changes nothing.",
    )
    common.add_owner_argument(parser)
    parser.add_argument("--sts-name", metavar="STS_NAME", help=argparse.SUPPRESS)
    parser.add_argument(
        "--working-directory", metavar="DIR",
        help="the run's working directory (default: ./csi-migrate-<context>-<namespace>-<sts>)",
    )  # fmt: skip
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from kubectl_csi_migrate.migration import record as cluster_record
    from kubectl_csi_migrate.migration.workdir import WorkDir, default_name

    kube = common.kube_from(args)
    ns = common.namespace_of(args, kube)
    from kubectl_csi_migrate.migration.plan import parse_ref, run_key

    arg = sts_name(args)
    name = run_key(*parse_ref(arg)) if arg else None
    if name:
        names = [name]
    else:
        found = kube.items("ConfigMap", ns, label_selector=cluster_record.LABEL)
        names = sorted(cm["metadata"]["labels"][cluster_record.LABEL] for cm in found)
    statuses = []
    for sts in names:
        workdir = WorkDir((args.working_directory if name else None) or default_name(kube.info.context, ns, sts))
        status = status_of(kube, ns, sts, workdir)
        if status is None:
            if name:
                kind, owner = parse_ref(arg or sts)
                word = {"PersistentVolumeClaim": "pvc"}.get(kind, kind.lower())
                printers.error(
                    f"no run of {word} {ns}/{owner} recorded in {workdir.path} or in the cluster "
                    f"(configmap/{cluster_record.name_of(sts)})"
                )
                return EXIT_FAILED
            continue
        statuses.append(status)
    if not name and not statuses:
        printers.render(
            {"apiVersion": "v1", "kind": "List", "items": []}, args.output, f"no run recorded in namespace {ns}", []
        )
        return EXIT_OK
    from kubectl_csi_migrate.migration.status import render

    if name:
        printers.render(statuses[0], args.output, render(statuses[0]), [_ref(statuses[0])])
    else:
        data = {"apiVersion": "v1", "kind": "List", "items": statuses}
        human = "\n\n".join(render(s) for s in statuses)
        printers.render(data, args.output, human, [_ref(s) for s in statuses])
    return EXIT_OK


def _ref(status: dict[str, Any]) -> str:
    from kubectl_csi_migrate.migration.plan import ref

    return ref(status["owner"]["kind"], status["owner"]["name"])


def status_of(kube: Any, ns: str, name: str, workdir: Any) -> dict[str, Any] | None:
    from kubectl_csi_migrate.migration import record as cluster_record
    from kubectl_csi_migrate.migration.preflight import _age
    from kubectl_csi_migrate.migration.status import summarize

    if workdir.has_run() and workdir.run_problem((kube.info.server, ns, name)) is None:
        run, steps, source = workdir.load_run(), workdir.steps(), "working directory"
    else:
        found = cluster_record.read(kube, ns, name)
        if not found or found["run"].get("plan", {}).get("server") != kube.info.server:
            return None
        run, steps = found["run"], found["steps"]
        source = f"configmap/{cluster_record.name_of(name)} in the cluster (the working directory is missing)"
    lease = kube.get("Lease", f"csi-migrate-{name}", ns)
    age = _age(lease["spec"].get("renewTime", ""), kube.server_date) if lease else None
    holder = str((lease or {}).get("spec", {}).get("holderIdentity") or "")
    return summarize(run, steps, source, lease, age, str(workdir.path), _alive_here(holder))


def _alive_here(holder: str) -> bool | None:
    """Whether the process `<host>/<run id>/<pid>` runs, when its host is this machine."""
    import os
    import socket

    host, _, pid = holder.rpartition("/")
    if not pid.isdigit() or host.split("/")[0] != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
