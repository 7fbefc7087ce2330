"""Owners beyond the StatefulSet, driven as `kubectl csi-migrate ...` on the real environment: a
Deployment (`deploy`), claims on their own (`pvc`: a bare pod's, an unmounted one), and `all`
over every kind; each killed mid-run and resumed, and rolled back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from testenv import cluster, scenario, vc
from tests.e2e.conftest import Kubectl, run_plugin
from tests.e2e.test_migration import assert_migrated

pytestmark = pytest.mark.e2e

CSI = ["--csi-storageclass", "standard-rwo"]


def assert_claim_migrated(env: cluster.Env, kubectl: Kubectl, ns: str, volume: scenario.Volume) -> None:
    """The claim bound to a CSI PV of the same name on the same disk, its data intact."""
    pvc = kubectl.get("pvc", volume.pvc, ns)
    assert pvc["status"]["phase"] == "Bound"
    assert pvc["spec"]["storageClassName"] == "standard-rwo"
    pv = kubectl.get("pv", pvc["spec"]["volumeName"])
    assert pv["metadata"]["name"] == volume.pv, "the PV name changed"
    assert pv["spec"]["csi"]["driver"] == "csi.vsphere.vmware.com" and "vsphereVolume" not in pv["spec"]
    assert vc.fcd_path(env, pv["spec"]["csi"]["volumeHandle"]) == volume.vmdk, "not the original disk"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete", "reclaim policy not restored"
    assert vc.read_marker(env, volume.vmdk, len(volume.marker)) == volume.marker, "the data changed"


def assert_claim_in_tree(kubectl: Kubectl, ns: str, volume: scenario.Volume) -> None:
    pvc = kubectl.get("pvc", volume.pvc, ns)
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["volumeName"] == volume.pv
    pv = kubectl.get("pv", volume.pv)
    assert pv["spec"]["vsphereVolume"]["volumePath"] == volume.vmdk
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"


def ready_pods(kubectl: Kubectl, ns: str, app: str) -> list[dict[str, object]]:
    pods = kubectl("-n", ns, "get", "pods", "-l", f"app={app}", "-o", "json")
    return [
        p
        for p in json.loads(pods)["items"]
        if not p["metadata"].get("deletionTimestamp")
        and {c["type"]: c["status"] for c in p["status"].get("conditions", [])}.get("Ready") == "True"
    ]


@pytest.mark.leg
@pytest.mark.slow
def test_all_migrates_statefulsets_a_deployment_a_bare_pods_claim_and_an_unmounted_claim(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """Two StatefulSets (one with two templates), a Deployment of 2 replicas on one in-tree
    claim, a claim mounted by a bare pod and an unmounted claim: the survey lists each with its
    command; `all` migrates every one (markers intact, the Deployment back at 2 Ready, the bare
    pod running again on the CSI claim); a second `all` finds nothing to do and says so."""
    web = scenario.create(env, "web", ns, replicas=2, intree_templates=("data", "wal"))
    db = scenario.create(env, "db", ns, replicas=1)
    api = scenario.deployment(env, "api", ns, replicas=2)
    tool = scenario.bare_pod(env, "tool", ns, "tool-data")
    scratch = scenario.intree_claims(env, ns, ["scratch"], "scratch")[0]
    uids = {n: kubectl.get("statefulset", n, ns)["metadata"]["uid"] for n in ("web", "db")}
    pod_uid = kubectl.get("pod", "tool", ns)["metadata"]["uid"]

    survey = run_plugin(env_vars, "preflight", "-n", ns, *CSI, "-o", "json")
    assert survey.returncode == 0, survey.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(survey.stdout)["items"]}
    assert sorted(rows) == [
        ("Deployment", "api"), ("PersistentVolumeClaim", "scratch"), ("PersistentVolumeClaim", "tool-data"),
        ("StatefulSet", "db"), ("StatefulSet", "web"),
    ]  # fmt: skip
    assert all(r["migratable"] for r in rows.values()), rows
    assert rows[("Deployment", "api")]["command"] == f"kubectl csi-migrate deploy api -n {ns}"
    assert rows[("PersistentVolumeClaim", "tool-data")]["command"] == f"kubectl csi-migrate pvc tool-data -n {ns}"

    args = ["all", "-n", ns, *CSI, "--yes", "--working-directory", str(tmp_path)]
    proc = run_plugin(env_vars, *args, "-o", "json", timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = {(i["kind"], i["name"]): i for i in json.loads(proc.stdout)["items"]}
    assert sorted(summary) == sorted(rows)
    assert {i["result"] for i in summary.values()} == {"migrated"}, summary
    assert_migrated(env, kubectl, web, uids["web"])
    assert_migrated(env, kubectl, db, uids["db"])
    for volume in [*api.volumes, tool, scratch]:
        assert_claim_migrated(env, kubectl, ns, volume)
    deploy = kubectl.get("deployment", "api", ns)
    assert deploy["spec"]["replicas"] == 2, "the Deployment is not back at its replica count"
    assert len(ready_pods(kubectl, ns, "api")) == 2
    pod = kubectl.get("pod", "tool", ns)
    assert pod["metadata"]["uid"] != pod_uid and len(ready_pods(kubectl, ns, "tool")) == 1
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "tool-data"
    reasons = kubectl("-n", ns, "get", "events", "--field-selector", "involvedObject.kind=Deployment", "-o", "json")
    assert any(e["reason"] == "MigratedToCSI" for e in json.loads(reasons)["items"])

    again = run_plugin(env_vars, *args)
    assert again.returncode == 0, again.stderr
    assert f"no owner with in-tree vSphere volumes in namespace {ns}: nothing to do" in again.stdout


def _owner(env: cluster.Env, kind: str, ns: str) -> tuple[list[scenario.Volume], list[str]]:
    """A Deployment of 2 replicas on one in-tree claim, or a bare pod's in-tree claim; its volumes
    and the `kubectl csi-migrate` words naming it."""
    if kind == "deploy":
        return scenario.deployment(env, "api", ns, replicas=2).volumes, ["deploy", "api"]
    return [scenario.bare_pod(env, "tool", ns, "tool-data")], ["pvc", "tool-data"]


def _assert_running(kubectl: Kubectl, ns: str, kind: str) -> None:
    """The owner's pods as before the run: the Deployment at 2 Ready, the bare pod Ready."""
    if kind == "deploy":
        assert kubectl.get("deployment", "api", ns)["spec"]["replicas"] == 2
        assert len(ready_pods(kubectl, ns, "api")) == 2, "the Deployment's pods are not back"
    else:
        assert len(ready_pods(kubectl, ns, "tool")) == 1, "the bare pod is not back"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "then"),
    [
        pytest.param("deploy", "resume", id="deploy-resume", marks=pytest.mark.leg),
        pytest.param("deploy", "rollback", id="deploy-rollback"),
        pytest.param("pvc", "resume", id="pvc-resume"),
        pytest.param("pvc", "rollback", id="pvc-rollback", marks=pytest.mark.leg),
    ],
)
def test_deploy_and_pvc_killed_at_every_step_resume_or_roll_back(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path, kind: str, then: str
) -> None:
    """For each step of the plan (iterated, not picked), an owner of its own in namespace `ns-N`
    whose run is SIGKILLed right after that step is recorded; then the same command finishes the
    migration (markers intact, the owner's pods back), or `rollback` puts the in-tree PV and claim
    back (same names, same disk, reclaim policy Delete) with the owner's pods running."""
    from kubectl_csi_migrate.migration.owners import steps_for
    from kubectl_csi_migrate.migration.plan import Plan
    from tests.e2e.test_rollback import killed, recorded

    steps: list[str] = []
    index = 0
    while index == 0 or index < len(steps):
        here = f"{ns}-{index}"
        cluster.kubectl(env, "create", "namespace", here)
        try:
            volumes, words = _owner(env, kind, here)
            workdir = tmp_path / f"run-{index}"
            args = [*words, "-n", here, *CSI, "--yes", "--working-directory", str(workdir)]
            killed(env_vars, f"#{index}", "done", *args)  # the index-th step of the plan the run made
            plan = json.loads((workdir / "run.json").read_text())["plan"]
            mine = [s.id for s in steps_for(Plan.from_dict(plan))]
            steps = steps or mine
            assert len(mine) == len(steps)
            assert recorded(workdir)[mine[index]] == "done"
            if then == "resume":
                proc = run_plugin(env_vars, *args)
                assert proc.returncode == 0, proc.stderr[-3000:]
                for volume in volumes:
                    assert_claim_migrated(env, kubectl, here, volume)
            else:
                back = ["rollback", f"{words[0]}/{words[1]}", "-n", here, "--yes", "--working-directory", str(workdir)]
                proc = run_plugin(env_vars, *back)
                assert proc.returncode == 0, proc.stderr[-3000:]
                for volume in volumes:
                    assert_claim_in_tree(kubectl, here, volume)
                    assert vc.read_marker(env, volume.vmdk, len(volume.marker)) == volume.marker
            _assert_running(kubectl, here, kind)
        except AssertionError as exc:
            raise AssertionError(f"killed after {steps[index] if steps else index}: {exc}") from exc
        finally:
            cluster.kubectl(env, "delete", "namespace", here, "--wait=false")
        index += 1
    assert len(steps) >= 10, steps


