"""A signal another thread took is handled in the main thread at once, not when a worker ends
(cli/fleet.py and migration/run.py wait on their workers with threads.wait_for). Before, both
waited without a timeout: the fleet's unit test saw a run started after SIGTERM in 4 of 40 runs
on a busy machine, the handler having run only when a child ended 10 s later."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import pytest

from kubectl_csi_migrate.threads import wait_for


def _handled_after(waiter: Any) -> float:
    """Seconds from a SIGUSR1 that a worker takes (the main thread blocks it, so the kernel
    hands it to the worker) to its handler running in the main thread, waiting with `waiter`
    on a worker that lasts 3.5 s."""
    handled: list[float] = []
    before = signal.signal(signal.SIGUSR1, lambda _s, _f: handled.append(time.monotonic()))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    sent: list[float] = []

    def worker() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})  # threads start with the main's mask
        time.sleep(0.5)  # the main thread waiting by then
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(3)

    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiter([pool.submit(worker)])
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        signal.signal(signal.SIGUSR1, before)
    assert handled and sent
    return handled[0] - sent[0]


def test_a_signal_a_worker_took_is_handled_while_the_main_thread_waits() -> None:
    assert _handled_after(wait_for) < 1.5


def test_an_untimed_wait_handles_it_only_when_the_worker_ends() -> None:
    """The defect wait_for avoids, shown on concurrent.futures.wait itself."""
    assert _handled_after(wait) >= 2.5


@pytest.mark.parametrize("return_when", [FIRST_COMPLETED, FIRST_EXCEPTION])
def test_wait_for_returns_as_concurrent_futures_wait_does(return_when: str) -> None:
    def fail() -> None:
        raise ValueError("boom")

    with ThreadPoolExecutor(max_workers=2) as pool:
        slow = pool.submit(time.sleep, 1)
        started = time.monotonic()
        wait_for([slow, pool.submit(fail)], return_when=return_when)
        assert time.monotonic() - started < 0.8 and not slow.done()
