"""The package's layers import only downwards: no module imports, at any depth, one that imports
it back (issue 19: `cli/sts`-`cli/fleet`, `kube/client`-`kube/cache` and `migration/run`-the step
modules did), and `cli/` is never imported from `migration/`, `kube/` or `vsphere/`."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "kubectl_csi_migrate"


def _imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (top level, under TYPE_CHECKING, in functions)."""
    modules = {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in PACKAGE.rglob("*.py")
    }
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE.name):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    edges[name].add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                edges[name] |= {a.name for a in node.names if a.name in modules}
    return {
        name: {t for t in targets if t in modules and t not in (name, PACKAGE.name)} for name, targets in edges.items()
    }


def test_no_module_imports_one_that_imports_it_back() -> None:
    edges = _imports()

    def reaches(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in edges[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(name for name in edges if name in reaches(name))
    assert cycles == []


def test_only_the_command_line_imports_the_command_line() -> None:
    edges = _imports()
    below = [n for n in edges if n.split(".")[1:2] in (["migration"], ["kube"], ["vsphere"])]
    assert [(n, t) for n in below for t in edges[n] if t.split(".")[1:2] == ["cli"]] == []
