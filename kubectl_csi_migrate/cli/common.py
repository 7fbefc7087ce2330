"""Flags shared by the commands, and turning them into clients (imported lazily)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubectl_csi_migrate.kube.client import Kube
    from kubectl_csi_migrate.vsphere.client import VCenter

OUTPUTS = ("json", "yaml", "name")


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster access (as kubectl)")
    group.add_argument(
        "--kubeconfig",
        help="path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)",
    )
    group.add_argument("--context", help="the kubeconfig context to use (default: the current context)")
    group.add_argument(
        "-n", "--namespace", "--sts-namespace", dest="namespace",
        help="the StatefulSet's namespace (default: the context's namespace)",
    )  # fmt: skip
    group.add_argument(
        "--cluster-name",
        help="GKE on VMware: the kubeconfig is the ADMIN cluster's; migrate in this USER cluster",
    )
    group.add_argument(
        "--user-kubeconfig-secret", metavar="NAMESPACE/NAME[:KEY]",
        help="with --cluster-name: the admin-cluster Secret holding the user cluster's kubeconfig",
    )  # fmt: skip
    group.add_argument(
        "--request-timeout", type=_seconds, default=None, metavar="DURATION",
        help="timeout of one API request, e.g. 30s or 1m (default 30s)",
    )  # fmt: skip
    group.add_argument(
        "-v",
        "--v",
        dest="verbosity",
        type=int,
        default=0,
        metavar="N",
        help="log verbosity (6: every API request)",
    )


def add_vsphere_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "vCenter access",
        "precedence: these flags, then --vsphere-config, then GOVC_* variables, then the vSphere "
        "CSI driver's Secret in the cluster (vmware-system-csi/vsphere-config-secret)",
    )
    group.add_argument("--vsphere-server", metavar="HOST", help="vCenter host name or address")
    group.add_argument("--vsphere-port", metavar="PORT", help="vCenter port (default 443)")
    group.add_argument("--vsphere-user", metavar="USER")
    group.add_argument(
        "--vsphere-password-file", metavar="FILE",
        help="read the vCenter password from FILE (a password is never taken on the command line)",
    )  # fmt: skip
    group.add_argument("--vsphere-config", metavar="FILE", help="a csi-vsphere.conf file (the CSI driver's format)")
    group.add_argument(
        "--vsphere-datacenter",
        metavar="DC",
        help="datacenter of the disks (default: from the configuration)",
    )
    group.add_argument("--vsphere-ca-file", metavar="FILE", help="CA bundle to verify vCenter's certificate")
    group.add_argument(
        "--vsphere-insecure", action="store_true", default=None,
        help="do not verify vCenter's TLS certificate",
    )  # fmt: skip
    group.add_argument(
        "--vsphere-timeout", type=_positive_seconds, default=30.0, metavar="DURATION",
        help="how long one vCenter call may go unanswered before vCenter is taken as unreachable, "
        "e.g. 30s (default 30s)",
    )  # fmt: skip


def add_owner_argument(parser: argparse.ArgumentParser, what: str = "a StatefulSet's name") -> None:
    """The optional owner a command names, as `preflight`, `status` and `rollback` take it."""
    parser.add_argument("name", nargs="?", metavar="NAME", help=f"{what}, or deploy/NAME, rs/NAME, pvc/NAME")


def add_output_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=OUTPUTS, help="json, yaml or name (default: human-readable)")


def _seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * units[suffix]
    if text.replace(".", "", 1).isdigit():
        return float(text)
    raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 30s, 2m)")


seconds = _seconds


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: more than 0 is needed (e.g. 30s)")
    return value


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity < 6 else logging.DEBUG
    logging.basicConfig(stream=sys.stderr, level=level, format="%(levelname).1s %(name)s%(thread_tag)s: %(message)s")

    def tag(record: logging.LogRecord) -> bool:
        # Lines of the threads beside the main one (the Lease's renewals, volumes moved at once)
        # name their thread, so that a request can be told from the step that made it.
        record.thread_tag = "" if record.threadName == "MainThread" else f" [{record.threadName}]"
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(tag)
    if verbosity < 9:
        # urllib3 warns on each connection retry and logs headers at debug: the one `error:`
        # line says what went wrong.
        logging.getLogger("urllib3").setLevel(logging.CRITICAL)


def kube_from(args: argparse.Namespace, dry_run: str = "none") -> Kube:
    from kubectl_csi_migrate.kube.access import Target, connect

    return connect(
        Target(
            kubeconfig=args.kubeconfig,
            context=args.context,
            cluster_name=args.cluster_name,
            user_kubeconfig_secret=args.user_kubeconfig_secret,
            dry_run=dry_run,
            request_timeout=args.request_timeout,
        )
    )


def namespace_of(args: argparse.Namespace, kube: Kube) -> str:
    return str(args.namespace or kube.info.namespace or "default")


def vcenter_factory(args: argparse.Namespace, kube: Kube) -> Callable[[], VCenter]:
    """A function that connects to vCenter when first needed (preflight reports failures)."""
    from kubectl_csi_migrate.kube.access import csi_vsphere_conf_loader
    from kubectl_csi_migrate.vsphere.client import VCenter
    from kubectl_csi_migrate.vsphere.credentials import resolve

    cache: dict[str, Any] = {}

    def connect() -> VCenter:
        if "vc" not in cache:
            flags = {
                "server": args.vsphere_server,
                "port": args.vsphere_port,
                "user": args.vsphere_user,
                "password": _read_password(args.vsphere_password_file),
                "insecure": args.vsphere_insecure,
                "ca_file": args.vsphere_ca_file,
                "datacenter": args.vsphere_datacenter,
            }
            config = resolve(flags, args.vsphere_config, os.environ, lambda: csi_vsphere_conf_loader(kube))
            cache["config"] = config
            cache["vc"] = VCenter.connect(config, timeout=getattr(args, "vsphere_timeout", 30.0))
        vc: VCenter = cache["vc"]
        return vc

    def close() -> None:
        """Log out of the session, if one was opened (a session left open stays on vCenter
        until its idle timeout, counting against its session limit)."""
        vc = cache.pop("vc", None)
        if vc is not None:
            vc.close()

    connect.cache = cache  # type: ignore[attr-defined]
    connect.close = close  # type: ignore[attr-defined]
    return connect


def _read_password(path: str | None) -> str | None:
    if not path:
        return None
    from kubectl_csi_migrate.errors import PermanentError

    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise PermanentError(f"cannot read --vsphere-password-file {path}: {exc.strerror}") from exc
