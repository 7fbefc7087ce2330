"""The migration, end to end, driven as `kubectl csi-migrate ...` on the real environment."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from testenv import cluster, scenario, vc
from tests.e2e.conftest import REPO, Kubectl, run_plugin

pytestmark = pytest.mark.e2e


class PodMonitor:
    """Watches the namespace's pods during a run and records the fewest Ready at any moment."""

    def __init__(self, env: cluster.Env, namespace: str, names: set[str]) -> None:
        from kubernetes import client, config, watch

        self.api = client.CoreV1Api(config.new_client_from_config(env.info()["user_kubeconfig"]))
        self.namespace, self.names = namespace, names
        self.watch = watch.Watch()
        self.min_ready = len(names)
        self.events = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = threading.Event()

    def _ready(self, pod: Any) -> bool:
        if pod.metadata.deletion_timestamp or pod.status.phase != "Running":
            return False
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])

    def _run(self) -> None:
        listing = self.api.list_namespaced_pod(self.namespace)
        pods = {p.metadata.name: p for p in listing.items if p.metadata.name in self.names}
        self.started.set()
        with contextlib.suppress(Exception):  # the watch is cut when the test stops it
            self._follow(pods, listing.metadata.resource_version)

    def _follow(self, pods: dict[str, Any], version: str) -> None:
        for event in self.watch.stream(self.api.list_namespaced_pod, self.namespace, resource_version=version):
            pod = event["object"]
            if pod.metadata.name not in self.names:
                continue
            self.events += 1
            if event["type"] == "DELETED":
                pods.pop(pod.metadata.name, None)
            else:
                pods[pod.metadata.name] = pod
            self.min_ready = min(self.min_ready, sum(self._ready(p) for p in pods.values()))

    def __enter__(self) -> PodMonitor:
        self.thread.start()
        self.started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.watch.stop()


def kill_at(env_vars: dict[str, str], args: list[str], marker: str) -> None:
    """Run `kubectl csi-migrate ARGS` and SIGKILL it as soon as it prints `marker`."""
    assert signal_at(env_vars, args, marker, signal.SIGKILL) == -signal.SIGKILL


