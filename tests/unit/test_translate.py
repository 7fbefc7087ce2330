"""The translations from backed-up objects to the objects the migration creates.

The fixtures are shaped like `kubectl get -o json` output from a GKE on VMware user cluster whose
"standard" StorageClass is the in-tree vSphere provisioner, running with CSI migration on.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kubectl_csi_migrate.migration import translate
from kubectl_csi_migrate.migration.translate import (
    CSI_DRIVER,
    DROPPED_ANNOTATIONS,
    INTREE_PROVISIONER,
    csi_pv_from_intree,
    is_csi_vsphere_pv,
    is_intree_vsphere_pv,
    ordinal_of,
    pod_for_recreate,
    pvc_name,
    recreated_pvc,
    statefulset_for_recreate,
    storage_class_of_template,
    strip_server_fields,
)
from kubectl_csi_migrate.vsphere import paths
from kubectl_csi_migrate.vsphere.paths import datastore_name, parse_datastore_path

Obj = dict[str, Any]

PV_NAME = "pvc-5f0c1b7e-3a2d-4c1e-9b8a-7d6e5f4c3b2a"
VOLUME_PATH = "[ds-1] kubevols/user-cluster-1-dynamic-pvc-5f0c1b7e-3a2d-4c1e-9b8a-7d6e5f4c3b2a.vmdk"
FCD_ID = "0f6d1c4e-8b2a-4f3d-9e7c-1a2b3c4d5e6f"
CSI_CLASS = "standard-rwo"


@pytest.fixture
def intree_pv() -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "annotations": {
                "kubernetes.io/createdby": "vsphere-volume-dynamic-provisioner",
                "pv.kubernetes.io/bound-by-controller": "yes",
                "pv.kubernetes.io/migrated-to": CSI_DRIVER,
                "pv.kubernetes.io/provisioned-by": INTREE_PROVISIONER,
                "backup.example.com/policy": "nightly",
            },
            "creationTimestamp": "2023-03-14T09:26:53Z",
            "finalizers": [
                "kubernetes.io/pv-protection",
                "external-attacher/csi-vsphere-vmware-com",
            ],
            "labels": {"app": "web", "tier": "storage"},
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}],
            "name": PV_NAME,
            "resourceVersion": "4823117",
            "uid": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": "10Gi"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "name": "data-web-0",
                "namespace": "shop",
                "resourceVersion": "4823050",
                "uid": "5f0c1b7e-3a2d-4c1e-9b8a-7d6e5f4c3b2a",
            },
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "standard",
            "volumeMode": "Filesystem",
            "vsphereVolume": {"fsType": "ext4", "volumePath": VOLUME_PATH},
        },
        "status": {"phase": "Bound"},
    }


@pytest.fixture
def pvc() -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "annotations": {
                "pv.kubernetes.io/bind-completed": "yes",
                "pv.kubernetes.io/bound-by-controller": "yes",
                "volume.beta.kubernetes.io/storage-provisioner": INTREE_PROVISIONER,
                "volume.kubernetes.io/storage-provisioner": CSI_DRIVER,
                "team.example.com/owner": "checkout",
            },
            "creationTimestamp": "2023-03-14T09:26:50Z",
            "finalizers": ["kubernetes.io/pvc-protection"],
            "labels": {"app": "web"},
            "name": "data-web-0",
            "namespace": "shop",
            "resourceVersion": "4823050",
            "uid": "5f0c1b7e-3a2d-4c1e-9b8a-7d6e5f4c3b2a",
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "10Gi"}},
            "storageClassName": "standard",
            "volumeMode": "Filesystem",
            "volumeName": PV_NAME,
        },
        "status": {
            "accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": "10Gi"},
            "phase": "Bound",
        },
    }


@pytest.fixture
def pod() -> Obj:
    token_volume = {
        "name": "kube-api-access-x7k2p",
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt"}]}},
            ],
        },
    }
    token_mount = {
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "name": "kube-api-access-x7k2p",
        "readOnly": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": {"prometheus.io/scrape": "true"},
            "creationTimestamp": "2024-01-02T10:00:00Z",
            "generateName": "web-",
            "labels": {
                "app": "web",
                "apps.kubernetes.io/pod-index": "0",
                "controller-revision-hash": "web-6d4b9f7c8",
                "statefulset.kubernetes.io/pod-name": "web-0",
            },
            "name": "web-0",
            "namespace": "shop",
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "blockOwnerDeletion": True,
                    "controller": True,
                    "kind": "StatefulSet",
                    "name": "web",
                    "uid": "1b2c3d4e-5f60-4718-92a3-b4c5d6e7f809",
                }
            ],
            "resourceVersion": "5100200",
            "uid": "7e6d5c4b-3a29-4817-a6b5-c4d3e2f1a0b9",
        },
        "spec": {
            "containers": [
                {
                    "image": "nginx:1.25",
                    "name": "nginx",
                    "volumeMounts": [
                        {"mountPath": "/usr/share/nginx/html", "name": "data"},
                        copy.deepcopy(token_mount),
                    ],
                },
                {
                    "image": "busybox:1.36",
                    "name": "sidecar",
                    "volumeMounts": [copy.deepcopy(token_mount)],
                },
            ],
            "ephemeralContainers": [{"image": "busybox:1.36", "name": "debugger-abcde"}],
            "hostname": "web-0",
            "initContainers": [
                {
                    "image": "busybox:1.36",
                    "name": "init-perms",
                    "volumeMounts": [
                        {"mountPath": "/data", "name": "data"},
                        copy.deepcopy(token_mount),
                    ],
                }
            ],
            "nodeName": "user-cluster-1-pool-1-7c9d8b-x2k4m",
            "serviceAccountName": "default",
            "subdomain": "web",
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
                token_volume,
            ],
        },
        "status": {"phase": "Running", "podIP": "192.168.3.17"},
    }


@pytest.fixture
def statefulset() -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "creationTimestamp": "2023-03-14T09:26:49Z",
            "generation": 3,
            "labels": {"app": "web"},
            "name": "web",
            "namespace": "shop",
            "ownerReferences": [
                {
                    "apiVersion": "shop.example.com/v1",
                    "blockOwnerDeletion": True,
                    "controller": True,
                    "kind": "WebShop",
                    "name": "main",
                    "uid": "aa11bb22-cc33-4d44-8e55-ff6677889900",
                }
            ],
            "resourceVersion": "5100000",
            "uid": "1b2c3d4e-5f60-4718-92a3-b4c5d6e7f809",
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "serviceName": "web",
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"image": "nginx:1.25", "name": "nginx"}]},
            },
            "volumeClaimTemplates": [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"creationTimestamp": None, "name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "10Gi"}},
                        "storageClassName": "standard",
                        "volumeMode": "Filesystem",
                    },
                    "status": {"phase": "Pending"},
                },
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {
                        "annotations": {"volume.beta.kubernetes.io/storage-class": "standard"},
                        "name": "logs",
                    },
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                    "status": {"phase": "Pending"},
                },
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "cache"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "2Gi"}},
                        "storageClassName": CSI_CLASS,
                    },
                    "status": {"phase": "Pending"},
                },
            ],
        },
        "status": {"availableReplicas": 3, "readyReplicas": 3, "replicas": 3},
    }


def _containers(obj: Any) -> Iterator[Any]:
    """Every dict and list inside obj, obj included."""
    if isinstance(obj, dict):
        yield obj
        for value in obj.values():
            yield from _containers(value)
    elif isinstance(obj, list):
        yield obj
        for value in obj:
            yield from _containers(value)


def assert_pure(call: Callable[[], Obj], *inputs: Obj) -> Obj:
    """Run call; check it changed none of inputs and shares no dict or list with them."""
    before = copy.deepcopy(inputs)
    result = call()
    assert inputs == before, "the input was mutated"
    input_ids = {id(c) for obj in inputs for c in _containers(obj)}
    shared = [c for c in _containers(result) if id(c) in input_ids]
    assert not shared, f"the result shares objects with the input: {shared[:3]}"
    return result


def test_dropped_annotations_are_the_intree_and_binding_ones() -> None:
    assert (
        frozenset(
            {
                "pv.kubernetes.io/migrated-to",
                "pv.kubernetes.io/provisioned-by",
                "volume.beta.kubernetes.io/storage-provisioner",
                "volume.kubernetes.io/storage-provisioner",
                "pv.kubernetes.io/bind-completed",
                "pv.kubernetes.io/bound-by-controller",
                "kubernetes.io/createdby",
            }
        )
        == DROPPED_ANNOTATIONS
    )
    assert (CSI_DRIVER, INTREE_PROVISIONER) == (
        "csi.vsphere.vmware.com",
        "kubernetes.io/vsphere-volume",
    )


# strip_server_fields


@pytest.mark.parametrize(
    "field",
    [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ],
)
def test_strip_server_fields_removes_each_server_field(field: str, intree_pv: Obj) -> None:
    intree_pv["metadata"][field] = "set-by-server"
    stripped = assert_pure(lambda: strip_server_fields(intree_pv), intree_pv)
    assert field not in stripped["metadata"]


def test_strip_server_fields_keeps_the_rest_and_drops_status(intree_pv: Obj) -> None:
    stripped = assert_pure(lambda: strip_server_fields(intree_pv), intree_pv)
    assert "status" not in stripped
    assert stripped["metadata"] == {
        "annotations": intree_pv["metadata"]["annotations"],
        "finalizers": intree_pv["metadata"]["finalizers"],
        "labels": intree_pv["metadata"]["labels"],
        "name": PV_NAME,
    }
    assert stripped["spec"] == intree_pv["spec"]
    assert (stripped["apiVersion"], stripped["kind"]) == ("v1", "PersistentVolume")


def test_strip_server_fields_without_metadata() -> None:
    assert strip_server_fields({"kind": "Thing", "status": {}}) == {"kind": "Thing"}


# is_intree_vsphere_pv / is_csi_vsphere_pv


@pytest.mark.parametrize(
    ("spec", "intree", "csi"),
    [
        ({"vsphereVolume": {"volumePath": VOLUME_PATH}}, True, False),
        ({"csi": {"driver": CSI_DRIVER, "volumeHandle": FCD_ID}}, False, True),
        ({"csi": {"driver": "pd.csi.storage.gke.io", "volumeHandle": "x"}}, False, False),
        ({"nfs": {"server": "nfs.example.com", "path": "/export"}}, False, False),
        ({}, False, False),
    ],
)
def test_pv_kind_predicates(spec: Obj, intree: bool, csi: bool) -> None:
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "p"}, "spec": spec}
    assert is_intree_vsphere_pv(pv) is intree
    assert is_csi_vsphere_pv(pv) is csi


def test_pv_kind_predicates_on_the_fixture(intree_pv: Obj) -> None:
    assert is_intree_vsphere_pv(intree_pv)
    assert not is_csi_vsphere_pv(intree_pv)
    assert not is_intree_vsphere_pv({"metadata": {"name": "no-spec"}})


# parse_datastore_path / datastore_name


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("[ds] kubevols/x.vmdk", ("ds", "kubevols/x.vmdk")),
        (VOLUME_PATH, ("ds-1", VOLUME_PATH.split("] ", 1)[1])),
        ("[folder/ds] a/b.vmdk", ("folder/ds", "a/b.vmdk")),
        (
            "[vsanDatastore] 6b2a3c5e-0d1f-4e2a/disk-1.vmdk",
            ("vsanDatastore", "6b2a3c5e-0d1f-4e2a/disk-1.vmdk"),
        ),
        (
            "[Shared Storage 01] kube vols/my disk.vmdk",
            ("Shared Storage 01", "kube vols/my disk.vmdk"),
        ),
        ("[ds]kubevols/x.vmdk", ("ds", "kubevols/x.vmdk")),
        ("[ds] x.vmdk", ("ds", "x.vmdk")),
    ],
)
def test_parse_datastore_path(path: str, expected: tuple[str, str]) -> None:
    assert parse_datastore_path(path) == expected


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "not a vSphere datastore path"),
        ("kubevols/x.vmdk", "not a vSphere datastore path"),
        ("ds] kubevols/x.vmdk", "not a vSphere datastore path"),
        ("[ds kubevols/x.vmdk", "not a vSphere datastore path"),
        ("[] kubevols/x.vmdk", "names no datastore"),
        ("[ds] ", "no file path"),
        ("[ds]", "no file path"),
        ("[ds] kubevols/x.txt", "does not name a .vmdk"),
        ("[ds] kubevols/x.vmdk/", "does not name a .vmdk"),
        ("[ds] kubevols/.vmdk", "does not name a .vmdk"),
        ("[ds] kubevols", "does not name a .vmdk"),
    ],
)
def test_parse_datastore_path_rejects(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_datastore_path(path)


@pytest.mark.parametrize(
    ("bracket", "expected"),
    [("ds", "ds"), ("folder/ds", "ds"), ("dc-folder/cluster-a/ds-2", "ds-2"), (" ds ", "ds")],
)
def test_datastore_name(bracket: str, expected: str) -> None:
    assert datastore_name(bracket) == expected


@pytest.mark.parametrize("bracket", ["", "folder/", "  "])
def test_datastore_name_rejects_empty(bracket: str) -> None:
    with pytest.raises(ValueError, match="no datastore name"):
        datastore_name(bracket)


# datastore_url


@pytest.mark.parametrize(
    ("host", "dc", "path", "expected"),
    [
        (
            "vcenter.example.com",
            "dc-1",
            "[ds-1] kubevols/x.vmdk",
            "https://vcenter.example.com/folder/kubevols/x.vmdk?dcPath=dc-1&dsName=ds-1",
        ),
        (
            "127.0.0.1:8989",
            "DC0",
            "[LocalDS_0] kubevols/x.vmdk",
            "https://127.0.0.1:8989/folder/kubevols/x.vmdk?dcPath=DC0&dsName=LocalDS_0",
        ),
        (
            "vc.example.com",
            "Lab Folder/DC 1",
            "[storage/Shared DS] kube vols/a&b#1.vmdk",
            "https://vc.example.com/folder/kube%20vols/a%26b%231.vmdk?dcPath=Lab%20Folder%2FDC%201&dsName=Shared%20DS",
        ),
    ],
)
def test_datastore_url(host: str, dc: str, path: str, expected: str) -> None:
    assert paths.datastore_url(host, dc, *paths.split(path)) == expected


def test_a_path_without_its_brackets_is_no_datastore_path() -> None:
    with pytest.raises(ValueError, match="not a vSphere datastore path"):
        paths.split("ds/x.vmdk")


# csi_pv_from_intree


def test_csi_pv_from_intree(intree_pv: Obj, pvc: Obj) -> None:
    new = assert_pure(lambda: csi_pv_from_intree(intree_pv, FCD_ID, CSI_CLASS, pvc), intree_pv, pvc)
    assert new == {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": PV_NAME,
            "labels": {"app": "web", "tier": "storage"},
            "annotations": {
                "backup.example.com/policy": "nightly",
                "pv.kubernetes.io/provisioned-by": CSI_DRIVER,
            },
        },
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Filesystem",
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": CSI_CLASS,
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": "shop",
                "name": "data-web-0",
            },
            "csi": {
                "driver": CSI_DRIVER,
                "volumeHandle": FCD_ID,
                "fsType": "ext4",
                "volumeAttributes": {"type": "vSphere CNS Block Volume"},
            },
        },
    }


@pytest.mark.parametrize(("fs_type", "expected"), [("xfs", "xfs"), ("", "ext4"), (None, "ext4")])
def test_csi_pv_fs_type(intree_pv: Obj, pvc: Obj, fs_type: str | None, expected: str) -> None:
    if fs_type is None:
        del intree_pv["spec"]["vsphereVolume"]["fsType"]
    else:
        intree_pv["spec"]["vsphereVolume"]["fsType"] = fs_type
    new = csi_pv_from_intree(intree_pv, FCD_ID, CSI_CLASS, pvc)
    assert new["spec"]["csi"]["fsType"] == expected


def test_csi_pv_copies_optional_fields_when_present(intree_pv: Obj, pvc: Obj) -> None:
    affinity = {
        "required": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {
                            "key": "topology.kubernetes.io/zone",
                            "operator": "In",
                            "values": ["zone-a"],
                        }
                    ]
                }
            ]
        }
    }
    intree_pv["spec"]["nodeAffinity"] = affinity
    intree_pv["spec"]["mountOptions"] = ["noatime"]
    intree_pv["spec"]["volumeMode"] = "Block"
    new = assert_pure(lambda: csi_pv_from_intree(intree_pv, FCD_ID, CSI_CLASS, pvc), intree_pv, pvc)
    assert new["spec"]["nodeAffinity"] == affinity
    assert new["spec"]["mountOptions"] == ["noatime"]
    assert new["spec"]["volumeMode"] == "Block"
    assert "fsType" not in new["spec"]["csi"], "a raw block volume has no filesystem"


@pytest.mark.parametrize("mode", ["ReadWriteMany", "ReadOnlyMany"])
def test_csi_pv_refuses_file_volume_access_modes(intree_pv: Obj, pvc: Obj, mode: str) -> None:
    intree_pv["spec"]["accessModes"] = ["ReadWriteOnce", mode]
    with pytest.raises(ValueError, match=mode):
        csi_pv_from_intree(intree_pv, FCD_ID, CSI_CLASS, pvc)


def test_csi_pv_defaults_and_omissions(intree_pv: Obj, pvc: Obj) -> None:
    del intree_pv["spec"]["volumeMode"]
    del intree_pv["metadata"]["labels"]
    intree_pv["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"] = "standard"
    intree_pv["spec"]["persistentVolumeReclaimPolicy"] = "Recycle"
    new = csi_pv_from_intree(intree_pv, FCD_ID, CSI_CLASS, pvc)
    assert new["spec"]["volumeMode"] == "Filesystem"
    assert new["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert "labels" not in new["metadata"]
    assert "finalizers" not in new["metadata"]
    assert not {"nodeAffinity", "mountOptions", "vsphereVolume"} & set(new["spec"])
    # The binder reads the beta annotation before storageClassName: it must not survive.
    assert "volume.beta.kubernetes.io/storage-class" not in new["metadata"]["annotations"]


def test_csi_pv_claims_the_given_pvc_by_name_only(intree_pv: Obj, pvc: Obj) -> None:
    pvc["metadata"]["name"] = "logs-web-0"
    pvc["metadata"]["namespace"] = "other"
    claim_ref = csi_pv_from_intree(intree_pv, FCD_ID, CSI_CLASS, pvc)["spec"]["claimRef"]
    assert claim_ref == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "other",
        "name": "logs-web-0",
    }


@pytest.mark.parametrize(
    ("change", "fcd_id", "csi_class", "message"),
    [
        (None, "", CSI_CLASS, "FCD id"),
        (None, VOLUME_PATH, CSI_CLASS, "disk path"),
        (None, "kubevols/x.VMDK", CSI_CLASS, "disk path"),
        (None, FCD_ID, "", "CSI StorageClass"),
        ("csi-pv", FCD_ID, CSI_CLASS, "not an in-tree vSphere volume"),
        ("pvc-namespace", FCD_ID, CSI_CLASS, "PVC namespace"),
        ("pvc-name", FCD_ID, CSI_CLASS, "PVC name"),
    ],
)
def test_csi_pv_from_intree_rejects(
    intree_pv: Obj, pvc: Obj, change: str | None, fcd_id: str, csi_class: str, message: str
) -> None:
    if change == "csi-pv":
        del intree_pv["spec"]["vsphereVolume"]
        intree_pv["spec"]["csi"] = {"driver": CSI_DRIVER, "volumeHandle": FCD_ID}
    elif change == "pvc-namespace":
        del pvc["metadata"]["namespace"]
    elif change == "pvc-name":
        del pvc["metadata"]["name"]
    before = copy.deepcopy((intree_pv, pvc))
    with pytest.raises(ValueError, match=message):
        csi_pv_from_intree(intree_pv, fcd_id, csi_class, pvc)
    assert (intree_pv, pvc) == before


# recreated_pvc


def test_recreated_pvc(pvc: Obj) -> None:
    new = assert_pure(lambda: recreated_pvc(pvc, PV_NAME, CSI_CLASS), pvc)
    assert new == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "data-web-0",
            "namespace": "shop",
            "labels": {"app": "web"},
            "annotations": {"team.example.com/owner": "checkout"},
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "10Gi"}},
            "volumeMode": "Filesystem",
            "volumeName": PV_NAME,
            "storageClassName": CSI_CLASS,
        },
    }


def test_recreated_pvc_drops_what_would_get_in_the_way(pvc: Obj) -> None:
    meta, spec = pvc["metadata"], pvc["spec"]
    meta["annotations"] = {"volume.beta.kubernetes.io/storage-class": "standard"}
    meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "1b2c3d4e"}]
    spec["selector"] = {"matchLabels": {"release": "stable"}}
    spec["dataSource"] = {"kind": "PersistentVolumeClaim", "name": "seed"}
    spec["dataSourceRef"] = {"kind": "PersistentVolumeClaim", "name": "seed"}
    spec["resources"]["limits"] = {"storage": "20Gi"}
    del spec["volumeMode"]
    new = assert_pure(lambda: recreated_pvc(pvc, "pv-new", "csi-fast"), pvc)
    assert set(new["metadata"]) == {"name", "namespace", "labels"}
    assert set(new["spec"]) == {
        "accessModes",
        "resources",
        "volumeMode",
        "volumeName",
        "storageClassName",
    }
    assert new["spec"]["resources"] == {
        "requests": {"storage": "10Gi"},
        "limits": {"storage": "20Gi"},
    }
    assert new["spec"]["volumeMode"] == "Filesystem"
    assert (new["spec"]["volumeName"], new["spec"]["storageClassName"]) == ("pv-new", "csi-fast")


@pytest.mark.parametrize(
    ("pv_name", "csi_class", "message"),
    [("", CSI_CLASS, "PV name"), (PV_NAME, "", "CSI StorageClass")],
)
def test_recreated_pvc_rejects(pvc: Obj, pv_name: str, csi_class: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        recreated_pvc(pvc, pv_name, csi_class)


# pod_for_recreate


def test_pod_for_recreate(pod: Obj) -> None:
    new = assert_pure(lambda: pod_for_recreate(pod), pod)
    meta, spec = new["metadata"], new["spec"]
    assert "status" not in new
    assert not {"uid", "resourceVersion", "creationTimestamp", "ownerReferences"} & set(meta)
    assert meta["labels"] == pod["metadata"]["labels"]
    assert meta["labels"]["controller-revision-hash"] == "web-6d4b9f7c8"
    assert meta["annotations"] == {"prometheus.io/scrape": "true"}
    assert (meta["name"], meta["namespace"]) == ("web-0", "shop")
    assert "nodeName" not in spec
    assert "ephemeralContainers" not in spec
    assert spec["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}}]
    nginx, sidecar = spec["containers"]
    assert nginx["volumeMounts"] == [{"mountPath": "/usr/share/nginx/html", "name": "data"}]
    assert "volumeMounts" not in sidecar
    assert spec["initContainers"][0]["volumeMounts"] == [{"mountPath": "/data", "name": "data"}]
    assert (spec["hostname"], spec["subdomain"]) == ("web-0", "web")
    assert spec["serviceAccountName"] == "default"


def test_pod_for_recreate_keeps_other_volumes_with_similar_names(pod: Obj) -> None:
    # Only the injected volume goes: a user volume that merely mentions the name stays.
    pod["spec"]["volumes"].append({"name": "my-kube-api-access-x", "emptyDir": {}})
    pod["spec"]["containers"][0]["volumeMounts"].append({"mountPath": "/x", "name": "my-kube-api-access-x"})
    new = pod_for_recreate(pod)
    assert [v["name"] for v in new["spec"]["volumes"]] == ["data", "my-kube-api-access-x"]
    assert [m["name"] for m in new["spec"]["containers"][0]["volumeMounts"]] == [
        "data",
        "my-kube-api-access-x",
    ]


def test_pod_for_recreate_without_token_volume(pod: Obj) -> None:
    pod["spec"]["volumes"] = pod["spec"]["volumes"][:1]
    for kind in ("containers", "initContainers"):
        for container in pod["spec"][kind]:
            container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] == "data"]
    new = assert_pure(lambda: pod_for_recreate(pod), pod)
    expected = strip_server_fields(pod)
    del expected["metadata"]["ownerReferences"]
    del expected["spec"]["nodeName"]
    del expected["spec"]["ephemeralContainers"]
    assert new == expected


def _bare(pod: Obj, managers: list[Obj] | None) -> Obj:
    """The fixture as a bare pod (no controller), owned by a ConfigMap for garbage collection,
    with these managedFields (None: none, as in a backup read back from the run's record)."""
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "tool-owner", "uid": "0c0c0c0c-1d1d-4e4e-8f8f-9a9a9a9a9a9a"}
    ]
    if managers is not None:
        pod["metadata"]["managedFields"] = managers
    return pod


