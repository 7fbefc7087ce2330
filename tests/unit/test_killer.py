"""The e2e killer's pause (KILLER_SIGNAL=STOP) holds the run exactly where the event was recorded,
even when a volume thread recorded it while the machine is busy: a test that acts on the cluster
once it sees the run stopped must not race the run's next step (suite run 4: a Deployment's
claim deleted after the test had seen the run stopped)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import sys, threading
from tests.e2e.killer import stop_here
out = open(sys.argv[1], "w", buffering=1)
def volume_thread():
    stop_here()
    n = 0
    while True:  # the run's next step: a system call each time, as an HTTP request makes
        n += 1
        out.write(f"{n}\\n")
t = threading.Thread(target=volume_thread, daemon=True)
t.start()
t.join()  # the main thread waits on its volume threads, as Migration._run_offline does
"""


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_stop_from_a_volume_thread_holds_that_thread_before_it_runs_on(tmp_path: Path) -> None:
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    after: list[int] = []
    try:
        for trial in range(10):
            out = tmp_path / f"out{trial}"
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(out)], cwd=REPO)
            try:
                deadline = time.monotonic() + 30
                while _state(child.pid) != "T":
                    assert time.monotonic() < deadline, "the child never stopped"
                    time.sleep(0.005)
                time.sleep(0.2)  # what a test does while the run stands
                after.append(len(out.read_text().split()))
            finally:
                child.kill()
                child.wait()
    finally:
        for busy in load:
            busy.kill()
            busy.wait()
    assert after == [0] * 10, f"system calls made after the stop, per trial: {after}"
