"""Waiting on worker threads from the main thread, where Python runs signal handlers.

A signal sent to the process (Ctrl-C, SIGTERM, SIGHUP) may be taken by any of its threads. Python
then only notes it, and runs its handler in the main thread the next time that thread runs
Python code. A main thread blocked in an untimed wait on a worker would run the handler only once
a worker ended (a volume's whole chain of steps, a fleet child's whole run), while the workers
went on. `wait_for` waits in slices instead, so the handler runs within `TICK` of the signal.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, Future, wait
from typing import Any

TICK = 0.1
"""Seconds between two looks at a signal that another thread took."""


def wait_for(futures: Iterable[Future[Any]], return_when: str = ALL_COMPLETED) -> None:
    """concurrent.futures.wait (without a timeout), in slices of TICK seconds."""
    futures = list(futures)
    while True:
        done, pending = wait(futures, timeout=TICK, return_when=return_when)
        if not pending:
            return
        if return_when == FIRST_COMPLETED and done:
            return
        if return_when == FIRST_EXCEPTION and any(not f.cancelled() and f.exception() is not None for f in done):
            return
