"""The parts of scripts/build-binary that are easier in Python than in bash on three systems.

    python packaging/pack.py name                      kubectl-csi-migrate_<version>_<os>_<arch>
    python packaging/pack.py archive FOLDER FILE...    pack FOLDER (+ FILEs inside it) into dist/
    python packaging/pack.py measure EXECUTABLE        size and startup, beside kubectl's

The archive holds one folder, `kubectl-csi-migrate/`: the PyInstaller one-folder build (the
executable and its `_internal/`) with LICENSE and the manual page beside the executable, so
krew's `bin` is `kubectl-csi-migrate/kubectl-csi-migrate`. krew's extractor knows regular files
and folders only, so links are stored as the files they point to. Entries are sorted and dated
SOURCE_DATE_EPOCH (or 1980-01-01), so the same build packs to the same bytes.
"""

from __future__ import annotations

import gzip
import io
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROJECT = "kubectl-csi-migrate"
ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def version() -> str:
    text = (REPO / "kubectl_csi_migrate" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.M)
    if not match:
        raise SystemExit("pack: no __version__ in kubectl_csi_migrate/__init__.py")
    return match.group(1)


def os_arch() -> tuple[str, str]:
    """krew's names (Go's GOOS/GOARCH) for this machine."""
    system = platform.system().lower()
    os_name = {"linux": "linux", "darwin": "darwin", "windows": "windows"}.get(system)
    arch = ARCHES.get(platform.machine().lower())
    if not os_name or not arch:
        raise SystemExit(f"pack: no release for {platform.system()}/{platform.machine()}")
    return os_name, arch


def archive_name() -> str:
    os_name, arch = os_arch()
    return f"{PROJECT}_{version()}_{os_name}_{arch}" + (".zip" if os_name == "windows" else ".tar.gz")


def _epoch() -> int:
    return max(int(os.environ.get("SOURCE_DATE_EPOCH", "315532800")), 315532800)  # zip starts in 1980


def _members(folder: Path, extra: list[Path]) -> list[tuple[str, Path]]:
    """(name in the archive, file on disk), folders first in each folder, sorted."""
    top = folder.name
    out = [(top + "/", folder)]
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        rel = Path(root).relative_to(folder).as_posix()
        prefix = top + "/" + ("" if rel == "." else rel + "/")
        out += [(prefix + d + "/", Path(root, d)) for d in dirs]
        out += [(prefix + f, Path(root, f)) for f in sorted(files)]
    out += [(f"{top}/{path.name}", path) for path in extra]
    return out


def _mode(name: str, path: Path) -> int:
    if name.endswith("/") or os.access(path, os.X_OK):
        return 0o755
    return 0o644


def make_archive(folder: Path, extra: list[Path], out: Path) -> Path:
    members = _members(folder, extra)
    epoch = _epoch()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.name.endswith(".zip"):
        stamp = time.gmtime(epoch)[:6]
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for name, path in members:
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.external_attr = (_mode(name, path) | (0o040000 if name.endswith("/") else 0o100000)) << 16
                if name.endswith("/"):
                    archive.writestr(info, b"")
                else:
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, path.read_bytes())
    else:
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=epoch) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as archive,
        ):
            for name, path in members:
                info = tarfile.TarInfo(name.rstrip("/"))
                info.mtime, info.mode, info.uid, info.gid = epoch, _mode(name, path), 0, 0
                if name.endswith("/"):
                    info.type = tarfile.DIRTYPE
                    archive.addfile(info)
                else:
                    data = path.read_bytes()  # follows links: krew cannot extract them
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return out


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _startup(argv: list[str], runs: int = 5) -> float:
    """Median wall time of `runs` runs, after one run that warms the disk cache."""
    times = []
    for i in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        if i:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(executable: Path, archive: Path | None = None) -> None:
    folder = executable.parent
    print(f"size:    {folder}/ {_folder_size(folder) / 1e6:.1f} MB", end="")
    print(f", {archive.name} {archive.stat().st_size / 1e6:.1f} MB" if archive and archive.exists() else "")
    ours = _startup([str(executable), "--version"])
    line = f"startup: {executable.name} --version {ours:.3f} s (median of 5)"
    kubectl = shutil.which("kubectl")
    if kubectl:
        line += f"; kubectl version --client {_startup([kubectl, 'version', '--client']):.3f} s"
    else:
        line += '; no kubectl on PATH to compare with (eval "$(scripts/testenv env)")'
    print(line)
    if ours >= 0.5:
        print(f"warning: --version takes {ours:.2f} s, more than the 0.5 s goal", file=sys.stderr)


def main(argv: list[str]) -> int:
    if argv[:1] == ["name"]:
        print(archive_name())
    elif argv[:1] == ["archive"] and len(argv) >= 2:
        out = make_archive(Path(argv[1]), [Path(p) for p in argv[2:]], REPO / "dist" / archive_name())
        print(out)
    elif argv[:1] == ["measure"] and len(argv) in (2, 3):
        measure(Path(argv[1]), Path(argv[2]) if len(argv) == 3 else None)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
