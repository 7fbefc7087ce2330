"""The report a run ends with (`-o json|yaml`, report.json in the working directory)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration.plan import Plan
from kubectl_csi_migrate.migration.steps import fcd_of, fcd_result


@dataclass
class Timing:
    """Where the time went: waiting on the cluster and vCenter, or the tool's own work; and how
    long each volume took, from its detach to its new claim Bound."""

    started: float = field(default_factory=time.monotonic)
    waited: float = 0.0
    vcenter: float = 0.0
    volumes: dict[str, tuple[float, float]] = field(default_factory=dict)
    ended: float = 0.0
    """A volume moved side by side (offline): when it ended, and the worker thread that moved it."""
    worker: str = ""
    waits: dict[str, float] = field(default_factory=dict)
    """Seconds waited on the cluster by what was waited for (`Pod gone`, `Pod`: Ready,
    `VolumeAttachment`: a detach, `PersistentVolumeClaim`: Bound, `CnsVSphereVolumeMigration`: the
    driver's release...); offline, summed over the volumes moved side by side."""

    def add_wait(self, what: str, seconds: float) -> None:
        self.waits[what] = self.waits.get(what, 0.0) + seconds

    def own(self, wall: float) -> float:
        """Of `wall` seconds, the tool's own work (neither waiting on the cluster nor vCenter)."""
        return max(0.0, wall - self.waited - self.vcenter)


def build(plan: Plan, done: dict[str, Obj], timing: Timing, requests: int, workdir: str, kind: str) -> Obj:
    """`done`: the step record (step id -> what the step recorded when done)."""
    wall = time.monotonic() - timing.started
    volumes = []
    for v in plan.volumes:
        entry: Obj = {
            "pvc": v.pvc,
            "template": v.template,
            "ordinal": v.ordinal,
            "oldPV": v.pv,
            "vmdk": v.vmdk,
            "result": "migrated" if v.action == "migrate" else v.action,
        }
        if v.action == "migrate" and kind == "RollbackReport":
            entry["result"] = "rolled back"
            entry["fcdId"] = fcd_of(done, v.pv)
        elif v.action == "migrate":
            fcd = fcd_result(done, v.pv)
            entry.update(
                {
                    "newPV": v.pv,
                    "fcdId": fcd.fcd_id,
                    "keepAfterDeleteVm": fcd.keep_after_delete_vm,
                    "storageClass": plan.csi_class,
                }
            )
            if v.pv in timing.volumes:
                started, finished = timing.volumes[v.pv]
                entry["seconds"] = round(finished - started, 3)
        else:
            entry["fcdId"] = v.fcd_id
        volumes.append(entry)
    return {
        "apiVersion": "csi-migrate.kubectl.io/v1",
        "kind": kind,
        "plan": plan.to_dict(),
        "volumes": volumes,
        "timing": {
            "wallSeconds": round(wall, 3),
            "waitSeconds": round(timing.waited, 3),
            "vcenterSeconds": round(timing.vcenter, 3),
            "toolSeconds": round(max(0.0, wall - timing.waited - timing.vcenter), 3),
            "waitSecondsByKind": {what: round(seconds, 3) for what, seconds in sorted(timing.waits.items())},
        },
        "apiRequests": requests,
        "workingDirectory": workdir,
    }
