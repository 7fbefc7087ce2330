"""The attach half of the vSphere CSI controller and its syncer's migration bookkeeping, for the
test environment.

On a real cluster the CSI driver's controller (external-attacher + vSphere CSI) answers each
VolumeAttachment: it attaches the disk to the node's VM, sets `status.attached`, and on
deletion detaches the disk and removes its finalizer. The attach/detach controller waits for
that; without it every attach hangs until its 2-minute timeout and blocks the next detach.
This process does the same against vcsim: the disk is really attached to (and detached from)
the node's VM, so "is the VMDK still attached to a VM" can be checked for real.

Like the CSI syncer, it also drops the CnsVSphereVolumeMigration record of an in-tree PV once
that PV is deleted (after a short delay, as the syncer's own loop has), so the tool's wait for
that release is exercised.

Run by `scripts/testenv up` as its own process (`python -m testenv.attacher STATE_DIR`).
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any

from testenv import cluster, vc

DRIVER = "csi.vsphere.vmware.com"
FINALIZER = "external-attacher/csi-vsphere-vmware-com"


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


class Attacher:
    def __init__(self, env: cluster.Env) -> None:
        from kubernetes import client, config

        self.env = env
        api = config.new_client_from_config(env.info()["user_kubeconfig"])
        self.core = client.CoreV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.si = vc.connect(env)

    # -- vCenter --------------------------------------------------------------------------

    def _disk_path(self, pv_name: str) -> str | None:
        pv = self.core.read_persistent_volume(pv_name)
        if pv.spec.vsphere_volume is not None:
            return str(pv.spec.vsphere_volume.volume_path)
        if pv.spec.csi is not None and pv.spec.csi.driver == DRIVER:
            return vc.fcd_path(self.env, pv.spec.csi.volume_handle, si=self.si)
        return None

    def _vm(self, node_name: str) -> Any:
        node = self.core.read_node(node_name)
        uuid = (node.spec.provider_id or "").removeprefix("vsphere://")
        return self.si.content.searchIndex.FindByUuid(uuid=uuid, vmSearch=True)

    def attach(self, pv_name: str, node_name: str) -> None:
        path, vm = self._disk_path(pv_name), self._vm(node_name)
        if path and vm is not None and path not in vc.vm_disks(vm):
            vc.attach_disk(self.si, vm, path)
            log(f"attached {path} to {vm.name}")

    def detach(self, pv_name: str, node_name: str) -> None:
        path, vm = self._disk_path_or_none(pv_name), self._vm(node_name)
        if path and vm is not None and path in vc.vm_disks(vm):
            vc.detach_disk(self.si, vm, path)
            log(f"detached {path} from {vm.name}")

    def _disk_path_or_none(self, pv_name: str) -> str | None:
        try:
            return self._disk_path(pv_name)
        except Exception:  # the PV is gone: nothing to detach by name
            return None

    # -- VolumeAttachments ----------------------------------------------------------------

    def handle(self, va: Any) -> None:
        if va.spec.attacher != DRIVER:
            return
        name = va.metadata.name
        pv_name = va.spec.source.persistent_volume_name
        node = va.spec.node_name
        finalizers = list(va.metadata.finalizers or [])
        if va.metadata.deletion_timestamp:
            if FINALIZER in finalizers:
                if pv_name:
                    self.detach(pv_name, node)
                finalizers.remove(FINALIZER)
                # A list body is sent as a JSON patch: a strategic merge would merge the lists.
                patch = [{"op": "replace", "path": "/metadata/finalizers", "value": finalizers}]
                self.storage.patch_volume_attachment(name, patch)
            return
        if va.status is not None and va.status.attached:
            return
        if FINALIZER not in finalizers:
            self.storage.patch_volume_attachment(name, {"metadata": {"finalizers": [*finalizers, FINALIZER]}})
        if pv_name:
            self.attach(pv_name, node)
        self.storage.patch_volume_attachment_status(name, {"status": {"attached": True}})
        log(f"volumeattachment {name}: {pv_name} attached to {node}")

    def sync_migrations(self) -> None:
        from kubernetes import client, watch

        custom = client.CustomObjectsApi(self.core.api_client)
        group, version, plural = "cns.vmware.com", "v1alpha1", "cnsvspherevolumemigrations"
        while True:
            try:
                listing = self.core.list_persistent_volume()
                for event in watch.Watch().stream(
                    self.core.list_persistent_volume,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=300,
                ):
                    pv = event["object"]
                    if event["type"] != "DELETED" or pv.spec.vsphere_volume is None:
                        continue
                    path = pv.spec.vsphere_volume.volume_path
                    time.sleep(1)
                    for item in custom.list_cluster_custom_object(group, version, plural)["items"]:
                        if item.get("spec", {}).get("volumepath") == path:
                            custom.delete_cluster_custom_object(group, version, plural, item["metadata"]["name"])
                            log(f"cnsvspherevolumemigration {item['metadata']['name']} released ({path})")
            except Exception:  # log, then list and watch again
                log(traceback.format_exc())
                time.sleep(0.5)

    def run(self) -> None:
        import threading

        from kubernetes import watch

        threading.Thread(target=self.sync_migrations, daemon=True).start()

        while True:
            try:
                listing = self.storage.list_volume_attachment()
                for va in listing.items:
                    self.handle(va)
                stream = watch.Watch().stream(
                    self.storage.list_volume_attachment,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=300,
                )
                for event in stream:
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.handle(event["object"])
            except Exception:  # log, then list and watch again
                log(traceback.format_exc())
                time.sleep(0.5)


if __name__ == "__main__":
    Attacher(cluster.Env(Path(sys.argv[1]))).run()
