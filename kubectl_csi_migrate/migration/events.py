"""Kubernetes Events the migration leaves on the objects it moved (`kubectl describe` shows them)."""

from __future__ import annotations

import socket
from collections.abc import Callable

from kubectl_csi_migrate.errors import CsiMigrateError
from kubectl_csi_migrate.kube.client import Kube
from kubectl_csi_migrate.kube.lock import now as _now
from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration.plan import Plan, VolumePlan


def migrated_message(plan: Plan, v: VolumePlan, fcd_id: str) -> str:
    return (
        f"kubectl csi-migrate moved persistentvolume {v.pv} from the in-tree vSphere plugin to "
        f"csi.vsphere.vmware.com (storageclass {plan.csi_class}): same disk {v.vmdk}, now first "
        f"class disk {fcd_id}; no data copied"
    )


def owner_message(plan: Plan, done: dict[str, Obj]) -> str:
    """One event on the owner for the whole run (each claim's own event names its disk)."""
    moved = [f"{v.pvc} (first class disk {done.get(f'fcd/{v.pv}', {}).get('fcd_id', '?')})" for v in plan.to_migrate()]
    text = (
        f"kubectl csi-migrate moved {len(moved)} volume(s) from the in-tree vSphere plugin to "
        f"csi.vsphere.vmware.com (storageclass {plan.csi_class}), same disks, no data copied: {', '.join(moved)}"
    )
    return text if len(text) <= 1000 else text[:940] + "... (each claim's MigratedToCSI event names its disk)"


def record(
    kube: Kube, say: Callable[[str], None], kind: str, api_version: str, obj: Obj, reason: str, message: str
) -> None:
    """Record a Normal Event on `obj`. Best effort: a migration does not fail because an Event
    could not be written (it says so)."""
    meta = obj["metadata"]
    stamp = _now().split(".")[0] + "Z"
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": api_version,
            "kind": kind,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "reason": reason,
        "message": message,
        "type": "Normal",
        "source": {"component": "kubectl-csi-migrate"},
        "reportingComponent": "kubectl-csi-migrate",
        "reportingInstance": socket.gethostname(),
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        kube.create(event)
    except CsiMigrateError as exc:
        say(f"warning: could not record event {reason} on {kind.lower()}/{meta['name']}: {exc}")
