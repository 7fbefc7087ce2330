"""Fill the krew manifest in from release archives (run through scripts/release).

    python packaging/release.py [--manifest plugin.yaml] [--download-url URL] ARCHIVE...

Each ARCHIVE is named as scripts/build-binary names it,
`kubectl-csi-migrate_<version>_<os>_<arch>.tar.gz` (or `.zip`); its os/arch picks the platform
of the manifest whose selector matches, which gets the archive's sha256 and the release URL of
that version (the manifest's own URL with the version and file name replaced). spec.version
becomes `v<version>`. A new version must come with an archive for every platform, so that a
manifest never mixes two releases. The caveats' list of the Kubernetes RBAC the tool needs is
written again from the code (REQUIRED_ACCESS, as `rbac_text()` prints it for docs/commands.md; a unit test
keeps the committed plugin.yaml equal to it). The file is read and written as YAML (PyYAML),
keeping its key order, its block texts and the comment lines at its top.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
ARCHIVE = re.compile(r"^kubectl-csi-migrate_(?P<version>[^_]+)_(?P<os>[a-z]+)_(?P<arch>[a-z0-9]+)\.(tar\.gz|zip)$")
RELEASE_URI = re.compile(r"^(?P<base>.+/releases/download/)v[^/]+/[^/]+$")


class _Dumper(yaml.SafeDumper):
    """Texts of several lines (description, caveats) stay `|` blocks."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)


def package_version() -> str:
    text = (REPO / "kubectl_csi_migrate" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.M)
    return match.group(1) if match else ""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


RBAC_HEAD = "Kubernetes RBAC it needs"
"""The caveats' line above the RBAC list; the list is the lines indented under it."""


def _rbac_span(lines: list[str]) -> tuple[int, int]:
    head = next((i for i, line in enumerate(lines) if line.startswith(RBAC_HEAD)), None)
    if head is None:
        raise SystemExit(f"release: the manifest's caveats have no line beginning {RBAC_HEAD!r}")
    end = head + 1
    while end < len(lines) and lines[end].startswith("  "):
        end += 1
    return head + 1, end


def rbac_lines(caveats: str) -> list[str]:
    """The RBAC list of the caveats, one resource a line, without its indent."""
    lines = caveats.splitlines()
    start, end = _rbac_span(lines)
    return [line.strip() for line in lines[start:end]]


def with_rbac(caveats: str) -> str:
    """The caveats with their RBAC list printed from the code (REQUIRED_ACCESS)."""
    from kubectl_csi_migrate.migration.preflight import rbac_text

    lines = caveats.splitlines()
    start, end = _rbac_span(lines)
    lines[start:end] = [f"  {line}" for line in rbac_text().splitlines()]
    return "\n".join(lines) + ("\n" if caveats.endswith("\n") else "")


def update(manifest: dict[str, Any], archives: list[Path], download_url: str | None = None) -> list[str]:
    """Change `manifest` in place; return one line per platform changed. `download_url` (such as
    https://github.com/OWNER/REPO/releases/download) replaces the one in the manifest."""
    parsed = []
    for path in archives:
        match = ARCHIVE.match(path.name)
        if not match:
            raise SystemExit(f"release: {path.name} is not named kubectl-csi-migrate_<version>_<os>_<arch>.tar.gz/.zip")
        parsed.append((path, match["version"], match["os"], match["arch"]))
    versions = {version for _, version, _, _ in parsed}
    if len(versions) != 1:
        raise SystemExit(f"release: the archives are of several versions: {', '.join(sorted(versions))}")
    version = versions.pop()
    if package_version() and version != package_version():
        raise SystemExit(f"release: the archives are version {version}, kubectl_csi_migrate is {package_version()}")

    platforms = manifest["spec"]["platforms"]

    def labels(platform: dict[str, Any]) -> tuple[str, str]:
        match = platform.get("selector", {}).get("matchLabels", {})
        return match.get("os", ""), match.get("arch", "")

    new_version = f"v{version}"
    if manifest["spec"].get("version") != new_version:
        given = {(o, a) for _, _, o, a in parsed}
        missing = ["/".join(labels(p)) for p in platforms if labels(p) not in given]
        if missing:
            raise SystemExit(f"release: {new_version} needs an archive per platform; missing {', '.join(missing)}")
    manifest["spec"]["version"] = new_version
    manifest["spec"]["caveats"] = with_rbac(manifest["spec"]["caveats"])

    lines = []
    for path, _, os_name, arch in parsed:
        target = next((p for p in platforms if labels(p) == (os_name, arch)), None)
        if target is None:
            raise SystemExit(f"release: the manifest has no platform {os_name}/{arch}")
        uri = RELEASE_URI.match(target["uri"])
        if not uri:
            raise SystemExit(f"release: {os_name}/{arch}: {target['uri']} is not a .../releases/download/vX/FILE URL")
        base = download_url.rstrip("/") + "/" if download_url else uri["base"]
        target["uri"] = f"{base}{new_version}/{path.name}"
        target["sha256"] = sha256_of(path)
        lines.append(f"{os_name}/{arch}: sha256 {target['sha256']}  {target['uri']}")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/release", description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "plugin.yaml", help="default: plugin.yaml")
    parser.add_argument(
        "--download-url",
        metavar="URL",
        help="where the release's files are, e.g. https://github.com/OWNER/REPO/releases/download "
        "(default: as in the manifest)",
    )
    parser.add_argument("archives", nargs="+", type=Path, metavar="ARCHIVE")
    args = parser.parse_args(argv)

    text = args.manifest.read_text(encoding="utf-8")
    header = "".join(re.match(r"(?:#[^\n]*\n)*", text).group(0))  # type: ignore[union-attr]
    manifest = yaml.safe_load(text)
    lines = update(manifest, args.archives, args.download_url)
    out = header + dump(manifest)
    if yaml.safe_load(out) != manifest:
        raise SystemExit("release: the manifest would not read back the same; not written")
    tmp = args.manifest.with_name(args.manifest.name + ".tmp")
    tmp.write_text(out, encoding="utf-8")
    tmp.replace(args.manifest)
    print(f"release: {args.manifest} is now {manifest['spec']['version']}")
    for line in lines:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