PINNED_BY_KUBECTL = {
    "manager": "kubectl-create",
    "operation": "Update",
    "fieldsV1": {"f:spec": {"f:containers": {}, "f:nodeName": {}}},
}
STATUS_ONLY = [
    {"manager": "kube-scheduler", "operation": "Update", "subresource": "status", "fieldsV1": {"f:status": {}}},
    {"manager": "kwok", "operation": "Update", "subresource": "status", "fieldsV1": {"f:status": {}}},
]
SCHEDULED = [{"manager": "kubectl-create", "operation": "Update", "fieldsV1": {"f:spec": {"f:containers": {}}}}]
SCHEDULED += STATUS_ONLY


def test_pod_for_recreate_keeps_the_owner_references_that_are_not_a_controller_s(pod: Obj) -> None:
    # A StatefulSet's pod owned by a custom object too: only the StatefulSet's reference goes.
    other = {
        "apiVersion": "example.com/v1",
        "kind": "Backup",
        "name": "nightly",
        "uid": "u-1",
        "blockOwnerDeletion": True,
    }
    pod["metadata"]["ownerReferences"].append(other)
    new = assert_pure(lambda: pod_for_recreate(pod), pod)
    # blockOwnerDeletion goes: it needs update on the owner's finalizers where
    # OwnerReferencesPermissionEnforcement is on, a 403 found only after the claim moved.
    assert new["metadata"]["ownerReferences"] == [{k: v for k, v in other.items() if k != "blockOwnerDeletion"}]
    # A bare pod's reference to a ConfigMap (not a controller) is kept as it was.
    bare = _bare(pod, SCHEDULED)
    assert pod_for_recreate(bare, bare=True)["metadata"]["ownerReferences"] == bare["metadata"]["ownerReferences"]


