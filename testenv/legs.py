"""The versions the test environment runs: Kubernetes, the vSphere CSI driver, its attacher, and
the vCenter API that our vcsim reports. A leg is one such set; the three named ones are what
users of in-tree vSphere volumes run (docs/supported-versions.md).

`scripts/testenv build|up [--leg NAME] [--kubernetes V] [--csi-driver V] [--vcenter V]` picks
one (default: CSI_MIGRATE_TESTENV_LEG, else `current`); `up` writes it into the environment's
env.json, and `status`, `env` and the e2e tests read it back from there.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

KUBERNETES = ("1.36.3", "1.30.14", "1.28.15")
"""Kubernetes versions with a control-plane module here: testenv/kube (the newest) and
testenv/kube/v1.MINOR/ for the others."""

ATTACHERS = {"3.7.3": "4.9.0", "3.3.1": "4.5.1", "3.1.2": "4.3.0"}
"""The external-attacher each driver release's own vanilla manifest pins; its source (with
`vendor/`) is in ../shared/third_party. The attacher is the sidecar that translates an in-tree
volume for CSI migration (csi-translation-lib)."""

DRIVER_SHA256 = {
    "3.7.3": "87a162f7be529490765f41442db3a9582d650d4b1f1b5b33de5c1bf649b85c2b",
    "3.3.1": "994a5f4cc15b4057d7d541fb9a74d4a130992f38166bed4116b036be7ba0fd5f",
    "3.1.2": "67a4e7a8400d6f26cc5b7388db09cb6c7f9b2d64336f0c4d03922929e060f5b8",
}
ATTACHER_SHA256 = {
    "4.9.0": "48f74b9e2df2d6ce22fac75d131b38026f66db07c781b422faacf03d3636f76c",
    "4.5.1": "f00849079e0072ff65e13ef7831f6339ea146c3677a437994a6e7d87a8f9fcb6",
    "4.3.0": "288db23100ae50a63f5b8a96211694bde3e36f231d8ade7f0999ea238563939c",
}

VCENTER_OLDEST = (7, 0, 2)


@dataclass(frozen=True)
class Leg:
    name: str
    kubernetes: str
    driver: str
    vcenter: str

    @property
    def attacher(self) -> str:
        return ATTACHERS[self.driver]

    @property
    def kube_minor(self) -> str:
        return ".".join(self.kubernetes.split(".")[:2])

    def describe(self) -> str:
        return (
            f"leg {self.name}: Kubernetes {self.kubernetes}, vSphere CSI driver {self.driver} "
            f"(external-attacher {self.attacher}), vCenter API {self.vcenter}"
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "attacher": self.attacher}


LEGS = {
    "current": Leg("current", "1.36.3", "3.7.3", "8.0.3"),
    "gdc-1.30": Leg("gdc-1.30", "1.30.14", "3.3.1", "8.0.2"),
    "gdc-1.28": Leg("gdc-1.28", "1.28.15", "3.1.2", "7.0.3"),
}


PASSING = ("current", "gdc-1.30", "gdc-1.28")
"""The legs whose `leg` tests pass, so the ones CI runs (scripts/test: the current leg's whole
suite, then each older one's `leg` tests) and preflight names as tested."""


def resolve(
    name: str | None = None,
    kubernetes: str | None = None,
    driver: str | None = None,
    vcenter: str | None = None,
) -> Leg:
    """The leg `name` (default CSI_MIGRATE_TESTENV_LEG, else `current`) with any version given
    put in its place; SystemExit naming what can be built when a version cannot."""
    name = name or os.environ.get("CSI_MIGRATE_TESTENV_LEG") or "current"
    if name not in LEGS:
        raise SystemExit(f"testenv: no leg named {name!r}; there are: {', '.join(LEGS)}")
    leg = LEGS[name]
    for flag, value, known in (
        ("--kubernetes", kubernetes, KUBERNETES),
        ("--csi-driver", driver, tuple(ATTACHERS)),
    ):
        if value is not None and value.lstrip("v") not in known:
            raise SystemExit(f"testenv: {flag} {value}: can build {', '.join(known)}")
    if vcenter is not None:
        parts = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", vcenter)
        if not parts or tuple(int(p) for p in parts.groups()) < VCENTER_OLDEST:
            oldest = ".".join(map(str, VCENTER_OLDEST))
            raise SystemExit(f"testenv: --vcenter {vcenter}: give X.Y.Z, {oldest} or newer")
    changed = {
        k: v.lstrip("v")
        for k, v in (("kubernetes", kubernetes), ("driver", driver), ("vcenter", vcenter))
        if v is not None and v.lstrip("v") != getattr(leg, k)
    }
    if not changed:
        return leg
    custom = replace(leg, **changed)
    return replace(custom, name=f"{name}+" + ",".join(f"{k}={v}" for k, v in changed.items()))


def from_json(data: dict[str, Any] | None) -> Leg:
    """The leg an env.json records (one from before legs existed ran `current`)."""
    if not data:
        return LEGS["current"]
    return Leg(data["name"], data["kubernetes"], data["driver"], data["vcenter"])
