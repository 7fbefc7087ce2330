"""Fixtures for end-to-end tests on the real test environment (testenv/).

The environment is reused when it is already up (`scripts/testenv up`), else started for the
session and stopped at its end. Every test gets a fresh namespace.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testenv import api, build, cluster, legs

REPO = Path(__file__).resolve().parents[2]


def _env_is_up(environment: cluster.Env) -> bool:
    procs = environment.processes() if environment.exists() else {}
    if not (procs and all(procs.values())):
        return False
    running, wanted = environment.leg(), legs.resolve()
    if running != wanted:
        pytest.exit(
            f"the test environment that is up runs {running.describe()}; this run asks for "
            f"{wanted.describe()} (CSI_MIGRATE_TESTENV_LEG): `scripts/testenv down` first",
            returncode=2,
        )
    return True


@pytest.fixture(scope="session")
def env(worker_id: str) -> Iterator[cluster.Env]:
    """The environment, reused when it is up. A plain pytest run starts its own and stops it at
    its end. Under pytest-xdist the workers share one: the first to need it starts it (under a
    file lock), and the controlling process stops it at the end of the run
    (`pytest_sessionfinish` below); `scripts/test` starts it before and stops it after."""
    environment = cluster.Env()
    if worker_id == "master":
        if _env_is_up(environment):
            yield environment
            return
        if environment.root.exists():
            cluster.down(environment)
        cluster.up(build.build(verbose=False), environment)
        try:
            yield environment
        finally:
            cluster.down(environment)
        return
    environment.root.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{environment.root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _env_is_up(environment):
            if environment.root.exists():
                cluster.down(environment)
            cluster.up(build.build(verbose=False), environment)
            (environment.root / STARTED_BY_XDIST).touch()
    yield environment


STARTED_BY_XDIST = "started-by-pytest-xdist"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked `slow` first: xdist (`--dist load`, small chunks) then starts them at once
    on the workers, instead of leaving one to run alone at the end of the phase."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controlling process of an xdist run stops the environment one of its workers started."""
    if hasattr(session.config, "workerinput") or session.config.getoption("dist", "no") == "no":
        return
    environment = cluster.Env()
    if (environment.root / STARTED_BY_XDIST).exists():
        cluster.down(environment)


@pytest.fixture(autouse=True)
def serial_runs_alone(request: pytest.FixtureRequest) -> None:
    """A test marked `serial` stops, pauses or restarts a shared component, changes what every
    test sees, or counts what every test changes: it runs with no other test beside it
    (`scripts/test` runs them in a phase of their own), never on one of several xdist workers."""
    if request.node.get_closest_marker("serial") and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        pytest.fail("a serial test ran beside other xdist workers: run the serial tests without -n (scripts/test does)")


@pytest.fixture(autouse=True)
def components_stay_up(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each e2e test, every component of the environment still runs; a test during which
    one died fails with what its log says (CI keeps no logs but the test report)."""
    if "env" not in request.fixturenames:
        yield
        return
    environment: cluster.Env = request.getfixturevalue("env")
    dead_before = {n for n, pid in environment.processes().items() if pid is None}
    yield
    died = [n for n, pid in environment.processes().items() if pid is None and n not in dead_before]
    if died:
        told = "".join(f"--- {n}, from its log:\n{environment.how_it_ended(n)}" for n in died)
        pytest.fail(f"test environment component(s) died during this test: {', '.join(died)}\n{told}")


@pytest.fixture(scope="session")
def env_vars(env: cluster.Env) -> dict[str, str]:
    """The environment a user has after `eval "$(scripts/testenv env)"`."""
    return {**os.environ, **env.exports()}


@pytest.fixture
def ns(env: cluster.Env, request: pytest.FixtureRequest) -> Iterator[str]:
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name[5:30].lower()).strip("-")
    name = f"t-{stem}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl(env, "create", "namespace", name)
    yield name
    cluster.kubectl(env, "delete", "namespace", name, "--wait=false")


class Kubectl:
    """kubectl as a test uses it: JSON in, JSON out."""

    def __init__(self, env: cluster.Env, kubeconfig: str | None = None) -> None:
        self.env = env
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        return cluster.kubectl(self.env, *args, stdin=stdin, kubeconfig=self.kubeconfig)

    def get(self, kind: str, name: str = "", namespace: str | None = None) -> Any:
        if self.kubeconfig is None and api.knows(kind):  # no kubectl process: see testenv/api.py
            try:
                return api.get(self.env, kind, name, namespace)
            except api.NotFound as exc:
                raise RuntimeError(f"kubectl get {kind} {name} failed: {exc}") from exc
        args = ["get", kind, *([name] if name else []), "-o", "json"]
        if namespace:
            args[0:0] = ["-n", namespace]
        return json.loads(self(*args))

    def exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        if self.kubeconfig is None and api.knows(kind):
            try:
                api.get(self.env, kind, name, namespace)
                return True
            except api.NotFound:
                return False
        args = ["get", kind, name, "--ignore-not-found", "-o", "name"]
        if namespace:
            args[0:0] = ["-n", namespace]
        return bool(self(*args).strip())

    def apply(self, doc: dict[str, Any]) -> None:
        self("apply", "-f", "-", stdin=json.dumps(doc))


@pytest.fixture
def kubectl(env: cluster.Env) -> Kubectl:
    return Kubectl(env)


def run_plugin(
    env_vars: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `kubectl csi-migrate ARGS` the way a user does: through kubectl's plugin lookup (in
    `cwd`, where the default working directories go, when given)."""
    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env_vars['PATH']}"
    return subprocess.run(
        ["kubectl", "csi-migrate", *args],
        env={**env_vars, "PATH": path},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
