"""The ways people install the plugin, each ending in `kubectl csi-migrate` against the cluster.

- `pip install .` into a fresh virtual environment: kubectl finds `kubectl-csi_migrate` on PATH,
  `kubectl plugin list` has no complaint, and kubectl's completion reaches
  `kubectl_complete-csi_migrate`.
- krew: `kubectl krew install --manifest --archive` with the archive scripts/build-binary made
  and a manifest that scripts/release filled in for it, in a KREW_ROOT of the test's own.
- the PyInstaller binary itself: `--version` (and how fast), `--help`, a preflight that needs
  both the Kubernetes and the vSphere client.
- the manual page: every command and flag renders.

kubectl is always the test environment's own (first on PATH); folders of PATH that hold another
copy of the plugin (the project's .venv/bin) are left out, so each test sees one install.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubectl_csi_migrate import __version__
from kubectl_csi_migrate.cli.main import build_parser
from testenv import build, cluster, scenario

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PLUGIN_FILES = ("kubectl-csi_migrate", "kubectl-csi-migrate", "kubectl_complete-csi_migrate")
# What the binary is built from: a dist/ older than any of these is rebuilt.
BUILD_INPUTS = ("kubectl_csi_migrate", "packaging", "scripts/build-binary", "requirements-build.txt", "setup.cfg")


@dataclass(frozen=True)
class Built:
    executable: Path
    archive: Path
    manpage: Path


def _newest(paths: list[Path]) -> float:
    times = [0.0]
    for path in paths:
        files = [path] if path.is_file() else path.rglob("*")
        times += [f.stat().st_mtime for f in files if f.is_file() and "__pycache__" not in f.parts]
    return max(times)


@pytest.fixture(scope="session")
def built(env_vars: dict[str, str]) -> Built:
    """scripts/build-binary, once per session; dist/ is reused when newer than its sources."""
    name = subprocess.run(
        [sys.executable, str(REPO / "packaging" / "pack.py"), "name"], capture_output=True, text=True, check=True
    ).stdout.strip()
    exe = REPO / "dist" / "kubectl-csi-migrate" / ("kubectl-csi-migrate" + (".exe" if name.endswith(".zip") else ""))
    out = Built(exe, REPO / "dist" / name, REPO / "dist" / "kubectl-csi-migrate.1")
    products = [out.executable, out.archive, out.manpage]
    (REPO / "build").mkdir(exist_ok=True)
    with open(REPO / "build" / "build-binary.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session building dist/ at the same time
        newest_source = _newest([REPO / p for p in BUILD_INPUTS])
        if all(p.exists() for p in products) and min(p.stat().st_mtime for p in products) > newest_source:
            return out
        proc = subprocess.run(
            [str(REPO / "scripts" / "build-binary")],
            cwd=REPO, env=env_vars, capture_output=True, text=True, timeout=1500,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(proc.stdout)  # size and startup, shown with pytest -s
    return out


def user_env(env_vars: dict[str, str], *first: Path, **extra: str) -> dict[str, str]:
    """env_vars with PATH = the environment's kubectl, then `first`, then the rest of PATH less
    any folder that holds a copy of the plugin."""
    entries = env_vars["PATH"].split(os.pathsep)
    kube_bin, rest = entries[0], entries[1:]
    keep = [
        d for d in rest
        if os.path.isdir(d) and d != kube_bin and not any(os.path.exists(os.path.join(d, f)) for f in PLUGIN_FILES)
    ]  # fmt: skip
    return {**env_vars, "PATH": os.pathsep.join([kube_bin, *map(str, first), *keep]), **extra}


def run(env: dict[str, str], *argv: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def preflight_passes(env: dict[str, str], ns: str, workdir: Path, *command: str | Path) -> dict:
    """`command preflight web -n NS -o json` exits 0, and the checks that need the Kubernetes
    client and pyVmomi (vCenter login, the disks found on the datastore) passed."""
    proc = run(env, *command, "preflight", "web", "-n", ns, "--working-directory", workdir, "-o", "json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    report = json.loads(proc.stdout)
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses.get("vcenter") == "PASS" and statuses.get("disk") == "PASS", report["checks"]
    assert report["result"] == "PASS"
    return report


def completions(env: dict[str, str], *words: str) -> list[str]:
    """What kubectl's shell completion offers after `kubectl csi-migrate WORDS`."""
    proc = run(env, "kubectl", "__complete", "csi-migrate", *words)
    assert proc.returncode == 0, proc.stderr
    return [line.split("\t")[0] for line in proc.stdout.splitlines() if line and not line.startswith(":")]


