"""Build (or find) the binaries of the test environment, cached outside the repository.

One multi-call binary (testenv/kube) holds etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kubectl; kwok, vcsim and krew (for the plugin's install test) are
`go install`ed at pinned versions. Each lands in `<cache>/<name>-<key>/`, where the key changes
with the pinned version (and, for our own module, with its sources), so a second build is a
lookup. `KUBEBUILDER_ASSETS` may name a folder that
already holds the control-plane binaries.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
KUBE_MODULE = HERE / "kube"
KWOK_VERSION = "v0.8.0"
# vcsim left the govmomi module for a nested one after v0.46, and the module proxy does not
# serve that nested module: v0.46.0 is the newest release whose module holds vcsim.
GOVMOMI_VERSION = "v0.46.0"
KREW_VERSION = "v0.4.3"
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


def kubernetes_version() -> str:
    """The k8s.io/kubernetes version that testenv/kube/go.mod pins."""
    match = re.search(r"^\s*k8s\.io/kubernetes (v[0-9.]+)\s*$", (KUBE_MODULE / "go.mod").read_text(), re.M)
    if not match:
        raise SystemExit("testenv/kube/go.mod does not require k8s.io/kubernetes")
    return match.group(1)


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kubectl-csi-migrate"
    return Path(os.environ.get("CSI_MIGRATE_TESTENV_CACHE", default))


@dataclass(frozen=True)
class Bin:
    """Where each binary of the environment is."""

    folder: Path
    kwok: Path
    kwok_stages: Path
    vcsim: Path
    krew: Path

    def path(self, name: str) -> Path:
        return self.folder / name


def _kube_key() -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((KUBE_MODULE / name).read_bytes())
    return f"kubernetes-{kubernetes_version()}-{digest.hexdigest()[:12]}"


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CGO_ENABLED", "0")
    env["GOFLAGS"] = "-buildvcs=false -modcacherw"
    return env


def _kube_command(out: Path) -> list[str]:
    version = kubernetes_version()
    major, minor = version.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    ldflags = [
        "-s",
        "-w",
        f"-X {pkg}.gitVersion={version}",
        f"-X {pkg}.gitMajor={major}",
        f"-X {pkg}.gitMinor={minor}",
        f"-X {pkg}.gitTreeState=clean",
        f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
    ]
    return ["go", "build", "-trimpath", "-ldflags", " ".join(ldflags), "-o", str(out / "kube"), "."]


def _assets_from_env() -> Path | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        return None
    folder = Path(assets)
    missing = [n for n in CONTROL_PLANE if not os.access(folder / n, os.X_OK)]
    if missing:
        print(f"testenv: KUBEBUILDER_ASSETS={folder} lacks {', '.join(missing)}; building them")
        return None
    return folder


def build(verbose: bool = True) -> Bin:
    """Build whatever is not cached yet, the builds running side by side; return the paths."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[str, Path, list[str], Path | None]] = []  # name, final dir, command, cwd

    kube_dir = _assets_from_env() or root / _kube_key()
    if not (kube_dir / "kube-apiserver").exists():
        jobs.append(("kubernetes", kube_dir, _kube_command(kube_dir.with_suffix(".tmp")), KUBE_MODULE))
    kwok_dir = root / f"kwok-{KWOK_VERSION}"
    if not (kwok_dir / "kwok").exists():
        jobs.append(("kwok", kwok_dir, ["go", "install", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"], None))
    vcsim_dir = root / f"govmomi-{GOVMOMI_VERSION}"
    if not (vcsim_dir / "vcsim").exists():
        jobs.append(
            (
                "vcsim",
                vcsim_dir,
                ["go", "install", f"github.com/vmware/govmomi/vcsim@{GOVMOMI_VERSION}"],
                None,
            )
        )
    krew_dir = root / f"krew-{KREW_VERSION}"
    if not (krew_dir / "krew").exists():
        jobs.append(("krew", krew_dir, ["go", "install", f"sigs.k8s.io/krew/cmd/krew@{KREW_VERSION}"], None))

    running = []
    for name, final, command, cwd in jobs:
        tmp = final.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        env = _go_env()
        env["GOBIN"] = str(tmp)
        log = open(root / f"build-{name}.log", "w")  # noqa: SIM115 - closed below
        if verbose:
            print(f"testenv: building {name} (log: {log.name})", flush=True)
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        running.append((name, final, tmp, proc, log, time.monotonic()))

    failed = []
    for name, final, tmp, proc, log, started in running:
        code = proc.wait()
        log.close()
        if code != 0:
            failed.append(name)
            print(f"testenv: building {name} failed; the end of {log.name}:", file=sys.stderr)
            print("".join(Path(log.name).read_text().splitlines(True)[-30:]), file=sys.stderr)
            continue
        if name == "kubernetes":
            for link in CONTROL_PLANE:
                (tmp / link).symlink_to("kube")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if verbose:
            print(f"testenv: built {name} in {time.monotonic() - started:.0f}s", flush=True)
    if failed:
        raise SystemExit(f"testenv: build failed: {', '.join(failed)}")
    return Bin(
        folder=kube_dir,
        kwok=kwok_dir / "kwok",
        kwok_stages=_kwok_stages(),
        vcsim=vcsim_dir / "vcsim",
        krew=krew_dir / "krew",
    )


def _kwok_stages() -> Path:
    """kwok's stage kustomizations, from its module source (downloaded by the build)."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/kwok@{KWOK_VERSION}"],
        capture_output=True, text=True, check=True, env=_go_env(), cwd=HERE,
    )  # fmt: skip
    return Path(json.loads(out.stdout)["Dir"]) / "kustomize" / "stage"
