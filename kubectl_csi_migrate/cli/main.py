"""Entry point of `kubectl csi-migrate`: builds the parser from the command modules and maps
outcomes to exit codes (0 done, 1 failed or blocked, 2 usage). API clients are imported lazily,
so `--help` and `--version` stay instant."""

from __future__ import annotations

import argparse
import sys

from kubectl_csi_migrate import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl csi-migrate",
        description="Move a StatefulSet's volumes from the in-tree vSphere plugin to the vSphere "
        "CSI driver, in place: no data copied, one replica at a time.",
    )
    parser.add_argument("--version", action="version", version=f"kubectl-csi-migrate {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
