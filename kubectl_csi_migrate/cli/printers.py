"""Rendering: commands build plain data, and one printer turns it into a table, JSON, YAML or
names. Data goes to stdout; everything else (actions with -o, progress, errors) to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def render(data: Any, output: str | None, human: str, names: Sequence[str], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if output == "json":
        out.write(json.dumps(data, indent=2) + "\n")
    elif output == "yaml":
        import yaml

        # As JSON first: the YAML is the JSON's, value for value (kinds and strategies are
        # StrEnums, which JSON writes as text and safe_dump refuses).
        out.write(yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False))
    elif output == "name":
        for name in names:
            out.write(name + "\n")
    else:
        out.write(human.rstrip("\n") + "\n")
    out.flush()


def error(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


class LiveLine:
    """On a terminal, one line that says what a run waits for and how long it has waited,
    rewritten every second (after the first `quiet` seconds, so that short waits do not flicker)
    and cleared when the wait ends or another line is printed."""

    def __init__(self, stream: TextIO, quiet: float = 2.0, every: float = 1.0) -> None:
        import threading

        self.stream, self.quiet, self.every = stream, quiet, every
        self.lock = threading.Lock()
        self.shown = False

    def clear(self) -> None:
        """Remove the line (call before printing anything else on the terminal)."""
        with self.lock:
            self._clear()

    def _clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False

    def waiting(self, what: str) -> Any:
        import contextlib
        import threading
        import time

        @contextlib.contextmanager
        def context() -> Any:
            stop = threading.Event()
            started = time.monotonic()

            def draw() -> None:
                while not stop.wait(self.every):
                    waited = time.monotonic() - started
                    if waited < self.quiet:
                        continue
                    with self.lock:
                        self.stream.write(f"\r\x1b[Kwaiting for {what}: {waited:.0f}s")
                        self.stream.flush()
                        self.shown = True

            thread = threading.Thread(target=draw, daemon=True)
            thread.start()
            try:
                yield
            finally:
                stop.set()
                thread.join()
                self.clear()

        return context()


def confirm(question: str, without_terminal: str | None) -> int | None:
    """`question`, then "Proceed? [y/N]" on the terminal: None to go on, else the exit code once
    the reason is said (no: 1, "aborted"). Without a terminal: the usage error `without_terminal`
    (exit 2), or, when None, go on unasked."""
    if not sys.stdin.isatty():
        if without_terminal is None:
            return None
        error(without_terminal)
        return 2
    sys.stderr.write(question + "\nProceed? [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        error("aborted; nothing was changed")
        return 1
    return None