def versions(kubectl: Kubectl, ns: str) -> dict[str, str]:
    """resourceVersion of every object a migration could touch."""
    result = {}
    for kind in ("statefulset", "pod", "pvc"):
        for obj in kubectl.get(kind, namespace=ns)["items"]:
            result[f"{kind}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
    for pv in kubectl.get("pv")["items"]:
        if (pv["spec"].get("claimRef") or {}).get("namespace") != ns:
            continue  # other tests may run beside this one
        result[f"pv/{pv['metadata']['name']}"] = pv["metadata"]["resourceVersion"]
    return result


def assert_migrated(env: cluster.Env, kubectl: Kubectl, made: scenario.Scenario, sts_uid_before: str) -> None:
    ns = made.namespace
    sts = kubectl.get("statefulset", made.name, ns)
    assert sts["metadata"]["uid"] != sts_uid_before, "the StatefulSet was not recreated"
    classes = {t["metadata"]["name"]: t["spec"]["storageClassName"] for t in sts["spec"]["volumeClaimTemplates"]}
    assert set(classes.values()) == {"standard-rwo"}
    for volume in made.volumes:
        pvc = kubectl.get("pvc", volume.pvc, ns)
        assert pvc["status"]["phase"] == "Bound"
        assert pvc["spec"]["storageClassName"] == "standard-rwo"
        pv = kubectl.get("pv", pvc["spec"]["volumeName"])
        assert pv["metadata"]["name"] == volume.pv, "the PV name changed"
        assert "vsphereVolume" not in pv["spec"]
        assert pv["spec"]["csi"]["driver"] == "csi.vsphere.vmware.com"
        handle = pv["spec"]["csi"]["volumeHandle"]
        assert not handle.endswith(".vmdk")
        assert vc.fcd_path(env, handle) == volume.vmdk, "the FCD is not backed by the original disk"
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete", "reclaim policy not restored"
        assert pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
        assert vc.read_marker(env, volume.vmdk, len(volume.marker)) == volume.marker, "the data changed"
    names = {f"{made.name}-{i}" for i in range(made.replicas)}
    pods = [p for p in kubectl.get("pods", namespace=ns)["items"] if p["metadata"]["name"] in names]
    assert len(pods) == made.replicas
    for pod in pods:
        owners = [o["uid"] for o in pod["metadata"].get("ownerReferences", [])]
        assert owners == [sts["metadata"]["uid"]], f"{pod['metadata']['name']} not owned by the new StatefulSet"
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
    assert sts["status"].get("readyReplicas") == made.replicas


@pytest.mark.leg
def test_rolling_migration_keeps_data_and_one_replica_down_at_most(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    made = scenario.create(env, "web", ns, replicas=3, intree_templates=("data",), csi_templates=("logs",))
    csi_volumes = [v for v in made.volumes if v.csi]
    before = versions(kubectl, ns)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    workdir = tmp_path / "run"

    with PodMonitor(env, ns, {"web-0", "web-1", "web-2"}) as monitor:
        proc = run_plugin(
            env_vars, "sts", "web", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
            "--working-directory", str(workdir), "-o", "json",
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)

    made.volumes = [v for v in made.volumes if not v.csi]
    assert_migrated(env, kubectl, made, sts_uid)
    assert monitor.events > 0
    assert monitor.min_ready >= 2, f"{3 - monitor.min_ready} replicas were down at once"
    after = versions(kubectl, ns)
    for v in csi_volumes:
        for kind, name in (("pvc", v.pvc), ("pv", v.pv)):
            if after[f"{kind}/{name}"] != before[f"{kind}/{name}"]:  # name who wrote it (once seen in CI)
                obj = kubectl.get(kind, name, ns if kind == "pvc" else None)
                writers = [(m.get("manager"), m.get("operation"), m.get("subresource"), m.get("time"))
                           for m in obj["metadata"].get("managedFields", [])]  # fmt: skip
                raise AssertionError(
                    f"{name} (already CSI) was touched: {before[f'{kind}/{name}']} -> {after[f'{kind}/{name}']}; "
                    f"its writers: {writers}"
                )
    results = {v["pvc"]: v for v in report["volumes"]}
    assert {results[v.pvc]["result"] for v in made.volumes} == {"migrated"}
    assert {results[v.pvc]["result"] for v in csi_volumes} == {"skip (already CSI)"}
    for v in made.volumes:
        assert results[v.pvc]["fcdId"] == kubectl.get("pv", v.pv)["spec"]["csi"]["volumeHandle"]
    # Events a person reads in `kubectl describe`: one per volume on its PVC, one on the StatefulSet.
    events = [e for e in kubectl.get("events", namespace=ns)["items"] if e["reason"] == "MigratedToCSI"]
    on_pvcs = {e["involvedObject"]["name"] for e in events if e["involvedObject"]["kind"] == "PersistentVolumeClaim"}
    assert on_pvcs == {v.pvc for v in made.volumes}
    on_sts = [e for e in events if e["involvedObject"]["kind"] == "StatefulSet"]
    assert len(on_sts) == 1 and all(v.pvc in on_sts[0]["message"] for v in made.volumes), on_sts
    # Backups: one YAML per object, private.
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
    backups = sorted(p.relative_to(workdir / "backup").as_posix() for p in (workdir / "backup").rglob("*.yaml"))
    assert "statefulset/web.yaml" in backups
    assert {f"pod/web-{i}.yaml" for i in range(3)} <= set(backups)
    assert {f"persistentvolume/{v.pv}.yaml" for v in made.volumes} <= set(backups)
    for path in workdir.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # A second run on the finished directory refuses, changing nothing.
    again = run_plugin(
        env_vars, "sts", "web", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
        "--working-directory", str(workdir),
    )  # fmt: skip
    assert again.returncode == 1
    assert "finished migration" in again.stderr


@pytest.mark.leg
def test_offline_migration_reuses_existing_fcd(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    made = scenario.create(env, "db", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "db", ns)["metadata"]["uid"]
    proc = run_plugin(
        env_vars, "sts", "db", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes", "--strategy", "offline",
        "--working-directory", str(tmp_path / "run"), "-o", "name",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # -o name: the migrated objects on stdout, the actions on stderr.
    expected = {f"persistentvolume/{v.pv}" for v in made.volumes} | {
        f"persistentvolumeclaim/{v.pvc}" for v in made.volumes
    }
    assert set(proc.stdout.split()) == expected | {"statefulset.apps/db"}
    assert "scaled to 0" in proc.stderr
    assert proc.stderr.count("(recorded by the CSI driver)") == len(made.volumes)
    assert_migrated(env, kubectl, made, sts_uid)
    for v in made.volumes:
        assert kubectl.get("pv", v.pv)["spec"]["csi"]["volumeHandle"] == v.fcd_id, "a second FCD was made"
    # The CSI syncer's records of the in-tree volumes were released before the new PVs were made.
    records = kubectl.get("cnsvspherevolumemigrations")["items"]
    assert not {r["metadata"]["name"] for r in records} & {v.fcd_id for v in made.volumes}
    steps = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    order = [s["step"] for s in steps if s["event"] == "done"]
    for v in made.volumes:
        assert order.index(f"cns-release/{v.pv}") < order.index(f"create-pv/{v.pv}")


def test_dry_run_and_preflight_change_nothing(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    scenario.create(env, "web", ns, replicas=3)
    before = versions(kubectl, ns)
    workdir = tmp_path / "run"
    for args in (
        ("preflight", "web"),
        ("preflight",),
        ("sts", "web", "--csi-storageclass", "standard-rwo", "--dry-run"),
        ("sts", "web", "--csi-storageclass", "standard-rwo", "--dry-run=server"),
        ("sts", "web", "--csi-storageclass", "standard-rwo", "--dry-run=server", "-o", "json"),
    ):
        proc = run_plugin(env_vars, *args, "-n", ns, "--working-directory", str(workdir))
        assert proc.returncode == 0, (args, proc.stderr)
        assert not workdir.exists(), f"{args} created the working directory"
    assert versions(kubectl, ns) == before
    plan = json.loads(proc.stdout)
    assert plan["kind"] == "MigrationPlan" and len(plan["plan"]["volumes"]) == 3


def test_migrating_web_leaves_web_2_alone(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    web = scenario.create(env, "web", ns, replicas=2)
    other = scenario.create(env, "web-2", ns, replicas=2)
    before = versions(kubectl, ns)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    proc = run_plugin(
        env_vars, "sts", "web", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
        "--working-directory", str(tmp_path / "run"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_migrated(env, kubectl, web, sts_uid)
    after = versions(kubectl, ns)
    untouched = [k for k in before if "web-2" in k or any(v.pv in k for v in other.volumes)]
    assert untouched and all(after[k] == before[k] for k in untouched), "web-2's objects changed"
    for v in other.volumes:
        assert "vsphereVolume" in kubectl.get("pv", v.pv)["spec"]


def test_cluster_name_through_admin_cluster_with_seed_spelling(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    made = scenario.create(env, "app", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "app", ns)["metadata"]["uid"]
    admin = env.info()["admin_kubeconfig"]
    user_only = {k: v for k, v in env_vars.items() if k != "KUBECONFIG"}
    common = [
        "--kubeconfig", admin, "--cluster-name", cluster.USER_CLUSTER, "--sts-name", "app", "--sts-namespace", ns,
        "--intree-storageclass", "standard", "--csi-storageclass", "standard-rwo",
    ]  # fmt: skip
    pre = run_plugin(user_only, "preflight", *common, "--working-directory", str(tmp_path / "run"))
    assert pre.returncode == 0, pre.stderr + pre.stdout
    assert "can be migrated" in pre.stdout
    proc = run_plugin(user_only, "rolling-migration", "all", *common, "--working-directory", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert_migrated(env, kubectl, made, sts_uid)


@pytest.mark.parametrize(
    "kill_after",
    [
        "statefulset.apps/app deleted",  # right after the StatefulSet is gone
        "persistentvolume/{pv} deleted",  # in the middle of a replica: PVC and PV gone, no new ones yet
    ],
)
@pytest.mark.leg
def test_killed_run_resumes(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path, kill_after: str
) -> None:
    made = scenario.create(env, "app", ns, replicas=3)
    sts_uid = kubectl.get("statefulset", "app", ns)["metadata"]["uid"]
    middle = next(v for v in made.volumes if v.ordinal == 1)
    marker = kill_after.format(pv=middle.pv)
    args = [
        "sts", "app", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
        "--working-directory", str(tmp_path / "run"),
    ]  # fmt: skip
    kill_at(env_vars, args, marker)

    resumed = run_plugin(env_vars, *args)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert "resuming the run" in resumed.stdout
    assert_migrated(env, kubectl, made, sts_uid)


class ForeignHolder:
    """Another run's lease, held from another machine whose clock is 10 minutes behind: it
    renews every 2 s, each renewTime 10 minutes in the past by this machine's clock."""

    def __init__(self, kubectl: Kubectl, namespace: str, name: str, holder: str = "elsewhere/other-run/1") -> None:
        self.kubectl, self.namespace, self.name, self.holder = kubectl, namespace, name, holder
        self.stop = threading.Event()
        self.renewals = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _stamp(self) -> str:
        from datetime import UTC, datetime, timedelta

        return (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _run(self) -> None:
        while not self.stop.wait(2):
            with contextlib.suppress(Exception):  # a conflict with the run under test: next time
                patch = {"spec": {"holderIdentity": self.holder, "renewTime": self._stamp()}}
                self.kubectl("-n", self.namespace, "patch", "lease", self.name, "--type=merge", "-p", json.dumps(patch))
                self.renewals += 1

    def __enter__(self) -> ForeignHolder:
        self.kubectl.apply(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.holder,
                    "leaseDurationSeconds": 60,
                    "renewTime": self._stamp(),
                },
            }
        )
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_item_8_a_live_run_with_a_skewed_clock_keeps_its_lease(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """Another run holds the StatefulSet's lease and renews it, from a machine whose clock is
    behind: its renewTime looks 10 minutes old here. The lease is alive; a second run must not
    take it over by comparing that time with its own clock. It is refused, changing nothing."""
    scenario.create(env, "web", ns, replicas=2)
    before = versions(kubectl, ns)
    with ForeignHolder(kubectl, ns, "csi-migrate-statefulset-web"):
        proc = run_plugin(
            env_vars, "sts", "web", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
            "--working-directory", str(tmp_path / "run"),
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "another csi-migrate run (elsewhere/other-run/1) holds lease" in proc.stderr
    assert "renews it" in proc.stderr
    assert versions(kubectl, ns) == before, "something changed while another run held the lock"


def test_item_10_a_live_run_in_another_container_of_the_same_hostname_keeps_its_lease(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """Issue 17, item 10. Another run holds the lease and renews it from a container that shares
    this machine's hostname but not its processes: its pid is no process here. The holder is
    alive; the run must not take its lease as a dead process's (before: host and pid alone
    decided, and it was taken at once). Refused, nothing changed."""
    import socket
    import subprocess
    import sys

    scenario.create(env, "web", ns, replicas=1)
    before = versions(kubectl, ns)
    gone = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    )
    holder = f"{socket.gethostname()}/other-run/{gone}"
    with ForeignHolder(kubectl, ns, "csi-migrate-statefulset-web", holder):
        proc = run_plugin(
            env_vars, "sts", "web", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
            "--working-directory", str(tmp_path / "run"),
        )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"another csi-migrate run ({holder}) holds lease" in proc.stderr and "renews it" in proc.stderr
    assert versions(kubectl, ns) == before, "something changed while another run held the lock"


def test_an_abandoned_lease_of_another_machine_is_taken_over_once_seen_unrenewed(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """A run on another machine died holding the lease (5 s duration, so the test is short):
    the run watches it go unrenewed for that long on its own clock, says so, and takes it."""
    from kubectl_csi_migrate.kube.lock import now

    made = scenario.create(env, "web", ns, replicas=1, pdb=False)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    spec = {"holderIdentity": "elsewhere/dead-run/1", "leaseDurationSeconds": 5, "renewTime": now()}
    kubectl.apply(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "csi-migrate-statefulset-web", "namespace": ns},
            "spec": spec,
        }
    )
    proc = run_plugin(
        env_vars, "sts", "web", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
        "--working-directory", str(tmp_path / "run"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "was not renewed for 5s: its holder elsewhere/dead-run/1 is gone; taking it" in proc.stdout
    assert_migrated(env, kubectl, made, sts_uid)


@pytest.mark.serial
def test_item_8_a_run_that_loses_its_lease_stops_before_its_next_change(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """While the run waits (the CSI syncer paused, so the disk's release waits), another run
    takes its lease over (as one would after this run's renewals failed for a lease duration).
    The run finds out at its next renewal and must stop before its next change; the same command
    finishes once the lease is free."""
    from kubectl_csi_migrate.kube.lock import RENEW_SECONDS

    made = scenario.create(env, "db", ns, replicas=1, pdb=False)
    (volume,) = made.volumes
    sts_uid = kubectl.get("statefulset", "db", ns)["metadata"]["uid"]
    args = [
        "sts", "db", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
        "--working-directory", str(tmp_path / "run"),
    ]  # fmt: skip
    syncer = env.processes()["vsphere-syncer"]
    assert syncer
    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env_vars['PATH']}"
    os.killpg(syncer, signal.SIGSTOP)
    try:
        proc = subprocess.Popen(
            ["kubectl", "csi-migrate", *args],
            env={**env_vars, "PATH": path}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            if f"persistentvolume/{volume.pv} deleted" in line:
                break
        else:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        # The run now waits for the syncer to release the disk: take its lease, and give the
        # run's renewal time to come round and find it taken.
        patch = {"spec": {"holderIdentity": "elsewhere/other-run/1"}}
        kubectl("-n", ns, "patch", "lease", "csi-migrate-statefulset-db", "--type=merge", "-p", json.dumps(patch))
        time.sleep(RENEW_SECONDS + 3)
    finally:
        os.killpg(syncer, signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert "lost its lease" in err and "held by elsewhere/other-run/1" in err, err
    assert not kubectl.exists("pv", volume.pv), "a PV was created after the lease was lost"
    assert vc.read_marker(env, volume.vmdk, len(volume.marker)) == volume.marker
    kubectl("-n", ns, "delete", "lease", "csi-migrate-statefulset-db")  # the other run is done
    resumed = run_plugin(env_vars, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert_migrated(env, kubectl, made, sts_uid)


def answer_prompt_on_terminal(
    env_vars: dict[str, str], ns: str, tmp_path: Path
) -> tuple[subprocess.Popen[str], int, bytes]:
    """Start `sts web` with stdin and stderr on a pseudo-terminal; return once it asks."""
    import pty

    primary, secondary = pty.openpty()
    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env_vars['PATH']}"
    proc = subprocess.Popen(
        ["kubectl", "csi-migrate", "sts", "web", "-n", ns, "--csi-storageclass", "standard-rwo",
         "--working-directory", str(tmp_path / "run")],
        env={**env_vars, "PATH": path}, stdin=secondary, stdout=subprocess.PIPE, stderr=secondary, text=True,
    )  # fmt: skip
    os.close(secondary)
    screen = b""
    while b"Proceed? [y/N]" not in screen:
        screen += os.read(primary, 4096)
    return proc, primary, screen


def test_terminal_shows_plan_and_a_no_changes_nothing(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    scenario.create(env, "web", ns, replicas=2)
    before = versions(kubectl, ns)
    proc, primary, screen = answer_prompt_on_terminal(env_vars, ns, tmp_path)
    os.write(primary, b"n\n")
    assert proc.wait(timeout=60) == 1
    os.close(primary)
    text = screen.decode()
    assert "Plan: statefulset" in text and "data-web-1" in text and "rolling" in text
    assert versions(kubectl, ns) == before
    assert not (tmp_path / "run").exists()


def test_offline_keeps_skipped_claims_despite_delete_retention_policy(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """whenScaled: Delete would make scaling to zero delete every claim, the already-CSI ones
    too; the migration must keep them, and the StatefulSet gets its policy back."""
    made = scenario.create(env, "db", ns, replicas=2, csi_templates=("logs",), pdb=False)
    policy = {"whenDeleted": "Retain", "whenScaled": "Delete"}
    kubectl(
        "-n",
        ns,
        "patch",
        "sts",
        "db",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"persistentVolumeClaimRetentionPolicy": policy}}),
    )
    csi = [v for v in made.volumes if v.csi]
    uids = {v.pvc: kubectl.get("pvc", v.pvc, ns)["metadata"]["uid"] for v in csi}
    proc = run_plugin(
        env_vars, "sts", "db", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes", "--strategy", "offline",
        "--working-directory", str(tmp_path / "run"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for v in csi:
        assert kubectl.get("pvc", v.pvc, ns)["metadata"]["uid"] == uids[v.pvc], f"{v.pvc} was deleted and recreated"
        assert vc.read_marker(env, v.vmdk, len(v.marker)) == v.marker
    assert kubectl.get("statefulset", "db", ns)["spec"]["persistentVolumeClaimRetentionPolicy"] == policy


def test_reclaim_policy_reverted_during_the_run_is_set_back_before_any_delete(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    made = scenario.create(env, "app", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "app", ns)["metadata"]["uid"]
    args = [
        "sts", "app", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
        "--working-directory", str(tmp_path / "run"),
    ]  # fmt: skip
    kill_at(env_vars, args, "statefulset.apps/app deleted")
    for v in made.volumes:  # someone (GitOps, a person) reverts the policy while the run is stopped
        kubectl("patch", "pv", v.pv, "-p", '{"spec":{"persistentVolumeReclaimPolicy":"Delete"}}')
    resumed = run_plugin(env_vars, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("changed back by someone: set to Retain again") == len(made.volumes)
    assert_migrated(env, kubectl, made, sts_uid)


@pytest.mark.serial
def test_terminal_yes_migrates_with_a_progress_line_per_replica(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """On a terminal: a line per replica, and a live line while a wait lasts (the garbage
    collector paused for 5 s: the orphaned pods wait on it), instead of a line every 30 s."""
    from tests.e2e.test_faults import paused

    made = scenario.create(env, "web", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    proc, primary, screen = answer_prompt_on_terminal(env_vars, ns, tmp_path)
    with paused(env, "kube-controller-manager"):
        os.write(primary, b"y\n")
        time.sleep(5)
    out, _ = proc.communicate(timeout=300)
    with contextlib.suppress(OSError):  # the terminal closes with the process
        while chunk := os.read(primary, 4096):
            screen += chunk
    os.close(primary)
    assert proc.returncode == 0, screen.decode() + out
    text = screen.decode()
    assert "--- replica 1/2: web-1" in text and "--- replica 2/2: web-0" in text
    assert "\r\x1b[Kwaiting for " in text, "no live line while the garbage collector was paused"
    assert "still waiting for" not in text + out
    assert_migrated(env, kubectl, made, sts_uid)


@pytest.mark.serial
def test_item_4_a_syncer_that_does_not_release_a_disk_stops_the_run_with_what_to_do(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """The real CSI syncer paused (SIGSTOP) while the run deletes an in-tree PV: its
    CnsVSphereVolumeMigration record stays. The run stops within its bound, saying what to look
    at and what is safe; once the syncer runs again, the same command finishes."""
    made = scenario.create(env, "db", ns, replicas=1, pdb=False)
    (volume,) = made.volumes
    workdir = tmp_path / "run"
    args = ["sts", "db", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes", "--working-directory", str(workdir)]
    syncer = env.processes()["vsphere-syncer"]  # leads the process group of the syncer
    assert syncer
    os.killpg(syncer, signal.SIGSTOP)
    try:
        stopped = run_plugin(env_vars, *args, "--timeout", "20s")
        assert stopped.returncode == 1, stopped.stderr
        errors = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
        error = errors[0]  # then the generic "the run is recorded in DIR" line
        assert f"has not released {volume.vmdk}" in error
        assert f"cnsvspherevolumemigration/{volume.fcd_id} still exists" in error
        assert "vsphere-syncer" in error and "Nothing is lost" in error and "run the same command again" in error
        assert not kubectl.exists("pv", volume.pv), "the run stopped before deleting the PV"
    finally:
        os.killpg(syncer, signal.SIGCONT)
    assert vc.read_marker(env, volume.vmdk, len(volume.marker)) == volume.marker
    resumed = run_plugin(env_vars, *args)
    assert resumed.returncode == 0, resumed.stderr
    pv = kubectl.get("pv", volume.pv)
    assert pv["spec"]["csi"]["volumeHandle"] == volume.fcd_id
    assert vc.read_marker(env, volume.vmdk, len(volume.marker)) == volume.marker


def test_item_5_a_statefulset_put_back_by_someone_else_stops_the_run(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """While the run has the StatefulSet deleted, a GitOps controller applies its manifest
    again (in-tree templates). The resumed run must not adopt it as its own and end "migrated";
    it stops, says what to do, and after that the same command finishes."""
    made = scenario.create(env, "web", ns, replicas=2)
    args = [
        "sts", "web", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
        "--working-directory", str(tmp_path / "run"),
    ]  # fmt: skip
    kill_at(env_vars, args, "pod/web-0 created")
    kubectl("-n", ns, "wait", "--for=delete", "statefulset/web", "--timeout=60s")
    kubectl.apply(scenario.statefulset("web", ns, 2, {"data": "standard"}, "1Gi"))
    foreign = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]

    resumed = run_plugin(env_vars, *args)
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr
    assert f"created again by someone else while the migration ran (uid {foreign}" in resumed.stderr
    assert "--cascade=orphan" in resumed.stderr
    sts = kubectl.get("statefulset", "web", ns)
    assert sts["metadata"]["uid"] == foreign, "the tool replaced someone else's StatefulSet"
    assert "csi-migrate.kubectl.io/recreated-from" not in (sts["metadata"].get("annotations") or {})
    for v in made.volumes:
        assert vc.read_marker(env, v.vmdk, len(v.marker)) == v.marker

    # What the message says to do, then the same command.
    kubectl("-n", ns, "delete", "statefulset", "web", "--cascade=orphan", "--wait=true")
    finished = run_plugin(env_vars, *args)
    assert finished.returncode == 0, finished.stderr
    sts = kubectl.get("statefulset", "web", ns)
    assert {t["spec"]["storageClassName"] for t in sts["spec"]["volumeClaimTemplates"]} == {"standard-rwo"}
    for v in made.volumes:
        assert kubectl.get("pv", v.pv)["spec"]["csi"]["volumeHandle"] == v.fcd_id
        assert vc.read_marker(env, v.vmdk, len(v.marker)) == v.marker


def signal_at(env_vars: dict[str, str], args: list[str], marker: str, signum: int) -> int:
    """Run `kubectl csi-migrate ARGS`, send `signum` as soon as it prints `marker`; its exit code."""
    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env_vars['PATH']}"
    proc = subprocess.Popen(
        ["kubectl", "csi-migrate", *args],
        env={**env_vars, "PATH": path}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As from a terminal: a test run started in the background (`pytest &`) ignores SIGINT,
        # and its children would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            os.kill(proc.pid, signum)
            break
    else:
        raise AssertionError(f"the run ended before {marker!r}: {''.join(seen)}")
    proc.stdout.read()
    proc.wait(timeout=60)
    return proc.returncode


def test_item_11_no_kubeconfig_key_is_left_behind_after_a_signal_or_a_kill(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """With --cluster-name the user cluster's admin.conf (with its client key) is written to a
    private folder for the client library. SIGTERM, SIGHUP and SIGINT remove it; after a SIGKILL
    the next command removes the dead run's folder."""
    import base64

    made = scenario.create(env, "app", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "app", ns)["metadata"]["uid"]
    user = json.loads(Path(env.info()["user_kubeconfig"]).read_text())
    key = base64.b64decode(user["users"][0]["user"]["client-key-data"])
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    environ = {k: v for k, v in env_vars.items() if k != "KUBECONFIG"} | {"TMPDIR": str(tmp)}
    common = [
        "--kubeconfig", env.info()["admin_kubeconfig"], "--cluster-name", cluster.USER_CLUSTER,
        "--sts-name", "app", "--sts-namespace", ns, "--csi-storageclass", "standard-rwo",
        "--working-directory", str(tmp_path / "run"),
    ]  # fmt: skip
    run = ["rolling-migration", "all", *common]

    def keys_left() -> list[Path]:
        return [p for p in tmp.rglob("*") if p.is_file() and key in p.read_bytes()]

    for signum, marker in (
        (signal.SIGTERM, "statefulset.apps/app deleted"),
        (signal.SIGHUP, "persistentvolumeclaim/data-app-1 deleted"),
        (signal.SIGINT, "persistentvolumeclaim/data-app-0 deleted"),
    ):
        code = signal_at(environ, run, marker, signum)
        assert code in (130, 143), f"{signum.name}: exit {code}"
        assert not keys_left(), f"{signum.name} left the client key in {keys_left()}"
    code = signal_at(environ, run, "statefulset.apps/app created", signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert keys_left(), "a SIGKILLed run cannot clean up; this test expects its folder"
    pre = run_plugin(environ, "preflight", *common)
    assert pre.returncode in (0, 1), pre.stderr
    assert not keys_left(), "the next command did not remove the dead run's folder"
    finished = run_plugin(environ, *run)
    assert finished.returncode == 0, finished.stderr
    assert not keys_left()
    assert_migrated(env, kubectl, made, sts_uid)


def test_item_6_a_resume_recreates_the_users_claim_retention_policy(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """The run sets the StatefulSet's claim retention to Retain for the migration (that bumps its
    generation). Killed right after, the resumed run must still recreate the StatefulSet with the
    user's policy, not take its own patch for a change by someone else."""
    made = scenario.create(env, "web", ns, replicas=2)
    policy = {"whenDeleted": "Delete", "whenScaled": "Retain"}
    kubectl(
        "-n",
        ns,
        "patch",
        "statefulset",
        "web",
        "-p",
        json.dumps({"spec": {"persistentVolumeClaimRetentionPolicy": policy}}),
    )
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    args = [
        "sts", "web", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
        "--working-directory", str(tmp_path / "run"),
    ]  # fmt: skip
    kill_at(env_vars, args, "claim retention set to Retain")
    resumed = run_plugin(env_vars, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert_migrated(env, kubectl, made, sts_uid)
    sts = kubectl.get("statefulset", "web", ns)
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == policy
    assert not sts["metadata"].get("finalizers")


def test_item_7_the_users_reclaim_policy_survives_a_new_working_directory(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """A run killed after setting a PV to Retain, then started again with a new working
    directory (the old one lost, or the advice after a refused resume): the new plan must record
    the user's policy (Delete), not the tool's Retain, and restore it at the end."""
    made = scenario.create(env, "web", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    common = ["sts", "web", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes"]
    kill_at(env_vars, [*common, "--working-directory", str(tmp_path / "first")], "reclaim policy set to Retain")
    assert "Retain" in {kubectl.get("pv", v.pv)["spec"]["persistentVolumeReclaimPolicy"] for v in made.volumes}
    again = run_plugin(env_vars, *common, "--working-directory", str(tmp_path / "second"))
    assert again.returncode == 0, again.stderr
    assert_migrated(env, kubectl, made, sts_uid)
    for v in made.volumes:
        pv = kubectl.get("pv", v.pv)
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete", v.pv
        assert "csi-migrate.kubectl.io/original-reclaim-policy" not in (pv["metadata"].get("annotations") or {})


@pytest.mark.leg
def test_item_9_every_migrated_disk_is_kept_when_its_node_vm_is_deleted(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """A First Class Disk without keepAfterDeleteVm is deleted with a node VM it is attached to.
    The syncer of a vCenter before 8.0u3 (and RegisterDisk on any) leaves the flag unset: here
    it is cleared after the syncer registered each disk. After the migration every FCD has it,
    and the report says so."""
    made = scenario.create(env, "web", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    for v in made.volumes:
        assert v.fcd_id, "the syncer registered every bound in-tree disk"
        assert vc.keep_after_delete_vm(env, v.fcd_id, value=False) is False
    proc = run_plugin(
        env_vars, "sts", "web", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
        "--working-directory", str(tmp_path / "run"), "-o", "json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_migrated(env, kubectl, made, sts_uid)
    report = {v["pvc"]: v for v in json.loads(proc.stdout)["volumes"]}
    for v in made.volumes:
        handle = kubectl.get("pv", v.pv)["spec"]["csi"]["volumeHandle"]
        assert vc.keep_after_delete_vm(env, handle) is True, f"{v.pv}: FCD {handle} lacks keepAfterDeleteVm"
        assert report[v.pvc]["keepAfterDeleteVm"] is True


@pytest.mark.serial
def test_item_10_zone_and_storage_policy_are_carried_to_the_csi_volume(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """In-tree PVs labelled with their zone and region (beta keys, as the in-tree provisioner
    wrote them) and provisioned with a storage policy, on a cluster whose CSI driver reports
    zone and region topology: preflight warns that the CSI class names another policy; the new
    PVs carry the zone and region as node affinity with the driver's keys and the policy as
    their volume attribute, and the pods schedule onto them."""
    keys = ["topology.kubernetes.io/region", "topology.kubernetes.io/zone"]
    nodes = [n["metadata"]["name"] for n in kubectl.get("nodes")["items"]]
    csinodes = [kubectl.get("csinode", n) for n in nodes]

    def set_csinodes(topology: list[str] | None) -> None:
        docs = []
        for node in csinodes:
            doc = {k: node[k] for k in ("apiVersion", "kind")}
            doc["metadata"] = {k: node["metadata"][k] for k in ("name", "annotations")}
            doc["spec"] = {"drivers": [{**d, "topologyKeys": topology} for d in node["spec"]["drivers"]]}
            docs.append(doc)
        kubectl("delete", "csinode", *nodes, "--wait")
        kubectl("create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))

    zone = {"topology.kubernetes.io/zone": "zone-a", "topology.kubernetes.io/region": "region-1"}
    labels = [f"{k}={v}" for k, v in zone.items()]
    kubectl("label", "node", *nodes, *labels, "--overwrite")
    set_csinodes(keys)
    try:
        made = scenario.create(
            env, "web", ns, replicas=2, storage_policy="vSAN Default Storage Policy",
            pv_labels={"failure-domain.beta.kubernetes.io/zone": "zone-a",
                       "failure-domain.beta.kubernetes.io/region": "region-1"},
        )  # fmt: skip
        sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
        proc = run_plugin(
            env_vars, "sts", "web", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
            "--working-directory", str(tmp_path / "run"),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "warning: storage-policy: storageclass/standard-rwo names storage policy (none)" in proc.stderr
        assert_migrated(env, kubectl, made, sts_uid)
        for v in made.volumes:
            pv = kubectl.get("pv", v.pv)
            terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
            assert terms == [{"matchExpressions": [{"key": k, "operator": "In", "values": [zone[k]]} for k in keys]}], (
                terms
            )
            assert pv["spec"]["csi"]["volumeAttributes"]["storagepolicyname"] == "vSAN Default Storage Policy"
    finally:
        set_csinodes(None)
        kubectl("label", "node", *nodes, *[f"{k}-" for k in zone])


@pytest.mark.serial
def test_item_2_a_disk_in_the_second_configured_datacenter_is_registered_where_preflight_found_it(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """The tool's csi-vsphere.conf lists two datacenters, DC-EMPTY first (a datacenter without
    the disks' datastore, created for this test) and DC0, which holds the disks. Preflight finds
    each disk in DC0; the run must register it there too, not in the first configured
    datacenter, where it would fail with the claim and PV already deleted."""
    from testenv import csidriver

    si = vc.connect(env)
    empty = si.content.rootFolder.CreateDatacenter(name="DC-EMPTY")
    try:
        conf = csidriver.csi_vsphere_conf(env.info()["vcsim_port"]).replace(
            f'datacenters = "{cluster.DATACENTER}"', f'datacenters = "DC-EMPTY, {cluster.DATACENTER}"'
        )
        assert "DC-EMPTY, " in conf
        path = tmp_path / "csi-vsphere.conf"
        path.write_text(conf)
        path.chmod(0o600)
        made = scenario.create(env, "web", ns, replicas=2)
        sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
        common = [
            "web", "-n", ns, "--csi-storageclass", "standard-rwo", "--vsphere-config", str(path),
            "--working-directory", str(tmp_path / "run"),
        ]  # fmt: skip
        proc = run_plugin(env_vars, "sts", *common, "--yes")
        assert proc.returncode == 0, proc.stderr
        assert_migrated(env, kubectl, made, sts_uid)
        plan = json.loads((tmp_path / "run" / "run.json").read_text())["plan"]
        assert {v["datacenter"] for v in plan["volumes"]} == {cluster.DATACENTER}
    finally:
        vc._wait_task(si, empty.Destroy_Task())


@pytest.mark.slow
def test_every_request_of_a_step_is_one_its_needs_name_and_preflight_checks(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """A role lacking a verb the run uses after its first change would pass preflight and stop
    the run half way, on every resume. A rolling and an offline migration, each then rolled back,
    run at -v 6, where the client logs every request with the access it needs and the run logs
    each step it does or undoes: every request after the first change must be in REQUIRED_ACCESS
    (what preflight's `rbac` check asks for), and every request made during a step must be one
    that step's kind declares (its Kind's needs) or one of the run's own (the Lease, the record)."""
    import re

    from kubectl_csi_migrate.migration.kinds import KINDS, RUN_NEEDS, access_for, as_owner

    # Lines of threads beside the main one name it: `D kubectl_csi_migrate.kube [volume_0]: ...`.
    request = re.compile(r"^D kubectl_csi_migrate\.kube( \[\S+\])?: (\w+) \S+ \(needs (\w+) (\w+) ?(\w*)\)$")
    step_line = re.compile(r"^D kubectl_csi_migrate\.migration( \[\S+\])?: step (\S+) (\S+): (do|undo)$")
    scenario.deployment(env, "api", ns, replicas=2)
    scenario.bare_pod(env, "tool", ns, "tool-data")
    runs = (
        ("StatefulSet", "rolling", ["sts", "web", "--strategy", "rolling"], "web"),
        ("StatefulSet", "offline", ["sts", "db", "--strategy", "offline"], "db"),
        ("Deployment", "offline", ["deploy", "api"], "deploy/api"),
        ("PersistentVolumeClaim", "rolling", ["pvc", "tool-data"], "pvc/tool-data"),
    )
    for owner, strategy, migrate, name in runs:
        if owner == "StatefulSet":
            scenario.create(env, migrate[1], ns, replicas=2, pdb=strategy == "rolling")
        checked = set(access_for(owner))  # what preflight's `rbac` check asks for, for this kind
        workdir = ["--working-directory", str(tmp_path / name.replace("/", "-")), "-v", "6"]
        for command in (
            [*migrate, "-n", ns, "--csi-storageclass", "standard-rwo", "--yes", *workdir],
            ["rollback", name, "-n", ns, "--yes", *workdir],
        ):
            proc = run_plugin(env_vars, *command)
            assert proc.returncode == 0, proc.stderr[-3000:]
            needs: list[tuple[str, tuple[str, str, str], str]] = []
            kinds: dict[str, str] = {}  # thread -> the kind of step it is in
            for text in proc.stderr.splitlines():
                if m := step_line.match(text):
                    kinds[m[1] or ""] = m[2]
                elif m := request.match(text):
                    needs.append((m[2], (m[3], m[4], m[5]), kinds.get(m[1] or "", "")))
            assert needs and kinds, "no request or step logged at -v 6"
            first_change = next(
                i for i, (method, access, _) in enumerate(needs)
                if method != "GET" and not access[1].startswith("SelfSubject")
            )  # fmt: skip
            used = {access for _, access, _ in needs[first_change:]}
            assert used - checked == set(), f"{command[0]} {name}: used, not checked: {used - checked}"
            declared = {kind: as_owner(owner, KINDS[kind].needs + RUN_NEEDS) for kind in KINDS}
            undeclared = {(kind, access) for _, access, kind in needs if kind and access not in declared[kind]}
            assert not undeclared, f"{command[0]} {name}: requests a step does not declare: {undeclared}"


@pytest.mark.serial
def test_every_command_logs_out_of_every_vcenter_session_it_opened(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """A vCenter session left open stays on the server until its idle timeout (30 min by
    default), counting against the server's session limit: `all -A` over hundreds of owners would
    leave hundreds. Found by review: preflight (its own, and the one `sts` runs first) never
    logged out; vcsim held 607 of the tool's sessions after a few benchmarks."""
    scenario.create(env, "web", ns, replicas=2)
    manager = vc.connect(env).content.sessionManager
    mine = manager.currentSession.key

    def tool_sessions() -> set[str]:
        return {s.key for s in manager.sessionList or [] if s.key != mine and "pyvmomi" in (s.userAgent or "").lower()}

    before = tool_sessions()
    workdir = ["--working-directory", str(tmp_path / "run")]
    for command in (
        ["preflight", "web"],
        ["sts", "web", "--csi-storageclass", "standard-rwo", "--yes"],
        ["rollback", "web", "--yes"],
        ["all", "--csi-storageclass", "standard-rwo", "--yes", "--parallel", "2"],
    ):
        proc = run_plugin(env_vars, *command, "-n", ns, *workdir)
        assert proc.returncode == 0, proc.stderr
        left = tool_sessions() - before
        assert not left, f"`{command[0]}` left {len(left)} vCenter session(s) open"
