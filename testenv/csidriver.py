"""The real vSphere CSI driver in the test environment.

The controller (`vsphere-csi`, controller mode), the syncer and the CSI sidecars (attacher,
provisioner, resizer, snapshotter) run as processes beside the control plane, the sidecars on
the controller's unix socket, plus the snapshot-controller. What a cluster admin installs from the
driver's vanilla manifest (namespace, CSIDriver, the controller's ServiceAccount and RBAC, the
feature-state ConfigMap) is read from that manifest in the unpacked release source and applied as
it is, and each container's arguments and environment come from the manifest's Deployment, so the
processes run as the driver's own install would run them: with the controller ServiceAccount's
token (RBAC as shipped), with leader election as shipped (its Leases are how a user can tell
the controller is alive), and with local paths for the socket and the config file. Nodes are
kwok's: there is no node plugin; testenv writes each node's CSINode with the ID the controller
resolves to the node's VM (the VM's UUID).
"""

from __future__ import annotations

import base64
import json
import shlex
import time
from pathlib import Path
from typing import Any

import yaml

from testenv import build as build_mod
from testenv import cluster

NAMESPACE = "vmware-system-csi"
CONTROLLER_SA = "vsphere-csi-controller"
# In v3.7.3, CSI migration, online expansion and snapshots are released features, on whatever the
# feature-state ConfigMap says: the manifest's ConfigMap is applied as it is.

# The manifest's containers, and which binary of the build runs each one.
CONTAINERS = {
    "vsphere-csi-controller": ("driver", "vsphere-csi"),
    "vsphere-syncer": ("driver", "syncer"),
    "csi-attacher": ("attacher", "csi-attacher"),
    "csi-provisioner": ("sidecars", "csi-provisioner"),
    "csi-resizer": ("sidecars", "csi-resizer"),
    "csi-snapshotter": ("sidecars", "csi-snapshotter"),
}
PROCESSES = (*CONTAINERS, "snapshot-controller")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def driver_manifest(bins: build_mod.Bin) -> list[dict[str, Any]]:
    return _docs(bins.driver_source / "manifests" / "vanilla" / "vsphere-csi-driver.yaml")


def csi_vsphere_conf(vcsim_port: int) -> str:
    """csi-vsphere.conf (gcfg: quoted values) for the simulator, as the driver's docs give it."""
    return (
        "[Global]\n"
        f'cluster-id = "{cluster.USER_CLUSTER}"\n'
        # Without it the syncer insists on an in-cluster configuration.
        'cluster-distribution = "testenv"\n'
        "\n"
        '[VirtualCenter "127.0.0.1"]\n'
        'insecure-flag = "true"\n'
        f'user = "{cluster.VC_USER}"\n'
        f'password = "{cluster.VC_PASSWORD}"\n'
        f'port = "{vcsim_port}"\n'
        f'datacenters = "{cluster.DATACENTER}"\n'
    )


def install_objects(bins: build_mod.Bin) -> list[dict[str, Any]]:
    """What an admin applies before the driver runs, from the driver's and the snapshotter's
    own manifests (the node plugin's parts left out: kwok nodes have no kubelet)."""
    docs = _docs(bins.driver_source / "manifests" / "vanilla" / "namespace.yaml")
    for doc in driver_manifest(bins):
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in ("Deployment", "DaemonSet", "Service") or "csi-node" in name:
            continue
        docs.append(doc)
    # The syncer creates this CRD, but the controller starts an informer on it at once.
    docs += _docs(bins.driver_source / "pkg/internalapis/csinodetopology/config/cns.vmware.com_csinodetopologies.yaml")
    for crd in sorted(bins.snapshot_crds.glob("*.yaml")):
        if crd.name != "kustomization.yaml":
            docs += _docs(crd)
    docs += _docs(bins.snapshot_controller_deploy / "rbac-snapshot-controller.yaml")
    return docs


def _deployment(bins: build_mod.Bin) -> dict[str, Any]:
    for doc in driver_manifest(bins):
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "vsphere-csi-controller":
            return doc
    raise SystemExit("testenv: the driver's vanilla manifest has no vsphere-csi-controller Deployment")


def _service_account_kubeconfig(env: cluster.Env, namespace: str, account: str) -> Path:
    """A kubeconfig holding a token of the ServiceAccount, as its pod would have mounted."""
    token = cluster.kubectl(env, "-n", namespace, "create", "token", account, "--duration=720h").strip()
    info = env.info()
    ca = base64.b64encode((env.pki / "ca.crt").read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "user",
                "cluster": {"server": f"https://127.0.0.1:{info['ports']['user']}", "certificate-authority-data": ca},
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "user", "context": {"cluster": "user", "user": account}}],
        "current-context": "user",
    }
    path = env.root / f"{account}.kubeconfig"
    cluster.write_private(path, json.dumps(config, indent=1))
    return path


