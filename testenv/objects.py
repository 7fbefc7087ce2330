"""The objects a GKE on VMware user cluster (and its admin cluster) has, created after `up`.

Nodes are kwok's; each node also gets what the vSphere CSI node plugin and the kubelet would
leave: a CSINode listing the driver, with the in-tree vSphere plugin marked as migrated.
"""

from __future__ import annotations

import json
from typing import Any

from testenv import cluster

CSI_DRIVER = "csi.vsphere.vmware.com"
INTREE_PROVISIONER = "kubernetes.io/vsphere-volume"


# The vSphere CSI driver's bookkeeping of migrated in-tree volumes (path -> FCD id), cut down to
# the fields the tool reads.
CNS_MIGRATION_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "cnsvspherevolumemigrations.cns.vmware.com"},
    "spec": {
        "group": "cns.vmware.com",
        "scope": "Cluster",
        "names": {
            "kind": "CnsVSphereVolumeMigration",
            "listKind": "CnsVSphereVolumeMigrationList",
            "plural": "cnsvspherevolumemigrations",
            "singular": "cnsvspherevolumemigration",
        },
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def cns_migration(fcd_id: str, volume_path: str) -> dict[str, Any]:
    return {
        "apiVersion": "cns.vmware.com/v1alpha1",
        "kind": "CnsVSphereVolumeMigration",
        "metadata": {"name": fcd_id},
        "spec": {"volumepath": volume_path, "volumeid": fcd_id},
    }


def csi_vsphere_conf(port: int) -> str:
    """The vSphere CSI driver's csi-vsphere.conf (gcfg: quoted values), for the simulator."""
    return (
        "[Global]\n"
        f'cluster-id = "{cluster.USER_CLUSTER}"\n'
        "\n"
        '[VirtualCenter "127.0.0.1"]\n'
        'insecure-flag = "true"\n'
        f'user = "{cluster.VC_USER}"\n'
        f'password = "{cluster.VC_PASSWORD}"\n'
        f'port = "{port}"\n'
        f'datacenters = "{cluster.DATACENTER}"\n'
    )


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
                "spec": {"drivers": [{"name": CSI_DRIVER, "nodeID": node, "topologyKeys": None}]},
            }
        )
    docs += [
        CNS_MIGRATION_CRD,
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "CSIDriver",
            "metadata": {"name": CSI_DRIVER},
            "spec": {"attachRequired": True, "podInfoOnMount": False},
        },
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
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vmware-system-csi"}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "vsphere-config-secret", "namespace": "vmware-system-csi"},
            "stringData": {"csi-vsphere.conf": csi_vsphere_conf(vcsim_port)},
        },
    ]
    return docs


def populate(env: cluster.Env) -> None:
    info = env.info()
    from testenv import vc

    uuids = vc.vm_uuids(env)
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
