"""Build (or find) the binaries of the test environment, cached outside the repository.

One multi-call binary (testenv/kube) holds etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kubectl; kwok and krew (for the plugin's install test) are `go install`ed at
pinned versions. The vSphere side: vcsim from our own module (testenv/vcsim: govmomi's simulator
plus what the CSI driver needs of vCenter that it lacks), the vSphere CSI driver's controller and
syncer from the unmodified release source in ../shared/third_party (testenv/driver), and the CSI
sidecars from one module of ours (testenv/csi) so their shared code compiles once. Each lands in
`<cache>/<name>-<key>/`, where the key changes with the pinned version (and, for our own modules,
with their sources), so a second build is a lookup. `KUBEBUILDER_ASSETS` may name a folder that
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
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
KUBE_MODULE = HERE / "kube"
VCSIM_MODULE = HERE / "vcsim"
DRIVER_MODULE = HERE / "driver"
SIDECARS_MODULE = HERE / "csi"
KWOK_VERSION = "v0.8.0"
KREW_VERSION = "v0.4.3"
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
DRIVER_VERSION = "3.7.3"
DRIVER_TARBALL = f"vsphere-csi-driver-v{DRIVER_VERSION}.tar.gz"
DRIVER_SHA256 = "87a162f7be529490765f41442db3a9582d650d4b1f1b5b33de5c1bf649b85c2b"
DRIVER_BINARIES = ("vsphere-csi", "syncer")
SIDECARS = ("csi-attacher", "csi-provisioner", "csi-resizer", "csi-snapshotter", "snapshot-controller")


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
    driver: Path
    """Folder with the vSphere CSI driver's `vsphere-csi` and `syncer`."""
    driver_source: Path
    """The driver's unpacked release source (its manifests are read at `up`)."""
    sidecars: Path
    """Folder with the CSI sidecars and snapshot-controller."""
    snapshot_crds: Path
    """external-snapshotter's CRDs (client module, config/crd), applied at `up`."""
    snapshot_controller_deploy: Path
    """external-snapshotter's snapshot-controller manifests (its RBAC is applied at `up`)."""

    def path(self, name: str) -> Path:
        return self.folder / name


def _module_key(module: Path) -> str:
    """A digest of our own Go module's files: the cache key changes whenever they do."""
    digest = hashlib.sha256()
    for path in [module / "go.mod", module / "go.sum", *sorted(module.glob("*.go"))]:
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _kube_key() -> str:
    return f"kubernetes-{kubernetes_version()}-{_module_key(KUBE_MODULE)}"


def third_party() -> Path:
    """../shared/third_party beside the checkout (CSI_MIGRATE_THIRD_PARTY overrides it)."""
    default = HERE.parents[1] / "shared" / "third_party"
    return Path(os.environ.get("CSI_MIGRATE_THIRD_PARTY", default))


def driver_source(root: Path) -> Path:
    """Unpack the driver's release source (checked against its sha256) into the cache, beside a
    copy of testenv/driver's go.mod/go.sum, whose replace line points at it; return the folder."""
    work = root / f"vsphere-csi-driver-src-{DRIVER_VERSION}-{_module_key(DRIVER_MODULE)}"
    source = work / f"vsphere-csi-driver-{DRIVER_VERSION}"
    if (source / "go.mod").exists():
        return source
    tarball = third_party() / DRIVER_TARBALL
    if not tarball.exists():
        raise SystemExit(f"testenv: {tarball} not found (set CSI_MIGRATE_THIRD_PARTY to its folder)")
    data = tarball.read_bytes()
    if hashlib.sha256(data).hexdigest() != DRIVER_SHA256:
        raise SystemExit(f"testenv: {tarball} does not have the sha256 ../shared/third_party/README.md gives")
    tmp = work.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        archive.extractall(tmp, filter="data")
    for name in ("go.mod", "go.sum"):
        shutil.copy(DRIVER_MODULE / name, tmp / name)
    shutil.rmtree(work, ignore_errors=True)
    tmp.rename(work)
    return source


def _tools(module: Path) -> list[str]:
    """The packages a module's go.mod lists in its `tool` block."""
    block = re.search(r"^tool \((.*?)^\)", (module / "go.mod").read_text(), re.M | re.S)
    return block.group(1).split() if block else []


def module_dir(module: str, version: str) -> Path:
    """The unpacked source of a module version in the module cache (downloaded if needed)."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True, text=True, check=True, env=_go_env(), cwd=HERE,
    )  # fmt: skip
    return Path(json.loads(out.stdout)["Dir"])


def _required_version(module_file: Path, module: str) -> str:
    match = re.search(rf"^\s*{re.escape(module)} (v\S+)", module_file.read_text(), re.M)
    if not match:
        raise SystemExit(f"testenv: {module_file} does not require {module}")
    return match.group(1)


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
    vcsim_dir = root / f"vcsim-{_module_key(VCSIM_MODULE)}"
    if not (vcsim_dir / "vcsim").exists():
        command = ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(vcsim_dir.with_suffix(".tmp")), "."]
        jobs.append(("vcsim", vcsim_dir, command, VCSIM_MODULE))
    source = driver_source(root)
    driver_dir = root / f"vsphere-csi-driver-{DRIVER_VERSION}-{_module_key(DRIVER_MODULE)}"
    if not all((driver_dir / b).exists() for b in DRIVER_BINARIES):
        out = str(driver_dir.with_suffix(".tmp")) + "/"
        command = ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, *_tools(DRIVER_MODULE)]
        jobs.append(("vsphere-csi-driver", driver_dir, command, source.parent))
    sidecars_dir = root / f"csi-sidecars-{_module_key(SIDECARS_MODULE)}"
    if not all((sidecars_dir / b).exists() for b in SIDECARS):
        out = str(sidecars_dir.with_suffix(".tmp")) + "/"
        command = ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, *_tools(SIDECARS_MODULE)]
        jobs.append(("csi-sidecars", sidecars_dir, command, SIDECARS_MODULE))
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
        if name == "vsphere-csi-driver":
            # The syncer imports crypto/tls/fipsonly, which only builds with BoringCrypto (the
            # driver's release Makefile sets the same).
            env["GOEXPERIMENT"] = "boringcrypto"
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
        driver=driver_dir,
        driver_source=source,
        sidecars=sidecars_dir,
        snapshot_crds=_sidecar_module("github.com/kubernetes-csi/external-snapshotter/client/v8") / "config" / "crd",
        snapshot_controller_deploy=_sidecar_module("github.com/kubernetes-csi/external-snapshotter/v8")
        / "deploy"
        / "kubernetes"
        / "snapshot-controller",
    )


def _sidecar_module(module: str) -> Path:
    return module_dir(module, _required_version(SIDECARS_MODULE / "go.mod", module))


def _kwok_stages() -> Path:
    """kwok's stage kustomizations, from its module source (downloaded by the build)."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/kwok@{KWOK_VERSION}"],
        capture_output=True, text=True, check=True, env=_go_env(), cwd=HERE,
    )  # fmt: skip
    return Path(json.loads(out.stdout)["Dir"]) / "kustomize" / "stage"
