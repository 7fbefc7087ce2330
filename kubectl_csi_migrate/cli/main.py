"""Entry point of `kubectl csi-migrate`: builds the parser from the command modules and maps
outcomes to exit codes (0 done, 1 failed or blocked, 2 usage). API clients are imported lazily,
so `--help` and `--version` stay instant."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time

from kubectl_csi_migrate import __version__
from kubectl_csi_migrate.cli import common, compat, fleet, preflight, printers, rollback, status, sts

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# One module per command, each with add_parser(subparsers, parents) and a run(args) -> int.
COMMANDS = (preflight, sts, fleet, rollback, status, compat)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # kubectl style: one `error:` line, then where to look; exit 2.
        self.exit(EXIT_USAGE, f"error: {message}\nSee '{self.prog} --help' for usage.\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kubectl csi-migrate",
        description="Move volumes from the in-tree vSphere plugin to the vSphere CSI driver, in "
        "place: no data copied. A StatefulSet's one replica at a time; a Deployment's scaled to 0 and "
        "back; a claim on its own with its bare pod stopped meanwhile.",
        epilog="Examples:\n"
        "  kubectl csi-migrate preflight                      # survey the namespace\n"
        "  kubectl csi-migrate preflight web --csi-storageclass standard-rwo\n"
        "  kubectl csi-migrate sts web --csi-storageclass standard-rwo\n"
        "  kubectl csi-migrate sts web --csi-storageclass standard-rwo --dry-run\n"
        "  kubectl csi-migrate deploy api --csi-storageclass standard-rwo    # scaled to 0 and back\n"
        "  kubectl csi-migrate pvc scratch --csi-storageclass standard-rwo   # a claim on its own\n"
        "  kubectl csi-migrate all -A --parallel 4 --csi-storageclass standard-rwo --yes\n"
        "  kubectl csi-migrate status web                     # where a run is, how to resume it\n"
        "  kubectl csi-migrate rollback web                   # back to in-tree volumes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kubectl-csi-migrate {__version__}")
    shared = argparse.ArgumentParser(add_help=False)
    common.add_cluster_flags(shared)
    common.add_vsphere_flags(shared)
    common.add_output_flag(shared)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        command.add_parser(sub, [shared])
    return parser


class Terminated(BaseException):
    """SIGTERM or SIGHUP: unwound like an interrupt, so that `finally` blocks (the Lease) and
    exit handlers (the private folder holding kubeconfig keys) run, as they do for Ctrl-C. A
    BaseException, as KeyboardInterrupt is: an `except Exception` on the way (a watch that retries
    on errors, a vCenter call that classifies them) must not swallow it."""


REPEAT_WINDOW = 1.0
"""Seconds after a stop signal it honoured in which the command takes another for the same
request, delivered twice: a child of `all` (`sts --all`, ...) gets the one its parent passes on as
well as its process group's (Ctrl-C from a terminal, `kill -- -PGID`, `timeout`); raised again, it
would cut short the stop the first began (the Lease given back, the working directory written)."""

_honoured: list[float] = []


def _stop(signum: int, _frame: object) -> None:
    """SIGINT: KeyboardInterrupt, SIGTERM or SIGHUP: Terminated; the same request again within
    REPEAT_WINDOW is ignored (a later one is raised; an offline run whose volumes are in flight
    still waits for their steps to end, see Migration._stop_workers)."""
    now = time.monotonic()
    if _honoured and now - _honoured[-1] < REPEAT_WINDOW:
        return
    _honoured[:] = [now]
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USAGE
    for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None), signal.SIGINT):
        if signum is not None:
            signal.signal(signum, _stop)
    common.setup_logging(args.verbosity)
    code = EXIT_FAILED
    try:
        code = _run(args)
        return code
    finally:
        _write_outcome(code)


def _write_outcome(code: int) -> None:
    """A fleet's child: how it ended, where its parent reads it (fleet.OUTCOME_FILE)."""
    path = os.environ.get(fleet.OUTCOME_FILE)
    if not path:
        return
    import json

    from kubectl_csi_migrate.kube.client import CHANGES

    with contextlib.suppress(OSError), open(path, "w") as f:
        json.dump({"exit": code, "changed": CHANGES[0] > 0}, f)


def _run(args: argparse.Namespace) -> int:
    from kubectl_csi_migrate.errors import CsiMigrateError, UsageError

    try:
        return int(args.run(args))
    except UsageError as exc:
        printers.error(str(exc))
        return EXIT_USAGE
    except CsiMigrateError as exc:
        printers.error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        printers.error("interrupted")
        return 130
    except Terminated as exc:
        printers.error(f"terminated ({exc}); a run is resumed by the same command")
        return 143
    except OSError as exc:  # the machine's side: a full disk, a file we may not write...
        printers.error(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
        return EXIT_FAILED
    except Exception as exc:  # a bug: still one error line, the traceback only on request
        if args.verbosity >= 6:
            raise
        printers.error(f"internal error: {type(exc).__name__}: {exc} (run with -v=6 for the traceback)")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