def assert_listed_without_warning(env: dict[str, str], path: Path) -> None:
    proc = run(env, "kubectl", "plugin", "list")
    assert str(path) in proc.stdout.splitlines(), proc.stdout + proc.stderr
    complaints = [line for line in proc.stderr.splitlines() if "csi" in line and ("warning" in line or "error" in line)]
    assert not complaints, proc.stderr
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_pip_install_then_kubectl_runs_the_plugin(
    env: cluster.Env, env_vars: dict[str, str], ns: str, tmp_path: Path
) -> None:
    scenario.create(env, "web", ns, replicas=2)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    started = time.monotonic()
    # A plain `pip install .` (the project venv's pip, pointed at the new venv), from pip's usual
    # cache; --no-compile skips byte-compiling the kubernetes client's 120 MB of sources.
    # pip builds in the source tree (build/, *.egg-info), as scripts/build-binary does: one at a time.
    (REPO / "build").mkdir(exist_ok=True)
    with open(REPO / "build" / "build-binary.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pip = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "--quiet",
             "--disable-pip-version-check", "--no-compile", str(REPO)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert pip.returncode == 0, pip.stderr
    print(f"pip install . into a fresh venv: {time.monotonic() - started:.1f}s")
    for name in PLUGIN_FILES:
        assert (bin_dir / name).exists(), f"pip did not install {name}"

    user = user_env(env_vars, bin_dir)
    help_ = run(user, "kubectl", "csi-migrate", "--help")
    assert help_.returncode == 0, help_.stderr
    assert "preflight" in help_.stdout and "rolling-migration" in help_.stdout
    proc = run(user, "kubectl", "csi-migrate", "preflight", "web", "-n", ns, "--working-directory", tmp_path / "wd")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "statefulset web can be migrated" in proc.stdout
    preflight_passes(user, ns, tmp_path / "wd", "kubectl", "csi-migrate")
    assert_listed_without_warning(user, bin_dir / "kubectl-csi_migrate")

    # kubectl's completion runs kubectl_complete-csi_migrate with the words typed so far.
    assert completions(user, "pre") == ["preflight"]
    assert "--csi-storageclass" in completions(user, "sts", "web", "--csi")
    assert completions(user, "preflight", "-o", "") == ["json", "yaml", "name"]
    assert completions(user, "rolling-migration", "") == ["all"]


@pytest.mark.slow
def test_krew_installs_the_archive_with_the_released_manifest(
    env: cluster.Env, env_vars: dict[str, str], ns: str, tmp_path: Path, built: Built
) -> None:
    scenario.create(env, "web", ns, replicas=2)
    krew = build.build(verbose=False).krew
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "kubectl-krew").symlink_to(krew)
    manifest = tmp_path / "plugin.yaml"
    shutil.copy(REPO / "plugin.yaml", manifest)
    release = run(dict(os.environ), REPO / "scripts" / "release", "--manifest", manifest, built.archive)
    assert release.returncode == 0, release.stderr + release.stdout

    krew_root = tmp_path / "krew"
    user = user_env(env_vars, tools, krew_root / "bin", KREW_ROOT=str(krew_root))
    install = run(user, "kubectl", "krew", "install", f"--manifest={manifest}", f"--archive={built.archive}")
    assert install.returncode == 0, install.stderr + install.stdout
    assert "Installed plugin: csi-migrate" in install.stderr + install.stdout
    link = krew_root / "bin" / "kubectl-csi_migrate"
    assert link.is_symlink(), f"krew made no {link}"
    assert_listed_without_warning(user, link)

    preflight_passes(user, ns, tmp_path / "wd", "kubectl", "csi-migrate")

    # Completion for a krew install, as the caveats say: a link named kubectl_complete-csi_migrate.
    (krew_root / "bin" / "kubectl_complete-csi_migrate").symlink_to("kubectl-csi_migrate")
    assert completions(user, "pre") == ["preflight"]

    # The manifest krew read is the one scripts/release wrote: a wrong checksum is refused.
    bad = tmp_path / "bad.yaml"
    bad.write_text(re.sub(r"sha256: \S+", "sha256: " + "0" * 64, manifest.read_text()))
    again = run(
        user_env(env_vars, tools, KREW_ROOT=str(tmp_path / "krew2")),
        "kubectl", "krew", "install", f"--manifest={bad}", f"--archive={built.archive}",
    )  # fmt: skip
    assert again.returncode != 0 and "sha256" in (again.stderr + again.stdout).lower()


