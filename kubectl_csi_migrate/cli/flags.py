"""The flags of the commands that migrate (sts, deploy, pvc, all and the compatibility commands)."""

from __future__ import annotations

import argparse

from kubectl_csi_migrate.cli import common
from kubectl_csi_migrate.cli.preflight import add_migration_flags


def add_flags(parser: argparse.ArgumentParser, statefulset: bool = True) -> None:
    add_migration_flags(parser, csi_required=True, statefulset=statefulset)
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.add_argument(
        "--dry-run", nargs="?", const="client", default="none", choices=("none", "client", "server"),
        help="client: print the plan and change nothing; server: also have the API server validate the first changes",
    )  # fmt: skip
    parser.add_argument(
        "--keep-retain", action="store_true",
        help="leave the new PVs on reclaim policy Retain instead of restoring the original",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=common.seconds, default=600.0, metavar="DURATION",
        help="longest wait for any one thing (a pod to stop, a claim to bind...), default 10m",
    )  # fmt: skip


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r} (a whole number from 1)")
    return int(text)
