"""`python -m tests.e2e.killer STEP EVENT ARGS...`: `kubectl csi-migrate ARGS`, run in this
process, SIGKILLed right after its working directory records EVENT ("start", "done", "undone")
of STEP. With KILLER_SIGNAL=TERM (or INT, HUP) that signal is sent instead, KILLER_DELAY seconds
later (default 0), as a user's Ctrl-C or a stopped CI job would send it. STEP `#N` names the
N-th step (from 0) of `steps_for` of the plan the run records, so that a test needs no plan of
its own first.

The kill tests use it to stop a run exactly at each boundary of `steps_for(plan)`, instead of
racing the run's output; the command is otherwise the plugin itself (the same `main`).

KILLER_SIGNAL=STOP holds the run at that boundary: the stop is sent to the thread that recorded
the event (`stop_here`), so that thread goes no further. Sent to the process instead, the kernel
hands a stop signal to the main thread (waiting on the volume threads of an offline or Deployment
run), and the thread that recorded the event went on until the main thread was scheduled: under
load, through its next step's check and into that step (a Deployment's claim deleted after the
test had seen the run stopped; suite run 4)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from kubectl_csi_migrate.cli.main import main
from kubectl_csi_migrate.migration import workdir


def stop_here() -> None:
    """Stop this process before the calling thread runs on: SIGSTOP sent to this thread (the
    kernel stops it before it returns to Python, and the rest of the process with it)."""
    signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)


def install(step: str, event: str) -> None:
    record = workdir.WorkDir.record
    signum = signal.Signals[f"SIG{os.environ.get('KILLER_SIGNAL', 'KILL')}"]
    delay = float(os.environ.get("KILLER_DELAY", "0"))

    def send() -> None:
        if signum == signal.SIGSTOP:
            stop_here()
        else:
            os.kill(os.getpid(), signum)

    target = step

    def record_then_kill(self: workdir.WorkDir, name: str, happened: str, **data: Any) -> None:
        nonlocal target
        record(self, name, happened, **data)
        if target.startswith("#"):
            from kubectl_csi_migrate.migration.owners import steps_for
            from kubectl_csi_migrate.migration.plan import Plan

            target = steps_for(Plan.from_dict(self.load_run()["plan"]))[int(target[1:])].id
        if (name, happened) == (target, event):
            if delay:
                threading.Timer(delay, send).start()
            else:
                send()

    workdir.WorkDir.record = record_then_kill  # type: ignore[method-assign]


if __name__ == "__main__":
    install(sys.argv[1], sys.argv[2])
    sys.exit(main(sys.argv[3:]))
