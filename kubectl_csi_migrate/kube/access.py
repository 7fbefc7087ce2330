"""Which cluster to talk to, and secrets read from it.

Without `--cluster-name` the kubeconfig's cluster (current context, or `--context`) is the
target. With `--cluster-name USER_CLUSTER` the kubeconfig is a GKE on VMware ADMIN cluster's:
the user cluster's kubeconfig is read from a Secret there (known places tried in order, or the
one named by `--user-kubeconfig-secret NAMESPACE/NAME[:KEY]`) and not saved: its embedded
credentials live only in the client's private temporary folder while the command runs.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import yaml

from kubectl_csi_migrate.errors import PermanentError
from kubectl_csi_migrate.kube.client import Kube

# Where GKE on VMware keeps a user cluster's kubeconfig in the admin cluster: kubeception
# clusters hold it in the namespace named after the cluster. (Controlplane V2 clusters keep it
# elsewhere; name that place with --user-kubeconfig-secret.)
USER_KUBECONFIG_PLACES = (
    ("{cluster}", "admin", "admin.conf"),
    ("{cluster}", "{cluster}-kubeconfig", "value"),
    ("kube-system", "{cluster}-kubeconfig", "value"),
)

CSI_SECRET_PLACES = (
    ("vmware-system-csi", "vsphere-config-secret", "csi-vsphere.conf"),
    ("kube-system", "vsphere-config-secret", "csi-vsphere.conf"),
)


@dataclass(frozen=True)
class Target:
    kubeconfig: str | None = None
    context: str | None = None
    cluster_name: str | None = None
    user_kubeconfig_secret: str | None = None
    dry_run: str = "none"
    request_timeout: float | None = None


def parse_secret_ref(text: str, default_key: str = "admin.conf") -> tuple[str, str, str]:
    """NAMESPACE/NAME[:KEY] -> (namespace, name, key)."""
    ref, _, key = text.partition(":")
    namespace, _, name = ref.partition("/")
    if not namespace or not name:
        raise PermanentError(f"--user-kubeconfig-secret {text!r}: expected NAMESPACE/NAME[:KEY]")
    return namespace, name, key or default_key


def read_secret_key(kube: Kube, namespace: str, name: str, key: str) -> bytes | None:
    secret = kube.get("Secret", name, namespace)
    if secret is None:
        return None
    value = (secret.get("data") or {}).get(key)
    return base64.b64decode(value) if value else None


def connect(target: Target) -> Kube:
    kube = Kube.from_kubeconfig(target.kubeconfig, target.context, target.dry_run, target.request_timeout)
    if not target.cluster_name:
        return kube
    # The admin cluster is only read; mutations go to the user cluster.
    admin = Kube(kube.api, kube.info, "none", target.request_timeout)
    if target.user_kubeconfig_secret:
        places = [parse_secret_ref(target.user_kubeconfig_secret)]
    else:
        places = [
            (ns.format(cluster=target.cluster_name), n.format(cluster=target.cluster_name), k)
            for ns, n, k in USER_KUBECONFIG_PLACES
        ]
    tried = []
    for namespace, name, key in places:
        data = read_secret_key(admin, namespace, name, key)
        label = f"secret {namespace}/{name} key {key}"
        tried.append(label)
        if data is None:
            continue
        try:
            config = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise PermanentError(f"{label} in the admin cluster is not a kubeconfig") from exc
        if not isinstance(config, dict):
            raise PermanentError(f"{label} in the admin cluster is not a kubeconfig")
        user = Kube.from_kubeconfig_dict(config, label, target.dry_run, target.request_timeout)
        context = f"{kube.info.context}/{target.cluster_name}"
        return Kube(
            user.api,
            type(user.info)(context, user.info.server, user.info.namespace),
            target.dry_run,
            target.request_timeout,
        )
    raise PermanentError(
        f'no kubeconfig for user cluster "{target.cluster_name}" in the admin cluster '
        f"({kube.info.server}); tried: {'; '.join(tried)}. "
        "Name the right one with --user-kubeconfig-secret NAMESPACE/NAME[:KEY]"
    )


def csi_vsphere_conf_loader(kube: Kube) -> tuple[str, str] | None:
    """The vSphere CSI driver's csi-vsphere.conf from the target cluster, and where it was."""
    for namespace, name, key in CSI_SECRET_PLACES:
        data = read_secret_key(kube, namespace, name, key)
        if data is not None:
            return data.decode(), f"secret {namespace}/{name}"
    return None
