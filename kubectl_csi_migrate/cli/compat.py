"""The spellings of Google's StatefulSet CSI migration tool, so its users can switch without relearning:

    preflight --kubeconfig K --cluster-name U --sts-name S --sts-namespace N
              --intree-storageclass A --csi-storageclass B
    rolling-migration all ... --working-directory D
    migration-with-downtime ...            (the offline strategy)

`preflight` accepts those flags directly (see cli/preflight.py); the two migration commands
map onto `sts`. Like Google's StatefulSet CSI migration tool, they do not ask for --yes when not on a terminal.
"""

from __future__ import annotations

import argparse
from typing import Any

from kubectl_csi_migrate.cli import sts
from kubectl_csi_migrate.cli.flags import add_flags


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    rolling = sub.add_parser(
        "rolling-migration",
        parents=parents,
        help="`sts --strategy rolling`, as Google's StatefulSet CSI migration tool spells it",
        description="Same as `sts --strategy rolling` (as Google's StatefulSet CSI migration tool spells it).",
    )
    rolling.add_argument("scope", choices=("all",), help="'all': every replica, one at a time")
    rolling.add_argument("name", nargs="?", metavar="STS_NAME", help=argparse.SUPPRESS)
    add_flags(rolling)
    rolling.set_defaults(run=_run_rolling, confirm_needs_yes=False)

    offline = sub.add_parser(
        "migration-with-downtime",
        parents=parents,
        help="`sts --strategy offline`, as Google's StatefulSet CSI migration tool spells it",
        description="Same as `sts --strategy offline`: scale to zero, migrate, scale back.",
    )
    offline.add_argument("name", nargs="?", metavar="STS_NAME", help=argparse.SUPPRESS)
    add_flags(offline)
    offline.set_defaults(run=_run_offline, confirm_needs_yes=False)


def _run_rolling(args: argparse.Namespace) -> int:
    args.strategy = "rolling"
    return sts.run(args)


def _run_offline(args: argparse.Namespace) -> int:
    args.strategy = "offline"
    return sts.run(args)
