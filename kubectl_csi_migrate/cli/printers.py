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

        out.write(yaml.safe_dump(data, sort_keys=False))
    elif output == "name":
        for name in names:
            out.write(name + "\n")
    else:
        out.write(human.rstrip("\n") + "\n")
    out.flush()


def error(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
