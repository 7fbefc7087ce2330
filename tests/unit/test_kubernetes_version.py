"""Preflight's kubernetes-version check states exactly the releases the e2e suite runs on."""

from __future__ import annotations

from typing import Any

import pytest

from kubectl_csi_migrate.migration.preflight import FAIL, PASS, TESTED_KUBERNETES, WARN, check_version
from testenv import legs


class Server:
    def __init__(self, major: str, minor: str, git: str) -> None:
        self.info = {"major": major, "minor": minor, "gitVersion": git}

    def server_version(self) -> dict[str, Any]:
        return self.info


def test_the_tested_releases_are_the_legs_of_the_test_environment() -> None:
    assert sorted(TESTED_KUBERNETES) == sorted(legs.LEGS[name].kubernetes for name in legs.PASSING)
    assert set(TESTED_KUBERNETES) <= set(legs.KUBERNETES)


@pytest.mark.parametrize(
    ("major", "minor", "git", "status"),
    [
        ("1", "25", "v1.25.16", FAIL),
        ("1", "26", "v1.26.15", WARN),
        ("1", "28", "v1.28.15", PASS),
        ("1", "28+", "v1.28.3-gke.1200", PASS),
        ("1", "29", "v1.29.6", WARN),
        ("1", "30", "v1.30.14", PASS),
        ("1", "31", "v1.31.4", WARN),
        ("1", "33", "v1.33.1", WARN),
        ("1", "36", "v1.36.3", PASS),
        ("1", "36+", "v1.36.1-gke.100", PASS),
        ("1", "37", "v1.37.0", WARN),
    ],
)
def test_a_tested_release_passes_an_untested_one_warns_before_1_26_fails(
    major: str, minor: str, git: str, status: str
) -> None:
    check = check_version(Server(major, minor, git))  # type: ignore[arg-type]
    assert check.status == status, check
    if status != FAIL:
        assert "tested: Kubernetes 1.36, 1.30, 1.28" in check.message