@pytest.mark.parametrize(
    ("managers", "bare", "kept"),
    [
        ([PINNED_BY_KUBECTL, *STATUS_ONLY], True, True),  # the user pinned the bare pod
        ([PINNED_BY_KUBECTL, *STATUS_ONLY], False, True),  # a StatefulSet's template pins its pods
        (SCHEDULED, True, False),  # the scheduler chose: it chooses again
        (SCHEDULED, False, False),
        (None, True, True),  # cannot tell: a bare pod comes back where it ran
        (None, False, False),  # cannot tell: a StatefulSet's pod is placed by the scheduler, as before
    ],
)
def test_pod_for_recreate_keeps_a_node_name_a_client_wrote(
    pod: Obj, managers: list[Obj] | None, bare: bool, kept: bool
) -> None:
    pod = _bare(pod, managers) if bare else pod
    if managers is not None:
        pod["metadata"]["managedFields"] = managers
    new = assert_pure(lambda: pod_for_recreate(pod, bare=bare), pod)
    assert new["spec"].get("nodeName") == ("user-cluster-1-pool-1-7c9d8b-x2k4m" if kept else None)
    assert "managedFields" not in new["metadata"]


# statefulset_for_recreate


def test_statefulset_for_recreate(statefulset: Obj) -> None:
    new = assert_pure(lambda: statefulset_for_recreate(statefulset, CSI_CLASS, {"data", "logs"}), statefulset)
    assert "status" not in new
    assert not {"uid", "resourceVersion", "creationTimestamp", "generation"} & set(new["metadata"])
    assert new["metadata"]["ownerReferences"] == statefulset["metadata"]["ownerReferences"]
    assert new["spec"]["template"] == statefulset["spec"]["template"]
    data, logs, cache = new["spec"]["volumeClaimTemplates"]
    old_data_spec = statefulset["spec"]["volumeClaimTemplates"][0]["spec"]
    assert data["spec"] == {**old_data_spec, "storageClassName": CSI_CLASS}
    assert "status" not in data
    assert logs["metadata"] == {"name": "logs"}
    assert logs["spec"]["storageClassName"] == CSI_CLASS
    assert "status" not in logs
    assert cache == statefulset["spec"]["volumeClaimTemplates"][2]
    assert [storage_class_of_template(t) for t in (data, logs, cache)] == [CSI_CLASS] * 3


