"""The docs and plugin.yaml against the code: the "What it survives" table (docs/safety.md) names
an existing e2e test in every row (at least 30 rows), and the RBAC section of docs/commands.md and
the krew caveats' RBAC list are the code's REQUIRED_ACCESS."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_survival_row_names_an_existing_e2e_test() -> None:
    text = (ROOT / "docs" / "safety.md").read_text()
    section = text[text.index("## What it survives") :]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| Fault")]
    assert len(rows) >= 30, len(rows)
    for row in rows:
        found = re.findall(r"`(test_\w+)::(test_\w+)`", row)
        assert found, f"row without a test: {row}"
        module, test = found[0]
        source = (ROOT / "tests" / "e2e" / f"{module}.py").read_text()
        assert f"def {test}(" in source, f"{module}::{test} does not exist"


def test_docs_rbac_section_is_the_code_s_required_access() -> None:
    from kubectl_csi_migrate.migration.preflight import rbac_text

    text = (ROOT / "docs" / "commands.md").read_text()
    section = text[text.index("## RBAC needed") :]
    section = section[: section.index("\n## ", 1)]
    listed = [line.strip() for line in section.splitlines() if line.startswith("    ")]
    assert listed == rbac_text().splitlines()


def test_plugin_yaml_caveats_rbac_list_is_the_code_s_required_access() -> None:
    """What krew shows before install lists the Kubernetes permissions the tool needs, printed
    from REQUIRED_ACCESS as docs/commands.md's section is (scripts/release writes the list again
    from the code; this keeps the committed manifest equal to it)."""
    import importlib.util

    import yaml

    from kubectl_csi_migrate.migration.preflight import rbac_text

    spec = importlib.util.spec_from_file_location("release", ROOT / "packaging" / "release.py")
    assert spec and spec.loader
    release = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(release)
    caveats = yaml.safe_load((ROOT / "plugin.yaml").read_text())["spec"]["caveats"]
    assert release.rbac_lines(caveats) == rbac_text().splitlines()
    assert release.with_rbac(caveats) == caveats
