"""`python -m tests.e2e.killer STEP EVENT ARGS...`: `kubectl csi-migrate ARGS`, run in this
process, SIGKILLed right after its working directory records EVENT ("done", "undone") of STEP.

The kill tests use it to stop a run exactly at each boundary of `steps_for(plan)`, instead of
racing the run's output; the command is otherwise the plugin itself (the same `main`)."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from kubectl_csi_migrate.cli.main import main
from kubectl_csi_migrate.migration import workdir


def install(step: str, event: str) -> None:
    record = workdir.WorkDir.record

    def record_then_kill(self: workdir.WorkDir, name: str, happened: str, **data: Any) -> None:
        record(self, name, happened, **data)
        if (name, happened) == (step, event):
            os.kill(os.getpid(), signal.SIGKILL)

    workdir.WorkDir.record = record_then_kill  # type: ignore[method-assign]


if __name__ == "__main__":
    install(sys.argv[1], sys.argv[2])
    sys.exit(main(sys.argv[3:]))
