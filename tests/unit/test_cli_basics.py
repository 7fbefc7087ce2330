"""The entry point answers --version and --help without loading the API clients."""

from __future__ import annotations

import subprocess
import sys

from kubectl_csi_migrate import __version__


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubectl_csi_migrate", *args], capture_output=True, text=True)


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"kubectl-csi-migrate {__version__}"


def test_help_does_not_import_api_clients() -> None:
    code = (
        "import sys; from kubectl_csi_migrate.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('kubernetes', 'pyVmomi') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_vsphere_timeout_is_a_duration_every_command_takes() -> None:
    from kubectl_csi_migrate.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["preflight", "web"]).vsphere_timeout == 30.0
    for command in (["preflight", "web"], ["sts", "web", "--csi-storageclass", "x"], ["rollback", "web"]):
        assert parser.parse_args([*command, "--vsphere-timeout", "5s"]).vsphere_timeout == 5.0


def test_vsphere_timeout_of_zero_or_nonsense_is_a_usage_error() -> None:
    for value in ("0s", "-5s", "soon"):
        proc = run("preflight", "web", f"--vsphere-timeout={value}")
        assert proc.returncode == 2, proc.stderr
        assert "--vsphere-timeout" in proc.stderr and "invalid duration" in proc.stderr, proc.stderr
