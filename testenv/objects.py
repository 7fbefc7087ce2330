"""The objects a GKE on VMware user cluster (and its admin cluster) has, created after `up`.

Nodes are kwok's; each node also gets what the vSphere CSI node plugin and the kubelet would
leave: a CSINode listing the driver, with the in-tree vSphere plugin marked as migrated.
"""

from __future__ import annotations

import json
from typing import Any

from testenv import build, cluster, csidriver

CSI_DRIVER = "csi.vsphere.vmware.com"
INTREE_PROVISIONER = "kubernetes.io/vsphere-volume"
# The driver's limit of volumes per node VM (a PVSCSI node VM: 4 controllers x 15 targets, one
# taken by the boot disk).
MAX_VOLUMES_PER_NODE = 59


def user_cluster_objects(vcsim_port: int, vm_uuids: dict[str, str]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for node in cluster.NODES:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": node,
                    "labels": {
                        "kubernetes.io/hostname": node,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                    "annotations": {
                        "kwok.x-k8s.io/node": "fake",
                        "node.alpha.kubernetes.io/ttl": "0",
                        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                    },
                },
                "spec": {"providerID": f"vsphere://{vm_uuids.get(node, '')}"},
            }
        )
        docs.append(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "CSINode",
                "metadata": {
                    "name": node,
                    "annotations": {"storage.alpha.kubernetes.io/migrated-plugins": INTREE_PROVISIONER},
                },
                # What the driver's node plugin would register: the node VM's UUID as the node ID
                # (the controller looks the VM up by it) and the driver's volume limit.
                "spec": {
                    "drivers": [
                        {
                            "name": CSI_DRIVER,
                            "nodeID": vm_uuids.get(node, node),
                            "topologyKeys": None,
                            "allocatable": {"count": MAX_VOLUMES_PER_NODE},
                        }
                    ]
                },
            }
        )
    docs += [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "standard",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": INTREE_PROVISIONER,
            "parameters": {"diskformat": "thin"},
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "standard-rwo"},
            "provisioner": CSI_DRIVER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": True,
        },
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotClass",
            "metadata": {"name": "vsphere-snapshots"},
            "driver": CSI_DRIVER,
            "deletionPolicy": "Delete",
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "vsphere-config-secret", "namespace": csidriver.NAMESPACE},
            "stringData": {"csi-vsphere.conf": csidriver.csi_vsphere_conf(vcsim_port)},
        },
    ]
    return docs


def populate(env: cluster.Env, bins: build.Bin) -> None:
    info = env.info()
    from testenv import vc

    uuids = vc.vm_uuids(env)
    # The driver's own install first: its namespace and the snapshot CRDs come with it.
    _apply(env, csidriver.install_objects(bins))
    cluster.kubectl(env, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    docs = user_cluster_objects(info["vcsim_port"], {n: uuids[i] for i, n in enumerate(cluster.NODES)})
    _apply(env, docs)
    cluster.kubectl(env, "wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")

    admin_conf = (env.root / "user.kubeconfig").read_text()
    admin_docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cluster.USER_CLUSTER}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "admin", "namespace": cluster.USER_CLUSTER},
            "stringData": {"admin.conf": admin_conf},
        },
    ]
    _apply(env, admin_docs, kubeconfig=info["admin_kubeconfig"])


def _apply(env: cluster.Env, docs: list[dict[str, Any]], kubeconfig: str | None = None) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    cluster.kubectl(env, "apply", "--server-side", "-f", "-", stdin=body, kubeconfig=kubeconfig)