def _resolve(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(f"$({key})", value)
    return text


def start(env: cluster.Env, bins: build_mod.Bin) -> None:
    """Start the controller, the syncer, the sidecars and the snapshot-controller."""
    info = env.info()
    # The controller and the syncer watch the config file's folder: keep it a folder of its own
    # (logs written beside it feed that watch in a loop).
    conf = env.root / "csi-config" / "csi-vsphere.conf"
    cluster.write_private(conf, csi_vsphere_conf(info["vcsim_port"]))
    socket = env.root / "csi" / "csi.sock"
    socket.parent.mkdir(mode=0o700, exist_ok=True)
    kubeconfig = _service_account_kubeconfig(env, NAMESPACE, CONTROLLER_SA)
    folders = {"driver": bins.driver, "attacher": bins.attacher, "sidecars": bins.sidecars}
    values = {"ADDRESS": str(socket), "CSI_NAMESPACE": NAMESPACE}
    overrides = {
        "CSI_ENDPOINT": f"unix://{socket}",
        "VSPHERE_CSI_CONFIG": str(conf),
        "KUBECONFIG": str(kubeconfig),
    }
    for container in _deployment(bins)["spec"]["template"]["spec"]["containers"]:
        name = container["name"]
        if name not in CONTAINERS:
            continue  # the liveness probe: nothing probes it here
        folder, binary = CONTAINERS[name]
        environ = {}
        for var in container.get("env", []):
            if "value" in var:
                environ[var["name"]] = _resolve(var["value"], values)
            elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                environ[var["name"]] = NAMESPACE
        environ.update({k: v for k, v in overrides.items() if k in environ or k == "KUBECONFIG"})
        args = [_resolve(a, values) for a in container.get("args", [])]
        if folder in ("attacher", "sidecars") or (folder == "driver" and _kubeconfig_flag_wins(bins.leg.driver)):
            args.append(f"--kubeconfig={kubeconfig}")
        if "--leader-election" in args:
            # Leader election as shipped; in a pod the namespace comes from the mounted token.
            args.append(f"--leader-election-namespace={NAMESPACE}")
        if name in ("csi-provisioner", "csi-resizer"):
            # These sidecars are newer than the ones the manifest names: on Kubernetes 1.34+ they
            # use VolumeAttributesClasses, which the manifest's ClusterRole does not grant.
            args.append("--feature-gates=VolumeAttributesClass=false")
        env.start(name, restarted(name, [str(folders[folder] / binary), *args]), env=environ)
    setup = _docs(bins.snapshot_controller_deploy / "setup-snapshot-controller.yaml")
    deploy = next(d for d in setup if d["kind"] == "Deployment")
    args = [a for a in deploy["spec"]["template"]["spec"]["containers"][0]["args"] if "leader-election" not in a]
    snapshot_kc = _service_account_kubeconfig(env, "kube-system", "snapshot-controller")
    argv = [str(bins.sidecars / "snapshot-controller"), *args, f"--kubeconfig={snapshot_kc}"]
    env.start("snapshot-controller", restarted("snapshot-controller", argv))


def _kubeconfig_flag_wins(driver: str) -> bool:
    """Up to v3.2 the driver's GetKubeConfig reads the `kubeconfig` flag (registered, empty, by
    controller-runtime 0.14's init) whenever it exists, over KUBECONFIG: a pod's in-cluster config
    follows, so outside a pod the flag must be given. From v3.3 an empty flag falls back to
    KUBECONFIG, as the manifests expect, and the flag is left out (as in the manifests)."""
    return tuple(int(p) for p in driver.split(".")[:2]) < (3, 3)


def restarted(name: str, argv: list[str]) -> list[str]:
    """`argv` under a shell loop that starts it again when it exits, as the kubelet restarts the
    containers of the driver's Deployment (restartPolicy Always). Each exit is logged: a crash of
    the real driver shows in `scripts/testenv logs NAME` and does not take the environment down
    for every later test."""
    loop = (
        f"while true; do {shlex.join(argv)}; code=$?; "
        f'echo "testenv: {name} exited with status $code; restarting it in 1s, as the kubelet would"; '
        "sleep 1; done"
    )
    return ["/bin/sh", "-c", loop]


def wait_ready(env: cluster.Env, timeout: float = 120) -> None:
    """Until the controller has connected to vCenter and created its CnsVSphereVolumeMigration
    CRD (it does so in its Init), and the syncer has created CSINodeTopology's."""
    deadline = time.monotonic() + timeout
    want = {"cnsvspherevolumemigrations.cns.vmware.com", "cnsvolumeoperationrequests.cns.vmware.com"}
    while time.monotonic() < deadline:
        for name in PROCESSES:
            cluster.check_alive(env, name)
        crds = {line.split("/", 1)[-1] for line in cluster.kubectl(env, "get", "crd", "-o", "name").split()}
        if want <= crds:
            return
        time.sleep(0.5)
    raise SystemExit(f"testenv: the vSphere CSI driver did not come up in {timeout:.0f}s; see `scripts/testenv logs`")
