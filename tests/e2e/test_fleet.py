"""Several StatefulSets in one command (`sts --all`, `sts A B C --parallel 3`), driven as
`kubectl csi-migrate ...` on the real environment."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from testenv import cluster, scenario
from tests.e2e.conftest import REPO, Kubectl, run_plugin
from tests.e2e.test_migration import ForeignHolder, PodMonitor, assert_migrated

pytestmark = pytest.mark.e2e


@pytest.mark.slow
def test_all_migrates_every_statefulset_and_names_the_ones_it_could_not(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """web (two templates, one already CSI) and db migrate; cache's disruption budget allows no
    eviction (preflight refuses it, nothing changed); queue's Lease is held by another live run
    (its run is refused before any change: skipped too). Exit 1, a summary naming each. A second
    `--all` finds only the two it could not do."""
    web = scenario.create(env, "web", ns, replicas=2, intree_templates=("data",), csi_templates=("logs",))
    db = scenario.create(env, "db", ns, replicas=2)
    scenario.create(env, "cache", ns, replicas=2)
    scenario.create(env, "queue", ns, replicas=2)
    kubectl("-n", ns, "patch", "pdb", "cache", "--type=merge", "-p", '{"spec": {"maxUnavailable": 0}}')
    kubectl("-n", ns, "wait", "pdb/cache", "--for=jsonpath={.status.disruptionsAllowed}=0", "--timeout=60s")
    uids = {n: kubectl.get("statefulset", n, ns)["metadata"]["uid"] for n in ("web", "db")}
    args = [
        "sts",
        "--all",
        "-n",
        ns,
        "--csi-storageclass",
        "standard-rwo",
        "--yes",
        "--working-directory",
        str(tmp_path),
    ]
    with ForeignHolder(kubectl, ns, "csi-migrate-statefulset-queue"):
        proc = run_plugin(env_vars, *args, "-o", "json", timeout=600)
    assert proc.returncode == 1, proc.stderr
    summary = {item["name"]: item for item in json.loads(proc.stdout)["items"]}
    assert sorted(summary) == ["cache", "db", "queue", "web"]
    assert summary["web"]["result"] == summary["db"]["result"] == "migrated"
    assert summary["cache"]["result"] == "skipped" and "disruption" in summary["cache"]["reason"]
    # Refused before any change (the child sent nothing that changes the cluster: its outcome
    # file says so), so skipped, nothing changed: not a run to resume.
    assert summary["queue"]["result"] == "skipped" and "holds lease" in summary["queue"]["reason"]
    assert summary["queue"]["reason"].endswith("(nothing changed)") and "resume" not in summary["queue"]
    assert "[" + ns + "/web] " in proc.stderr, "each run's lines are prefixed with its StatefulSet"
    web.volumes = [v for v in web.volumes if not v.csi]
    assert_migrated(env, kubectl, web, uids["web"])
    assert_migrated(env, kubectl, db, uids["db"])

    human = run_plugin(env_vars, *args, "--dry-run")
    assert human.returncode == 1, human.stderr  # cache still fails its preflight
    assert "2 StatefulSet(s)" in human.stdout and f"{ns}/cache, {ns}/queue" in human.stdout
    assert "planned" in human.stdout and "skipped" in human.stdout
    kubectl("-n", ns, "delete", "statefulset", "cache", "queue")
    again = run_plugin(env_vars, *args)
    assert again.returncode == 0, again.stderr
    assert f"no StatefulSet with in-tree vSphere volumes in namespace {ns}: nothing to do" in again.stdout


@pytest.mark.slow
def test_parallel_3_holds_three_leases_at_once_and_keeps_one_replica_of_each_down_at_most(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    names = ("alpha", "beta", "gamma")
    made = {n: scenario.create(env, n, ns, replicas=3) for n in names}
    uids = {n: kubectl.get("statefulset", n, ns)["metadata"]["uid"] for n in names}
    from kubernetes import client, config

    api = client.CoordinationV1Api(config.new_client_from_config(env.info()["user_kubeconfig"]))
    held: list[int] = []
    done = threading.Event()

    def count_leases() -> None:
        while not done.wait(0.05):
            leases = api.list_namespaced_lease(ns).items
            held.append(sum(1 for lease in leases if lease.metadata.name.startswith("csi-migrate-")))

    watcher = threading.Thread(target=count_leases, daemon=True)
    monitors = [PodMonitor(env, ns, {f"{n}-{i}" for i in range(3)}) for n in names]
    for monitor in monitors:
        monitor.__enter__()
    watcher.start()
    try:
        proc = run_plugin(
            env_vars, "sts", *names, "-n", ns, "--csi-storageclass", "standard-rwo", "--yes", "--parallel", "3",
            "--working-directory", str(tmp_path), timeout=600,
        )  # fmt: skip
    finally:
        done.set()
        watcher.join()
        for monitor in monitors:
            monitor.__exit__()
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert max(held) == 3, f"at most {max(held)} leases were held at once"
    for name, monitor in zip(names, monitors, strict=True):
        assert monitor.events > 0
        assert monitor.min_ready >= 2, f"{3 - monitor.min_ready} replicas of {name} were down at once"
        assert_migrated(env, kubectl, made[name], uids[name])
    for name in names:
        assert f"{ns}   {name}" in proc.stdout or name in proc.stdout


def shared_budget(kubectl: Kubectl, ns: str, names: tuple[str, ...]) -> None:
    """One PodDisruptionBudget `shared` (maxUnavailable 1) over the pods of every StatefulSet of
    `names`, once the disruption controller counts them all."""
    shared = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "shared", "namespace": ns},
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": list(names)}]},
        },
    }
    kubectl("create", "-f", "-", stdin=json.dumps(shared))
    kubectl("-n", ns, "wait", "pdb/shared", "--for=jsonpath={.status.expectedPods}=6", "--timeout=60s")
    kubectl("-n", ns, "wait", "pdb/shared", "--for=jsonpath={.status.disruptionsAllowed}=1", "--timeout=60s")


HOLD = '{"metadata":{"finalizers":["csi-migrate.test/hold"]}}'
UNHOLD = '{"metadata":{"finalizers":null}}'


def test_item_6_two_statefulsets_under_one_budget_in_parallel_take_its_lease_in_turn(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """One budget (maxUnavailable 1) over alpha's and beta's pods, `sts --all --parallel 2`: each
    run alone would see room for one pod down and take one. Each StatefulSet's first claim is
    held (a finalizer) so that whichever run takes the budget's Lease first keeps it, one pod
    down, until the other run is seen waiting for it (its own Lease taken, nothing changed).
    Then both finish, one after the other: never two of the budget's pods not Ready, and no
    Lease left behind."""
    names = ("alpha", "beta")
    made = {n: scenario.create(env, n, ns, replicas=3, pdb=False) for n in names}
    uids = {n: kubectl.get("statefulset", n, ns)["metadata"]["uid"] for n in names}
    shared_budget(kubectl, ns, names)
    held = {n: next(v.pvc for v in made[n].volumes if v.ordinal == 2) for n in names}  # the first to move
    for name in names:
        kubectl("-n", ns, "patch", "pvc", held[name], "--type=merge", "-p", HOLD)
    pods = {f"{n}-{i}" for n in names for i in range(3)}
    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env_vars['PATH']}"
    with PodMonitor(env, ns, pods) as monitor:
        proc = subprocess.Popen(
            ["kubectl", "csi-migrate", "sts", "--all", "--parallel", "2", "-n", ns, "--csi-storageclass",
             "standard-rwo", "--yes", "--working-directory", str(tmp_path)],
            env={**env_vars, "PATH": path}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 180
            while True:
                deleting = [n for n in names if kubectl.get("pvc", held[n], ns)["metadata"].get("deletionTimestamp")]
                leases = {item["metadata"]["name"] for item in kubectl.get("leases", namespace=ns)["items"]}
                if deleting and all(f"csi-migrate-statefulset-{n}" in leases for n in names):
                    break
                assert proc.poll() is None, f"the command ended early: {proc.communicate()}"
                assert time.monotonic() < deadline, f"no run took a pod down while the other waited: {leases}"
                time.sleep(0.2)
            time.sleep(3)  # the other run tried the budget's Lease right after taking its own
            (first,) = deleting
            (second,) = [n for n in names if n != first]
            assert "csi-migrate.pdb.shared" in leases
            assert not kubectl.get("pvc", held[second], ns)["metadata"].get("deletionTimestamp")
            assert kubectl.get("statefulset", second, ns)["metadata"]["uid"] == uids[second], "the waiting run changed"
        finally:
            for name in names:
                kubectl("-n", ns, "patch", "pvc", held[name], "--type=merge", "-p", UNHOLD)
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:] + out[-4000:]
    waited = [line for line in out.splitlines() if line.startswith(f"[{ns}/{second}] waiting for poddisruptionbudget")]
    assert waited and f"poddisruptionbudget {ns}/shared" in waited[0], out
    assert f"the csi-migrate run of statefulset {ns}/{first}" in waited[0], waited
    assert any(line.startswith(f"[{ns}/{second}] poddisruptionbudget {ns}/shared: lease") for line in out.splitlines())
    assert monitor.events > 0
    assert monitor.min_ready >= 5, (
        f"{6 - monitor.min_ready} pods of poddisruptionbudget shared (maxUnavailable 1) were not Ready at once\n{out}"
    )
    assert_all_migrated_no_lease_left(env, kubectl, ns, {n: (made[n], uids[n]) for n in names})


def test_the_survey_fed_back_with_from_file_migrates_what_it_lists(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """`preflight -o json | sts --from-file -`: every StatefulSet the survey lists is migrated; a
    row it found not migratable is skipped with the survey's reason (never run), exit 1. A file
    that cannot be read, is not JSON or has an item without a name: one error line, exit 2,
    nothing changed."""
    web = scenario.create(env, "web", ns, replicas=2)
    db = scenario.create(env, "db", ns, replicas=1)
    uids = {n: kubectl.get("statefulset", n, ns)["metadata"]["uid"] for n in ("web", "db")}
    surveyed = run_plugin(env_vars, "preflight", "-n", ns, "-o", "json")
    assert surveyed.returncode == 0, surveyed.stderr
    survey = json.loads(surveyed.stdout)
    assert sorted((r["name"], r["migratable"]) for r in survey["items"]) == [("db", True), ("web", True)]
    # A row as the survey writes one it refuses (a StatefulSet not Ready); it must not be run.
    survey["items"].append(
        {"namespace": ns, "name": "cache", "replicas": 2, "inTreeVolumes": 2, "csiVolumes": 0,
         "migratable": False, "problems": ["statefulset/cache: 1/2 replicas ready; fix the application first"]}
    )  # fmt: skip
    common = ["--csi-storageclass", "standard-rwo", "--working-directory", str(tmp_path)]

    def pvs() -> list[tuple[str, str, str]]:
        items = [v for v in kubectl.get("pv")["items"] if (v["spec"].get("claimRef") or {}).get("namespace") == ns]
        return sorted(
            (v["metadata"]["uid"], v["spec"]["persistentVolumeReclaimPolicy"], str(v["spec"].get("csi"))) for v in items
        )

    before = pvs()
    for bad, says in (
        (["--from-file", str(tmp_path / "missing.json")], "cannot read"),
        (["--from-file", "-"], "is not JSON"),
        (["--from-file", "-", "web"], "not several of them"),
    ):
        proc = run_plugin(env_vars, "sts", *bad, "-n", ns, *common, "--yes", stdin="{not json")
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr
    nameless = json.dumps({"items": [{"namespace": ns}]})
    proc = run_plugin(env_vars, "sts", "--from-file", "-", *common, "--yes", stdin=nameless)
    assert proc.returncode == 2 and "item 0 has no namespace and name" in proc.stderr, proc.stderr
    assert pvs() == before, "a refused command changed a PV"

    proc = run_plugin(env_vars, "sts", "--from-file", "-", *common, "--yes", "-o", "json", stdin=json.dumps(survey))
    assert proc.returncode == 1, proc.stderr
    summary = {item["name"]: item for item in json.loads(proc.stdout)["items"]}
    assert summary["web"]["result"] == summary["db"]["result"] == "migrated"
    assert summary["cache"]["result"] == "skipped" and "1/2 replicas ready" in summary["cache"]["reason"]
    assert f"[{ns}/cache]" not in proc.stderr, "a refused row was run"
    assert_migrated(env, kubectl, web, uids["web"])
    assert_migrated(env, kubectl, db, uids["db"])


def test_item_10_sigterm_to_the_parent_of_sts_all_stops_each_run_and_names_them_interrupted(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """`sts --all --parallel 2` on alpha and beta, each run held after it deleted its StatefulSet
    (a finalizer on the claim it moves first); SIGTERM to the parent process only, as `kill PID`
    or a CI system sends it (not to its process group, as Ctrl-C from a terminal would): the
    parent passes it on to both runs, each stops as a single run does, and the parent exits 143
    within 30 s with a summary naming both interrupted with the command that resumes each; no
    process of the fleet is left, nor a Lease. The same command then finishes both. (Before: the
    runs were not told, the parent waited for them, and printed no summary.)"""
    import signal

    names = ("alpha", "beta")
    made = {n: scenario.create(env, n, ns, replicas=2) for n in names}
    uids = {n: kubectl.get("statefulset", n, ns)["metadata"]["uid"] for n in names}
    held = {n: next(v.pvc for v in made[n].volumes if v.ordinal == 1) for n in names}  # the first to move
    for name in names:
        kubectl("-n", ns, "patch", "pvc", held[name], "--type=merge", "-p", HOLD)
    args = ["sts", "--all", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes", "--parallel", "2",
            "--working-directory", str(tmp_path)]  # fmt: skip
    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env_vars['PATH']}"
    # A session of its own: the signal below goes to the parent alone, and a failed test can
    # still kill every process of the fleet.
    proc = subprocess.Popen(
        ["kubectl", "csi-migrate", *args], env={**env_vars, "PATH": path}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=into.extend, args=(stream,), daemon=True)
        for stream, into in ((proc.stdout, out), (proc.stderr, err))
    ]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 180
        while True:
            deleted = [n for n in names if any(f"[{ns}/{n}] statefulset.apps/{n} deleted" in line for line in out)]
            waiting = [n for n in names if kubectl.get("pvc", held[n], ns)["metadata"].get("deletionTimestamp")]
            if deleted == list(names) and waiting == list(names):
                break
            assert proc.poll() is None, f"the command ended early:\n{''.join(out)}{''.join(err)}"
            assert time.monotonic() < deadline, f"both runs did not start changing things:\n{''.join(out)}"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGTERM)  # kubectl execs the plugin: this is the fleet's parent
        sent = time.monotonic()
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                "the fleet did not end within 30s of SIGTERM (its runs were not told to stop):\n" + "".join(out[-40:])
            ) from None
        for reader in readers:
            reader.join(timeout=10)
        text, log = "".join(out), "".join(err)
        assert code == 143, f"exit {code}\n{text}\n{log}"
        assert time.monotonic() - sent < 30
        for name in names:
            assert f"[{ns}/{name}] error: terminated (SIGTERM)" in text, f"{name} did not stop as a run does:\n{text}"
            row = [line.split() for line in text.splitlines() if line.split()[:3] == [ns, "sts", name]]
            assert row and row[0][3] == "interrupted", f"{name} is not named interrupted:\n{text}"
            resume = [line for line in text.splitlines() if line.startswith(f"resume {ns}/{name}: ")]
            assert resume, f"no resume command for {name}:\n{text}"
            assert resume[0].startswith(f"resume {ns}/{name}: kubectl csi-migrate sts {name} -n {ns} --yes ")
            assert resume[0].endswith(" --csi-storageclass standard-rwo")
        assert "error: stopped by SIGTERM; the same command resumes the interrupted runs" in log, log
        left = subprocess.run(["pgrep", "-af", ns], capture_output=True, text=True)
        assert left.returncode == 1, f"processes of the fleet left running:\n{left.stdout}"
        leases = [item["metadata"]["name"] for item in kubectl.get("leases", namespace=ns)["items"]]
        assert not [n for n in leases if n.startswith("csi-migrate")], f"leases left behind: {leases}"
    finally:
        for name in names:
            kubectl("-n", ns, "patch", "pvc", held[name], "--type=merge", "-p", UNHOLD)
        with contextlib.suppress(ProcessLookupError):  # the fleet's group: its runs, should any be left
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    again = run_plugin(env_vars, *args, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:] + again.stdout[-4000:]
    for name in names:
        assert_migrated(env, kubectl, made[name], uids[name])


def assert_all_migrated_no_lease_left(
    env: cluster.Env, kubectl: Kubectl, ns: str, owners: dict[str, tuple[scenario.Scenario, str]]
) -> None:
    """Each StatefulSet migrated (given as name -> (scenario, uid before)), and no csi-migrate
    Lease (a run's or a disruption budget's) left in the namespace."""
    for made, uid in owners.values():
        assert_migrated(env, kubectl, made, uid)
    leases = [item["metadata"]["name"] for item in kubectl.get("leases", namespace=ns)["items"]]
    assert not [n for n in leases if n.startswith("csi-migrate")], f"leases left behind: {leases}"
