"""Build (or find) the binaries of the test environment for one leg (testenv/legs.py), cached
outside the repository.

One multi-call binary (testenv/kube, from the leg's k8s.io/kubernetes) holds etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kubectl; kwok and krew (for the plugin's install test)
are `go install`ed at pinned versions. The vSphere side: vcsim from our own module (testenv/vcsim:
govmomi's simulator plus what the CSI driver needs of vCenter that it lacks; one binary for every
leg, told its vCenter version at start), the vSphere CSI driver's controller and syncer from the
unmodified release source of the leg's driver in ../shared/third_party, the external-attacher its
manifest pins (also from ../shared/third_party, built from its `vendor/`), and the other CSI
sidecars from one module of ours (testenv/csi) so their shared code compiles once. Each lands in
`<cache>/<name>-<key>/`, where the key changes with the pinned version (and, for our own modules,
with their sources), so a second build is a lookup. `KUBEBUILDER_ASSETS` may name a folder that
already holds the control-plane binaries of the leg's Kubernetes.
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

from testenv.legs import ATTACHER_SHA256, DRIVER_SHA256, KUBERNETES, Leg, resolve

HERE = Path(__file__).resolve().parent
KUBE_MODULE = HERE / "kube"
VCSIM_MODULE = HERE / "vcsim"
DRIVER_MODULE = HERE / "driver"
SIDECARS_MODULE = HERE / "csi"
KWOK_VERSION = "v0.8.0"
KREW_VERSION = "v0.4.3"
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
DRIVER_WITH_OWN_MODULE = "3.7.3"
"""The driver release built from testenv/driver's go.mod (its own go.mod lacks two replace lines);
older releases build from their own go.mod as released."""
DRIVER_BINARIES = ("vsphere-csi", "syncer")
SIDECARS = ("csi-provisioner", "csi-resizer", "csi-snapshotter", "snapshot-controller")


def kube_module(kubernetes: str) -> Path:
    """The folder whose go.mod builds the control plane of `kubernetes` (X.Y.Z): testenv/kube for
    the newest, testenv/kube/vX.Y/ (go.mod and go.sum; main.go is the newest's) for the others."""
    if kubernetes == KUBERNETES[0]:
        return KUBE_MODULE
    return KUBE_MODULE / ("v" + ".".join(kubernetes.split(".")[:2]))


def kubernetes_version(module: Path = KUBE_MODULE) -> str:
    """The k8s.io/kubernetes version that a kube module's go.mod pins."""
    match = re.search(r"^\s*k8s\.io/kubernetes (v[0-9.]+)\s*$", (module / "go.mod").read_text(), re.M)
    if not match:
        raise SystemExit(f"{module / 'go.mod'} does not require k8s.io/kubernetes")
    return match.group(1)


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kubectl-csi-migrate"
    return Path(os.environ.get("CSI_MIGRATE_TESTENV_CACHE", default))


@dataclass(frozen=True)
class Bin:
    """Where each binary of the environment is, for one leg."""

    leg: Leg
    folder: Path
    kwok: Path
    kwok_stages: Path
    vcsim: Path
    krew: Path
    driver: Path
    """Folder with the vSphere CSI driver's `vsphere-csi` and `syncer`."""
    driver_source: Path
    """The driver's unpacked release source (its manifests are read at `up`)."""
    attacher: Path
    """Folder with the external-attacher the driver's manifest pins."""
    sidecars: Path
    """Folder with the other CSI sidecars and snapshot-controller."""
    snapshot_crds: Path
    """external-snapshotter's CRDs (client module, config/crd), applied at `up`."""
    snapshot_controller_deploy: Path
    """external-snapshotter's snapshot-controller manifests (its RBAC is applied at `up`)."""

    def path(self, name: str) -> Path:
        return self.folder / name


def _module_key(module: Path, sources: Path | None = None) -> str:
    """A digest of our own Go module's files (go.mod and go.sum in `module`, *.go in `sources`,
    default the same folder): the cache key changes whenever they do."""
    digest = hashlib.sha256()
    for path in [module / "go.mod", module / "go.sum", *sorted((sources or module).glob("*.go"))]:
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _kube_key(module: Path) -> str:
    return f"kubernetes-{kubernetes_version(module)}-{_module_key(module, KUBE_MODULE)}"


def _kube_workdir(root: Path, module: Path) -> Path:
    """Where an older leg's control plane builds: its go.mod and go.sum beside a copy of main.go."""
    if module == KUBE_MODULE:
        return module
    work = root / f"kube-src-{_kube_key(module)}"
    if not (work / "main.go").exists():
        tmp = work.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for path in (module / "go.mod", module / "go.sum", KUBE_MODULE / "main.go"):
            shutil.copy(path, tmp / path.name)
        shutil.rmtree(work, ignore_errors=True)
        tmp.rename(work)
    return work


def third_party() -> Path:
    """../shared/third_party beside the checkout (CSI_MIGRATE_THIRD_PARTY overrides it)."""
    default = HERE.parents[1] / "shared" / "third_party"
    return Path(os.environ.get("CSI_MIGRATE_THIRD_PARTY", default))


def _driver_key(version: str) -> str:
    return f"{version}-{_module_key(DRIVER_MODULE)}" if version == DRIVER_WITH_OWN_MODULE else version


def _unpack(tarball: Path, sha256: str, work: Path, extra: Path | None = None) -> None:
    """Unpack a release source from ../shared/third_party (checked against its sha256) into
    `work`, with `extra`'s go.mod and go.sum beside it."""
    if not tarball.exists():
        raise SystemExit(f"testenv: {tarball} not found (set CSI_MIGRATE_THIRD_PARTY to its folder)")
    if hashlib.sha256(tarball.read_bytes()).hexdigest() != sha256:
        raise SystemExit(f"testenv: {tarball} does not have the sha256 ../shared/third_party/README.md gives")
    tmp = work.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        archive.extractall(tmp, filter="data")
    for name in ("go.mod", "go.sum") if extra else ():
        shutil.copy(extra / name, tmp / name)  # type: ignore[operator]
    shutil.rmtree(work, ignore_errors=True)
    tmp.rename(work)


def driver_source(root: Path, version: str) -> Path:
    """The driver's unpacked release source in the cache; for 3.7.3 beside a copy of
    testenv/driver's go.mod/go.sum, whose replace line points at it."""
    work = root / f"vsphere-csi-driver-src-{_driver_key(version)}"
    source = work / f"vsphere-csi-driver-{version}"
    if not (source / "go.mod").exists():
        extra = DRIVER_MODULE if version == DRIVER_WITH_OWN_MODULE else None
        _unpack(third_party() / f"vsphere-csi-driver-v{version}.tar.gz", DRIVER_SHA256[version], work, extra)
    return source


def attacher_source(root: Path, version: str) -> Path:
    work = root / f"external-attacher-src-{version}"
    source = work / f"external-attacher-{version}"
    if not (source / "go.mod").exists():
        _unpack(third_party() / f"external-attacher-v{version}.tar.gz", ATTACHER_SHA256[version], work)
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


def _kube_command(out: Path, module: Path) -> list[str]:
    version = kubernetes_version(module)
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


def build(leg: Leg | None = None, verbose: bool = True) -> Bin:
    """Build whatever `leg` (default: testenv.legs.resolve()) needs that is not cached yet, the
    builds running side by side; return the paths."""
    leg = leg or resolve()
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[str, Path, list[str], Path | None]] = []  # name, final dir, command, cwd

    kube = kube_module(leg.kubernetes)
    if kubernetes_version(kube) != f"v{leg.kubernetes}":
        raise SystemExit(f"testenv: {kube / 'go.mod'} does not pin k8s.io/kubernetes v{leg.kubernetes}")
    assets = _assets_from_env() if kube == KUBE_MODULE else None
    kube_dir = assets or root / _kube_key(kube)
    if not (kube_dir / "kube-apiserver").exists():
        command = _kube_command(kube_dir.with_suffix(".tmp"), kube)
        jobs.append(("kubernetes", kube_dir, command, _kube_workdir(root, kube)))
    kwok_dir = root / f"kwok-{KWOK_VERSION}"
    if not (kwok_dir / "kwok").exists():
        jobs.append(("kwok", kwok_dir, ["go", "install", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"], None))
    vcsim_dir = root / f"vcsim-{_module_key(VCSIM_MODULE)}"
    if not (vcsim_dir / "vcsim").exists():
        command = ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(vcsim_dir.with_suffix(".tmp")), "."]
        jobs.append(("vcsim", vcsim_dir, command, VCSIM_MODULE))
    source = driver_source(root, leg.driver)
    driver_dir = root / f"vsphere-csi-driver-{_driver_key(leg.driver)}"
    if not all((driver_dir / b).exists() for b in DRIVER_BINARIES):
        out = str(driver_dir.with_suffix(".tmp")) + "/"
        if leg.driver == DRIVER_WITH_OWN_MODULE:
            command = ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, *_tools(DRIVER_MODULE)]
            driver_cwd = source.parent
        else:
            packages = [f"./cmd/{b}" for b in DRIVER_BINARIES]
            command = ["go", "build", "-mod=mod", "-trimpath", "-ldflags", "-s -w", "-o", out, *packages]
            driver_cwd = source
        jobs.append(("vsphere-csi-driver", driver_dir, command, driver_cwd))
    attacher = attacher_source(root, leg.attacher)
    attacher_dir = root / f"csi-attacher-{leg.attacher}"
    if not (attacher_dir / "csi-attacher").exists():
        out = str(attacher_dir.with_suffix(".tmp")) + "/"
        command = ["go", "build", "-mod=vendor", "-trimpath", "-ldflags", "-s -w", "-o", out, "./cmd/csi-attacher"]
        jobs.append(("csi-attacher", attacher_dir, command, attacher))
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
        leg=leg,
        folder=kube_dir,
        kwok=kwok_dir / "kwok",
        kwok_stages=_kwok_stages(),
        vcsim=vcsim_dir / "vcsim",
        krew=krew_dir / "krew",
        driver=driver_dir,
        driver_source=source,
        attacher=attacher_dir,
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