@pytest.mark.slow
def test_binary_runs_version_help_and_preflight(
    env: cluster.Env, env_vars: dict[str, str], ns: str, tmp_path: Path, built: Built
) -> None:
    scenario.create(env, "web", ns, replicas=2)
    exe = built.executable
    times = []
    for _ in range(5):
        started = time.perf_counter()
        version = run(env_vars, exe, "--version")
        times.append(time.perf_counter() - started)
        assert version.returncode == 0 and version.stdout.strip() == f"kubectl-csi-migrate {__version__}"
    print(f"binary --version: median {statistics.median(times):.3f}s of 5")
    assert statistics.median(times) < 1.0, f"--version took {statistics.median(times):.2f}s (goal 0.5s)"

    help_ = run(env_vars, exe, "--help")
    assert help_.returncode == 0, help_.stderr
    for command in ("preflight", "sts", "rolling-migration", "migration-with-downtime"):
        assert command in help_.stdout

    user = user_env(env_vars)
    preflight_passes(user, ns, tmp_path / "wd", exe)
    missing = run(user, exe, "preflight", "nosuch", "-n", ns, "--working-directory", tmp_path / "wd")
    assert missing.returncode == 1 and missing.stderr.startswith("error: "), missing.stderr

    names = archive_names(built.archive)
    for name in ("kubectl-csi-migrate/LICENSE", "kubectl-csi-migrate/kubectl-csi-migrate.1"):
        assert name in names, f"{built.archive.name} lacks {name}"
    assert {"kubectl-csi-migrate/kubectl-csi-migrate", "kubectl-csi-migrate/kubectl-csi-migrate.exe"} & names


def archive_names(path: Path) -> set[str]:
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            return {n.rstrip("/") for n in archive.namelist()}
    with tarfile.open(path) as archive:
        return set(archive.getnames())


def test_man_page_renders_every_command_and_flag(built: Built) -> None:
    groff = shutil.which("groff")
    if not groff:
        pytest.skip("groff is not installed (apt-get install groff-base)")
    proc = subprocess.run(
        [groff, "-man", "-Tascii", "-ww", "-rLL=100n", str(built.manpage)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "break line" not in line and "adjust line" not in line]
    assert not warnings, warnings
    page = re.sub(r".\x08", "", proc.stdout)  # groff's overstruck bold and underline
    assert page.startswith("KUBECTL-CSI-MIGRATE(1)")

    parser = build_parser()
    flags = {"--version", "--csi-storageclass", "--working-directory", "--cluster-name", "--sts-namespace"}
    texts = {"rolling-migration", "migration-with-downtime"}
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subcommands.choices.items():
        texts.add(f"COMMAND 'kubectl csi-migrate {name}'")
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue  # hidden on purpose; -h is not documented per command
            flags.update(action.option_strings)
            if action.help:  # the help text's first words, whitespace as groff reflowed it
                texts.add(" ".join(action.help.split()[:4]))
    flat = " ".join(page.split())
    missing = sorted(t for t in texts if t not in flat)
    missing += sorted(f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", page))
    assert not missing, f"the man page lacks {missing}"