@pytest.mark.slow
def test_all_killed_mid_run_is_resumed_by_the_same_command_then_each_owner_rolls_back(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """`all` (a StatefulSet, a Deployment, a bare pod's claim), its whole process group SIGKILLed
    while the Deployment's claim moves (as a closed terminal or a lost CI runner): the same
    command finishes every owner; then `rollback` of each puts every claim back in tree."""
    import os
    import signal
    import subprocess

    from tests.e2e.conftest import REPO

    web = scenario.create(env, "web", ns, replicas=2)
    api = scenario.deployment(env, "api", ns, replicas=1)
    tool = scenario.bare_pod(env, "tool", ns, "tool-data")
    args = ["all", "-n", ns, *CSI, "--yes", "--working-directory", str(tmp_path)]
    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env_vars['PATH']}"
    proc = subprocess.Popen(
        ["kubectl", "csi-migrate", *args], env={**env_vars, "PATH": path}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "persistentvolumeclaim/api-data-0 deleted" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    else:
        raise AssertionError("the run ended before the Deployment's claim was deleted:\n" + "".join(seen))
    proc.wait(timeout=60)
    # The line comes once the API server took the deletion; the claim goes once its protection
    # finalizer is removed (no pod mounts it), a moment later.
    deadline = time.monotonic() + 30
    while kubectl.exists("pvc", "api-data-0", ns) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not kubectl.exists("pvc", "api-data-0", ns), "killed before the claim was deleted"

    again = run_plugin(env_vars, *args, "-o", "json", timeout=900)
    assert again.returncode == 0, again.stderr[-4000:]
    results = {i["name"]: i["result"] for i in json.loads(again.stdout)["items"]}
    # web had finished before the kill; the Deployment's claim was deleted (nothing in-tree to
    # see): it is found by its unfinished run's record.
    assert results == {"api": "migrated", "tool-data": "migrated"}, results
    for volume in [*web.volumes, *api.volumes, tool]:
        assert_claim_migrated(env, kubectl, ns, volume)
    assert len(ready_pods(kubectl, ns, "api")) == 1 and len(ready_pods(kubectl, ns, "tool")) == 1

    keys = {"web": "statefulset-web", "deploy/api": "deployment-api", "pvc/tool-data": "pvc-tool-data"}
    for owner, key in keys.items():
        folder = next(tmp_path.glob(f"csi-migrate-*-{ns}-{key}"))
        back = run_plugin(env_vars, "rollback", owner, "-n", ns, "--yes", "--working-directory", str(folder))
        assert back.returncode == 0, f"{owner}: {back.stderr[-3000:]}"
    for volume in [*web.volumes, *api.volumes, tool]:
        assert_claim_in_tree(kubectl, ns, volume)
        assert vc.read_marker(env, volume.vmdk, len(volume.marker)) == volume.marker
    assert len(ready_pods(kubectl, ns, "api")) == 1 and len(ready_pods(kubectl, ns, "tool")) == 1
    assert len(ready_pods(kubectl, ns, "web")) == 2


def test_deploy_and_pvc_refuse_what_they_cannot_migrate_with_one_error_and_nothing_changed(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """Names that do not exist; `pvc` on a claim a StatefulSet's pod mounts; `deploy` on the
    ReplicaSet a Deployment owns; `rollback`/`status` of owners with no run; an unknown kind:
    each an `error:` line naming the problem (and what to run instead), exit 1 (2 for usage),
    no claim, PV, pod or Deployment changed, no working directory left."""
    from tests.e2e.test_migration import versions

    scenario.create(env, "web", ns, replicas=1)
    scenario.deployment(env, "api", ns, replicas=1)
    replicaset = json.loads(kubectl("-n", ns, "get", "rs", "-l", "app=api", "-o", "json"))["items"][0]
    before = versions(kubectl, ns)
    deploy_before = kubectl.get("deployment", "api", ns)["metadata"]["resourceVersion"]
    cases = [
        (["deploy", "nosuch"], 1, 'deployments.apps "nosuch" not found'),
        (["pvc", "nosuch"], 1, 'persistentvolumeclaims "nosuch" not found'),
        (["pvc", "data-web-0"], 1, "is mounted by pod/web-0 of statefulset/web"),
        (["deploy", replicaset["metadata"]["name"]], 1, "belongs to deployment/api"),
    ]
    for words, code, message in cases:
        workdir = tmp_path / "-".join(words)
        proc = run_plugin(env_vars, *words, "-n", ns, *CSI, "--yes", "--working-directory", str(workdir))
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert proc.returncode == code and any(message in e for e in errors), f"{words}: {proc.stderr}"
        assert not workdir.exists(), f"{words}: a working directory was left"
    for words, code, message in (
        (["rollback", "deploy/nosuch", "--yes"], 1, "nothing to roll back"),
        (["status", "pvc/nosuch"], 1, "no run of pvc"),
        (["rollback", "daemonset/x", "--yes"], 2, "expected NAME (a StatefulSet), sts/NAME, deploy/NAME"),
    ):
        proc = run_plugin(env_vars, *words, "-n", ns, "--working-directory", str(tmp_path / "none"))
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert proc.returncode == code and len(errors) == 1 and message in errors[0], f"{words}: {proc.stderr}"
    assert versions(kubectl, ns) == before, "a claim, PV or pod changed"
    assert kubectl.get("deployment", "api", ns)["metadata"]["resourceVersion"] == deploy_before


def test_item_10_a_bare_pod_comes_back_on_the_node_it_was_pinned_to_with_its_owner_reference(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """A bare pod the user pinned to node-1 (`spec.nodeName`) and owned by a ConfigMap (an
    ownerReference that is not a controller's: the garbage collector deletes the pod with it),
    where the scheduler would not put it (a required anti-affinity to a pod on node-1): `pvc`
    migrates its claim and the pod is created again on node-1, still owned by the ConfigMap
    (before: created without either, the scheduler put it on another node)."""
    kubectl("-n", ns, "create", "configmap", "tool-owner")
    uid = kubectl.get("configmap", "tool-owner", ns)["metadata"]["uid"]
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "tool-owner", "uid": uid}
    anchor = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "anchor", "namespace": ns, "labels": {"role": "anchor"}},
        "spec": {
            "nodeName": "node-1",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
        },
    }
    kubectl("create", "-f", "-", stdin=json.dumps(anchor))
    away = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"role": "anchor"}}, "topologyKey": "kubernetes.io/hostname"}
            ]
        }
    }
    tool = scenario.bare_pod(
        env, "tool", ns, "tool-data", owners=[owner], spec={"nodeName": "node-1", "affinity": away}
    )
    before = kubectl.get("pod", "tool", ns)
    assert before["spec"]["nodeName"] == "node-1"

    proc = run_plugin(env_vars, "pvc", "tool-data", "-n", ns, *CSI, "--yes", "--working-directory", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert_claim_migrated(env, kubectl, ns, tool)
    pod = kubectl.get("pod", "tool", ns)
    assert pod["metadata"]["uid"] != before["metadata"]["uid"], "the pod was not created again"
    assert len(ready_pods(kubectl, ns, "tool")) == 1
    assert pod["spec"].get("nodeName") == "node-1", "the bare pod did not come back on the node it was pinned to"
    refs = [
        (r["kind"], r["name"], r["uid"], bool(r.get("controller"))) for r in pod["metadata"].get("ownerReferences", [])
    ]
    assert refs == [("ConfigMap", "tool-owner", uid, False)], f"the ConfigMap's ownerReference was not kept: {refs}"


def test_yaml_output_is_the_json_output_for_every_command_that_prints_data(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """`-o yaml` prints what `-o json` prints, for preflight of one owner and of the namespace,
    a migration's report, and status of one run and of every run. Before: the owner's kind (an
    enum) made the YAML printer fail with a traceback, for preflight, status and the survey."""
    import yaml

    scenario.intree_claims(env, ns, ["scratch"], "scratch")
    workdir = str(tmp_path / "run")
    same = [
        ["preflight", "pvc/scratch", "-n", ns, *CSI],
        ["preflight", "-n", ns, *CSI],
    ]
    for args in same:
        as_json, as_yaml = (run_plugin(env_vars, *args, "-o", o) for o in ("json", "yaml"))
        assert (as_json.returncode, as_yaml.returncode) == (0, 0), as_yaml.stderr
        assert yaml.safe_load(as_yaml.stdout) == json.loads(as_json.stdout), args
    migrated = run_plugin(
        env_vars, "pvc", "scratch", "-n", ns, *CSI, "--yes", "--working-directory", workdir, "-o", "yaml"
    )
    assert migrated.returncode == 0, migrated.stderr
    report = yaml.safe_load(migrated.stdout)
    assert (report["plan"]["kind"], report["volumes"][0]["result"]) == ("PersistentVolumeClaim", "migrated"), report
    for args in (["status", "pvc/scratch", "-n", ns, "--working-directory", workdir], ["status", "-n", ns]):
        as_json, as_yaml = (run_plugin(env_vars, *args, "-o", o) for o in ("json", "yaml"))
        assert (as_json.returncode, as_yaml.returncode) == (0, 0), as_yaml.stderr
        assert yaml.safe_load(as_yaml.stdout) == json.loads(as_json.stdout), args
