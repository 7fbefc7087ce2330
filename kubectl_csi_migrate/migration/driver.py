"""What the tool reads of the vSphere CSI driver's health: the leader-election Leases its syncer
and attacher renew. Preflight's `csi-controller` check and the run's wait for the driver's
release of a disk (disks.py) read them from here, so the two cannot drift."""

from __future__ import annotations

from kubectl_csi_migrate.errors import CsiMigrateError
from kubectl_csi_migrate.kube.client import Kube
from kubectl_csi_migrate.kube.resources import Obj

# The driver's components the run depends on, by the Lease each renews while it runs (leader
# election, on in the driver's manifests): the syncer releases and registers disks, the attacher
# detaches the old volumes and attaches the new ones.
DRIVER_NAMESPACES = ("vmware-system-csi", "kube-system", "openshift-cluster-csi-drivers")
DRIVER_LEASES = (
    ("vsphere-syncer", "the vSphere CSI syncer (container vsphere-syncer)"),
    ("external-attacher-leader-csi-vsphere-vmware-com", "the CSI attacher (container csi-attacher)"),
)


def lease_age(renew: str, server_date: str | None) -> float | None:
    """Seconds from `renew` (a Lease's renewTime) to the API server's Date; None if unknown."""
    from datetime import datetime
    from email.utils import parsedate_to_datetime

    try:
        then = datetime.fromisoformat(renew.replace("Z", "+00:00"))
        return (parsedate_to_datetime(server_date or "") - then).total_seconds()
    except (TypeError, ValueError):
        return None


def driver_leases(kube: Kube) -> list[tuple[str, str, str, Obj, str | None]]:
    """(namespace, name, description, spec, the API server's Date when read) of the Leases the
    driver's syncer and attacher renew, from the first namespace that has any."""
    found = []
    for namespace in DRIVER_NAMESPACES:
        for name, what in DRIVER_LEASES:
            try:
                lease = kube.get("Lease", name, namespace)
            except CsiMigrateError:
                lease = None  # not allowed to read leases there: judged as not found
            if lease is not None:
                found.append((namespace, name, what, lease.get("spec", {}), kube.server_date))
        if found:
            break
    return found


def syncer_renewed_since(kube: Kube, when: str | None) -> bool:
    """Whether the syncer renewed its Lease after `when` (an API server Date) and still does."""
    for _, name, _, spec, date in driver_leases(kube):
        if name == DRIVER_LEASES[0][0]:
            since, age = lease_age(spec.get("renewTime") or "", when), lease_age(spec.get("renewTime") or "", date)
            fresh = age is not None and age <= int(spec.get("leaseDurationSeconds") or 15)
            return fresh and since is not None and since < 0
    return False
