"""The standalone binary's entry point (PyInstaller freezes this script).

One executable serves the names kubectl looks for: run as `kubectl-csi_migrate` (krew's link)
or `kubectl-csi-migrate` it is the plugin; run through a link named
`kubectl_complete-csi_migrate`, or as `kubectl-csi-migrate __complete WORDS...`, it answers
kubectl's shell-completion requests (kubectl_csi_migrate/cli/complete.py).

`kubectl-csi-migrate __selftest` imports what the commands import only when they run (the
Kubernetes and vSphere clients), so a build can prove that PyInstaller collected them without a
cluster or a vCenter at hand (scripts/build-binary runs it).
"""

import os
import sys


def _selftest() -> int:
    import pkgutil

    import kubectl_csi_migrate

    # Every module of the package, and through them every lazily imported client module.
    for module in pkgutil.walk_packages(kubectl_csi_migrate.__path__, "kubectl_csi_migrate."):
        if not module.name.endswith(".__main__"):  # that one runs the command line
            __import__(module.name)
    from kubernetes import config  # noqa: F401
    from kubernetes.client.exceptions import ApiException  # noqa: F401
    from pyVmomi import vim, vmodl
    from pyVmomi.Security import ThumbprintMismatchException  # noqa: F401

    # Types that pyVmomi builds on first use, from its generated type tables.
    for name in (
        "vim.vslm.ID",
        "vim.host.DatastoreBrowser.SearchSpec",
        "vim.fault.NotFound",
        "vmodl.query.PropertyCollector",
    ):
        holder = {"vim": vim, "vmodl": vmodl}[name.split(".")[0]]
        for part in name.split(".")[1:]:
            holder = getattr(holder, part)
    print("selftest: ok")
    return 0


def _run() -> int:
    name = os.path.basename(sys.argv[0]).lower()
    if name.startswith("kubectl_complete-") or sys.argv[1:2] == ["__complete"]:
        from kubectl_csi_migrate.cli.complete import main as complete

        return complete(sys.argv[1:] if name.startswith("kubectl_complete-") else sys.argv[2:])
    if sys.argv[1:2] == ["__selftest"]:
        return _selftest()
    from kubectl_csi_migrate.cli.main import main

    return main()


if __name__ == "__main__":
    sys.exit(_run())