def test_statefulset_for_recreate_only_named_templates(statefulset: Obj) -> None:
    new = statefulset_for_recreate(statefulset, "csi-fast", {"logs"})
    data, logs, _ = new["spec"]["volumeClaimTemplates"]
    assert data == statefulset["spec"]["volumeClaimTemplates"][0]
    assert storage_class_of_template(logs) == "csi-fast"


def test_statefulset_for_recreate_keeps_other_annotations(statefulset: Obj) -> None:
    logs = statefulset["spec"]["volumeClaimTemplates"][1]
    logs["metadata"]["annotations"]["example.com/keep"] = "yes"
    new = statefulset_for_recreate(statefulset, CSI_CLASS, {"logs"})
    new_logs = new["spec"]["volumeClaimTemplates"][1]
    assert new_logs["metadata"]["annotations"] == {"example.com/keep": "yes"}


@pytest.mark.parametrize(
    ("csi_class", "templates", "message"),
    [(CSI_CLASS, {"data", "dta"}, r"no volumeClaimTemplates \['dta'\]"), ("", {"data"}, "CSI")],
)
def test_statefulset_for_recreate_rejects(statefulset: Obj, csi_class: str, templates: set[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        statefulset_for_recreate(statefulset, csi_class, templates)


# pvc_name / ordinal_of


@pytest.mark.parametrize(
    ("template", "sts", "ordinal", "name"),
    [
        ("data", "web", 0, "data-web-0"),
        ("data", "web-2", 0, "data-web-2-0"),
        ("www", "db", 12, "www-db-12"),
    ],
)
def test_pvc_name_and_back(template: str, sts: str, ordinal: int, name: str) -> None:
    assert pvc_name(template, sts, ordinal) == name
    assert ordinal_of(name, template, sts) == ordinal


@pytest.mark.parametrize(
    ("name", "template", "sts", "expected"),
    [
        ("data-web-2", "data", "web", 2),
        ("data-web-2-0", "data", "web", None),  # belongs to StatefulSet "web-2"
        ("data-web-2-0", "data", "web-2", 0),
        ("data-web-", "data", "web", None),
        ("data-web", "data", "web", None),
        ("data-web-01", "data", "web", None),
        ("data-web--1", "data", "web", None),
        ("data-web-1a", "data", "web", None),
        ("data-web-\u00b2", "data", "web", None),
        ("data-web-\u0661", "data", "web", None),
        ("logs-web-0", "data", "web", None),
        ("xdata-web-0", "data", "web", None),
        ("data-webx-0", "data", "web", None),
    ],
)
def test_ordinal_of(name: str, template: str, sts: str, expected: int | None) -> None:
    assert ordinal_of(name, template, sts) == expected


# storage_class_of_template


@pytest.mark.parametrize(
    ("metadata", "spec", "expected"),
    [
        ({"name": "data"}, {"storageClassName": "standard"}, "standard"),
        (
            {"name": "data", "annotations": {translate.BETA_STORAGE_CLASS_ANNOTATION: "old"}},
            {},
            "old",
        ),
        (
            {"name": "data", "annotations": {translate.BETA_STORAGE_CLASS_ANNOTATION: "beta"}},
            {"storageClassName": "spec"},
            "beta",
        ),
        ({"name": "data", "annotations": {"other": "x"}}, {}, None),
        ({"name": "data"}, {"storageClassName": ""}, ""),
        ({"name": "data"}, {}, None),
    ],
)
def test_storage_class_of_template(metadata: Obj, spec: Obj, expected: str | None) -> None:
    assert storage_class_of_template({"metadata": metadata, "spec": spec}) == expected


def test_storage_class_of_template_fixture(statefulset: Obj) -> None:
    templates = statefulset["spec"]["volumeClaimTemplates"]
    assert [storage_class_of_template(t) for t in templates] == ["standard", "standard", CSI_CLASS]


# topology and storage policy

DRIVER_KEYS = ("topology.kubernetes.io/region", "topology.kubernetes.io/zone")
BETA_ZONE, BETA_REGION = "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region"


def _affinity(*expressions: tuple[str, list[str]]) -> Obj:
    terms = [{"matchExpressions": [{"key": k, "operator": "In", "values": v} for k, v in expressions]}]
    return {"required": {"nodeSelectorTerms": terms}}


def test_driver_topology_keys_come_from_the_vsphere_node_plugin_only() -> None:
    nodes = [
        {"spec": {"drivers": [{"name": CSI_DRIVER, "topologyKeys": ["topology.kubernetes.io/zone"]}]}},
        {"spec": {"drivers": [{"name": "other.csi", "topologyKeys": ["other/zone"]}, {"name": CSI_DRIVER}]}},
        {"spec": {}},
    ]
    assert translate.driver_topology_keys(nodes) == ("topology.kubernetes.io/zone",)
    assert translate.driver_topology_keys([]) == ()


def test_beta_zone_labels_become_the_drivers_node_affinity(intree_pv: Obj, pvc: Obj) -> None:
    intree_pv["metadata"]["labels"] = {BETA_ZONE: "zone-a", BETA_REGION: "region-1"}
    new = csi_pv_from_intree(intree_pv, FCD_ID, CSI_CLASS, pvc, DRIVER_KEYS)
    assert new["spec"]["nodeAffinity"] == _affinity(
        ("topology.kubernetes.io/region", ["region-1"]), ("topology.kubernetes.io/zone", ["zone-a"])
    )
    assert new["metadata"]["labels"][BETA_ZONE] == "zone-a"  # labels are kept as they were


def test_in_tree_affinity_keys_are_rewritten_and_other_expressions_kept(intree_pv: Obj, pvc: Obj) -> None:
    intree_pv["spec"]["nodeAffinity"] = _affinity((BETA_ZONE, ["zone-b", "zone-a"]), ("disktype", ["ssd"]))
    new = assert_pure(lambda: csi_pv_from_intree(intree_pv, FCD_ID, CSI_CLASS, pvc, DRIVER_KEYS), intree_pv, pvc)
    assert new["spec"]["nodeAffinity"] == _affinity(
        ("disktype", ["ssd"]), ("topology.kubernetes.io/zone", ["zone-a", "zone-b"])
    )


def test_without_driver_topology_the_affinity_is_kept_as_it_was(intree_pv: Obj, pvc: Obj) -> None:
    intree_pv["spec"]["nodeAffinity"] = _affinity((BETA_ZONE, ["zone-a"]))
    assert csi_pv_from_intree(intree_pv, FCD_ID, CSI_CLASS, pvc)["spec"]["nodeAffinity"] == _affinity(
        (BETA_ZONE, ["zone-a"])
    )
    intree_pv["spec"].pop("nodeAffinity")
    intree_pv["metadata"]["labels"] = {BETA_ZONE: "zone-a"}
    assert "nodeAffinity" not in csi_pv_from_intree(intree_pv, FCD_ID, CSI_CLASS, pvc)["spec"]


def test_storage_policy_is_kept_as_a_volume_attribute(intree_pv: Obj, pvc: Obj) -> None:
    intree_pv["spec"]["vsphereVolume"]["storagePolicyName"] = "gold"
    attributes = csi_pv_from_intree(intree_pv, FCD_ID, CSI_CLASS, pvc)["spec"]["csi"]["volumeAttributes"]
    assert attributes == {"type": "vSphere CNS Block Volume", "storagepolicyname": "gold"}
