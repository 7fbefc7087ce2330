"""The `kubernetes` package: the installed version is within the range setup.cfg declares, the
private internals kube/transport.py uses are there, and transport.py is the only module of the
tool that imports the package."""

from __future__ import annotations

import ast
import configparser
import inspect
import re
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def declared_range() -> tuple[int, int]:
    """(lowest major version, first major version excluded) of `kubernetes>=A,<B` in setup.cfg."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    requires = [line.strip() for line in setup["options"]["install_requires"].splitlines() if line.strip()]
    spec = next(r for r in requires if re.match(r"kubernetes\b", r))
    match = re.fullmatch(r"kubernetes>=(\d+),<(\d+)", spec)
    assert match, f"setup.cfg's requirement {spec!r} is not of the form kubernetes>=A,<B: update this test"
    return int(match[1]), int(match[2])


def test_the_installed_kubernetes_package_is_within_the_declared_range() -> None:
    low, high = declared_range()
    installed = version("kubernetes")
    major = int(installed.split(".")[0])
    assert low <= major < high, f"kubernetes {installed} is outside setup.cfg's >={low},<{high}"


def test_the_internals_the_transport_uses_are_there() -> None:
    from kubernetes import client, config
    from kubernetes.client import rest
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    def params(function: object) -> set[str]:
        return set(inspect.signature(function).parameters)  # type: ignore[arg-type]

    assert issubclass(ApiException, Exception) and issubclass(ConfigException, Exception)
    assert {"config_file"} <= params(config.list_kube_config_contexts)
    wanted = {"context", "client_configuration", "persist_config", "temp_file_path"}
    assert wanted | {"config_file"} <= params(config.load_kube_config)
    assert wanted | {"config_dict"} <= params(config.load_kube_config_from_dict)
    configuration = client.Configuration()
    assert hasattr(configuration, "retries") and hasattr(configuration, "host")
    api = client.ApiClient(configuration)
    try:
        assert {"headers", "queries", "auth_settings", "resource_path", "method", "body"} <= params(
            api.update_params_for_auth
        )
        assert isinstance(api.rest_client, rest.RESTClientObject)
        assert {"method", "url", "headers", "body", "_request_timeout"} <= params(api.rest_client.request)
    finally:
        api.close()
    answer = rest.RESTResponse(_Urllib3Response())  # what transport.Answer reads of a response
    assert (answer.status, answer.reason, answer.getheader("Date"), answer.read()) == (200, "OK", "now", b"{}")
    assert isinstance(answer.response, _Urllib3Response)


class _Urllib3Response:
    status = 200
    reason = "OK"
    headers = {"Date": "now"}
    data = b"{}"


def test_only_the_transport_imports_the_kubernetes_package() -> None:
    importers = []
    for path in sorted((ROOT / "kubectl_csi_migrate").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(name == "kubernetes" or name.startswith("kubernetes.") for name in names):
                importers.append(str(path.relative_to(ROOT)))
    assert sorted(set(importers)) == ["kubectl_csi_migrate/kube/transport.py"]
