"""Run keys (issue 17, item 9), driven as `kubectl csi-migrate ...` on the real environment: a
StatefulSet `deployment-web` and a Deployment `web` in one namespace keep their Leases, records
and default working directories apart, and `status`, `rollback` and the runs act on the kind they
are given only; an earlier release's run keyed by a StatefulSet's bare name is still resumed and
rolled back, and refused to the other owner whose key that name is now. The runs start in the
test's own folder (`cwd`), so the default working directories are the ones compared."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubectl_csi_migrate.migration.owners import steps_for
from kubectl_csi_migrate.migration.plan import Plan
from testenv import cluster, scenario
from tests.e2e.conftest import REPO, Kubectl, run_plugin
from tests.e2e.test_migration import ForeignHolder, assert_migrated
from tests.e2e.test_owners import assert_claim_in_tree, assert_claim_migrated, ready_pods

pytestmark = pytest.mark.e2e

CSI = ["--csi-storageclass", "standard-rwo"]
RECORD_LABEL = "csi-migrate.kubectl.io/record"
OWNER_ANNOTATION = "csi-migrate.kubectl.io/owner"


def killed_in(cwd: Path, env_vars: dict[str, str], step: str, *args: str) -> None:
    """`kubectl csi-migrate ARGS` run in `cwd`, SIGKILLed right after it records `step` done
    (tests/e2e/killer.py: the plugin's own main)."""
    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env_vars['PATH']}"
    python_path = os.pathsep.join(p for p in (str(REPO), env_vars.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.e2e.killer", step, "done", *args],
        cwd=cwd, env={**env_vars, "PATH": path, "PYTHONPATH": python_path},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, f"not killed after {step}: exit {proc.returncode}\n{proc.stderr}"


def kill_mid_run(env_vars: dict[str, str], ns: str, cwd: Path, name: str) -> str:
    """`sts NAME` (default working directory in `cwd`) killed right after its first claim is
    deleted: an unfinished run, its Lease left by a dead process. Returns the step it stopped at."""
    plan = run_plugin(env_vars, "sts", name, "-n", ns, *CSI, "--dry-run", "-o", "json", cwd=cwd)
    assert plan.returncode == 0, plan.stderr
    target = next(s for s in steps_for(Plan.from_dict(json.loads(plan.stdout)["plan"])) if s.kind == "delete-pvc")
    killed_in(cwd, env_vars, target.id, "sts", name, "-n", ns, *CSI, "--yes")
    return target.id


def one_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The command was refused: exit 1 and exactly one `error:` line, saying each fragment."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 1 and len(errors) == 1, f"exit {proc.returncode}:\n{proc.stderr}{proc.stdout}"
    assert all(f in errors[0] for f in fragments), f"{fragments} not in: {errors[0]}"
    return errors[0]


def status(env_vars: dict[str, str], ns: str, cwd: Path, *owner: str) -> Any:
    proc = run_plugin(env_vars, "status", *owner, "-n", ns, "-o", "json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def records(kubectl: Kubectl, ns: str) -> dict[str, tuple[str, str, str]]:
    """ConfigMap name -> (kind, name, resourceVersion) of each run's record in the namespace."""
    found = json.loads(kubectl("-n", ns, "get", "configmap", "-l", RECORD_LABEL, "-o", "json"))["items"]
    result = {}
    for cm in found:
        plan = Plan.from_dict(json.loads(cm["data"]["run.json"])["plan"])
        result[cm["metadata"]["name"]] = (plan.kind, plan.name, cm["metadata"]["resourceVersion"])
    return result


def folders(cwd: Path, ns: str) -> dict[str, tuple[str, str]]:
    """Default working directory (name after `-<namespace>-`) -> (kind, name) of the run it holds."""
    result = {}
    for folder in cwd.glob(f"csi-migrate-*-{ns}-*"):
        plan = Plan.from_dict(json.loads((folder / "run.json").read_text())["plan"])
        result[folder.name.split(f"-{ns}-", 1)[1]] = (plan.kind, plan.name)
    return result


def versions_of(kubectl: Kubectl, ns: str, made: scenario.Scenario) -> dict[str, str]:
    """resourceVersion of a StatefulSet's (or a Deployment's) pods and claims and of the
    StatefulSet or Deployment itself, and its PVs' specs (a PV whose claim a killed run deleted
    goes Released meanwhile: its status changes, not its spec)."""
    result = {}
    claims = {v.pvc for v in made.volumes}
    pvs = {v.pv for v in made.volumes}
    for kind in ("pod", "pvc", "statefulset", "deployment"):
        for obj in kubectl.get(kind, namespace=ns)["items"]:
            meta = obj["metadata"]
            labels = meta.get("labels") or {}
            if meta["name"] in claims or meta["name"] == made.name or labels.get("app") == made.name:
                result[f"{kind}/{meta['name']}"] = meta["resourceVersion"]
    for pv in kubectl.get("pv")["items"]:
        if pv["metadata"]["name"] in pvs:
            result[f"pv/{pv['metadata']['name']}"] = json.dumps(pv["spec"], sort_keys=True)
    return result


def make_legacy(kubectl: Kubectl, ns: str, cwd: Path, name: str) -> None:
    """Turn the unfinished run of StatefulSet `name` into what an earlier release left: keyed by
    the bare name (working directory `csi-migrate-<context>-<ns>-<name>`, record and Lease
    `csi-migrate-<name>`), its plan stored without a key, its Lease without an owner annotation."""
    from kubectl_csi_migrate.migration.plan import label_value

    legacy = f"csi-migrate-{name}"
    (folder,) = cwd.glob(f"csi-migrate-*-{ns}-*")  # the killed run's default working directory
    run_file = folder / "run.json"
    run = json.loads(run_file.read_text())
    run["plan"].pop("key", None)
    run_file.write_text(json.dumps(run, indent=1))
    prefix = folder.name[: folder.name.index(f"-{ns}-") + len(ns) + 2]
    if folder.name != prefix + name:
        folder.rename(folder.with_name(prefix + name))

    (record,) = [n for n, (kind, owner, _) in records(kubectl, ns).items() if (kind, owner) == ("StatefulSet", name)]
    cm = kubectl.get("configmap", record, ns)
    data = {**cm["data"], "run.json": json.dumps(run, indent=1)}
    meta = {"name": legacy, "namespace": ns, "labels": {RECORD_LABEL: label_value(name)}}
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data, "binaryData": cm["binaryData"]}
    if record != legacy:
        kubectl("create", "-f", "-", stdin=json.dumps(doc))
        kubectl("-n", ns, "delete", "configmap", record)
    else:
        kubectl("-n", ns, "replace", "-f", "-", stdin=json.dumps(doc))

    # the killed run's own (its process is gone); its disruption budget's Lease is csi-migrate.pdb.*
    (lease,) = [
        x for x in kubectl.get("lease", namespace=ns)["items"] if x["metadata"]["name"].startswith("csi-migrate-")
    ]
    if lease["metadata"]["name"] != legacy:
        spec = {k: v for k, v in lease["spec"].items() if k in ("holderIdentity", "leaseDurationSeconds", "renewTime")}
        doc = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": legacy, "namespace": ns}}
        kubectl("create", "-f", "-", stdin=json.dumps({**doc, "spec": spec}))
        kubectl("-n", ns, "delete", "lease", lease["metadata"]["name"])


def test_item_9_statefulset_deployment_web_and_deployment_web_keep_their_runs_apart(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """StatefulSet `deployment-web` (2 replicas) and Deployment `web`, default working
    directories: the StatefulSet's run killed mid-way; `status deploy/web` and `rollback
    deploy/web` find no run of the Deployment (the StatefulSet's untouched); `deploy web` runs
    while the StatefulSet's Lease is held by a live run elsewhere; each has its own Lease, record
    and folder, and `status` lists both; the StatefulSet's run resumes; `rollback deployment-web`
    and `rollback deploy/web` each put back their own claims only."""
    sts = scenario.create(env, "deployment-web", ns, replicas=2)
    deploy = scenario.deployment(env, "web", ns, replicas=1)
    sts_uid = kubectl.get("statefulset", "deployment-web", ns)["metadata"]["uid"]
    kill_mid_run(env_vars, ns, tmp_path, "deployment-web")
    stopped = versions_of(kubectl, ns, sts)

    mine = status(env_vars, ns, tmp_path, "deployment-web")
    assert (mine["owner"]["kind"], mine["owner"]["name"], mine["phase"]) == ("StatefulSet", "deployment-web", "stopped")
    one_error(run_plugin(env_vars, "status", "deploy/web", "-n", ns, cwd=tmp_path), f"no run of deployment {ns}/web")
    refused = run_plugin(env_vars, "rollback", "deploy/web", "-n", ns, "--yes", cwd=tmp_path)
    one_error(refused, "nothing to roll back")
    assert versions_of(kubectl, ns, sts) == stopped, "a command naming the Deployment changed the StatefulSet's run"
    for volume in deploy.volumes:
        assert_claim_in_tree(kubectl, ns, volume)
    leases = [lease["metadata"] for lease in kubectl.get("lease", namespace=ns)["items"]]
    leases = [m for m in leases if m["name"].startswith("csi-migrate-")]  # not the budget's (csi-migrate.pdb.*)
    assert [m["name"] for m in leases] == ["csi-migrate-statefulset-deployment-web"], leases
    assert leases[0]["annotations"][OWNER_ANNOTATION] == "StatefulSet/deployment-web"

    with ForeignHolder(kubectl, ns, "csi-migrate-statefulset-deployment-web"):  # as a live run elsewhere
        done = run_plugin(env_vars, "deploy", "web", "-n", ns, *CSI, "--yes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    kubectl("-n", ns, "delete", "lease", "csi-migrate-statefulset-deployment-web")  # that run is done
    for volume in deploy.volumes:
        assert_claim_migrated(env, kubectl, ns, volume)
    assert len(ready_pods(kubectl, ns, "web")) == 1
    assert versions_of(kubectl, ns, sts) == stopped, "the Deployment's run changed the StatefulSet's objects"
    assert {n: (k, o) for n, (k, o, _) in records(kubectl, ns).items()} == {
        "csi-migrate-statefulset-deployment-web": ("StatefulSet", "deployment-web"),
        "csi-migrate-deployment-web": ("Deployment", "web"),
    }
    assert folders(tmp_path, ns) == {
        "statefulset-deployment-web": ("StatefulSet", "deployment-web"),
        "deployment-web": ("Deployment", "web"),
    }
    listed = {(s["owner"]["kind"], s["owner"]["name"]): s["phase"] for s in status(env_vars, ns, tmp_path)["items"]}
    assert listed == {("StatefulSet", "deployment-web"): "stopped", ("Deployment", "web"): "finished"}, listed
    assert status(env_vars, ns, tmp_path, "deploy/web")["owner"]["kind"] == "Deployment"

    resumed = run_plugin(env_vars, "sts", "deployment-web", "-n", ns, *CSI, "--yes", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the run" in resumed.stdout
    assert_migrated(env, kubectl, sts, sts_uid)

    back = run_plugin(env_vars, "rollback", "deployment-web", "-n", ns, "--yes", cwd=tmp_path)
    assert back.returncode == 0, back.stderr[-3000:]
    for volume in sts.volumes:
        assert_claim_in_tree(kubectl, ns, volume)
    assert len(ready_pods(kubectl, ns, "deployment-web")) == 2
    for volume in deploy.volumes:
        assert_claim_migrated(env, kubectl, ns, volume)  # `rollback deployment-web` left the Deployment alone
    back = run_plugin(env_vars, "rollback", "deploy/web", "-n", ns, "--yes", cwd=tmp_path)
    assert back.returncode == 0, back.stderr[-3000:]
    for volume in [*deploy.volumes, *sts.volumes]:
        assert_claim_in_tree(kubectl, ns, volume)
    assert len(ready_pods(kubectl, ns, "web")) == 1 and len(ready_pods(kubectl, ns, "deployment-web")) == 2
    for owner, kind in (("deployment-web", "StatefulSet"), ("deploy/web", "Deployment")):
        shown = status(env_vars, ns, tmp_path, owner)
        assert (shown["owner"]["kind"], shown["phase"]) == (kind, "rolled back"), shown


def test_item_9_an_earlier_release_s_run_keyed_by_the_bare_name_is_resumed_and_rolled_back(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """An unfinished run of StatefulSet `web` as an earlier release left it (working directory
    `csi-migrate-<context>-<ns>-web`, record and Lease `csi-migrate-web`, no key in its plan):
    `status web` reports it, `sts web` resumes it under that key (no second record), and with
    its folder lost, `rollback web` rebuilds it from `configmap/csi-migrate-web` and rolls back."""
    made = scenario.create(env, "web", ns, replicas=2)
    sts_uid = kubectl.get("statefulset", "web", ns)["metadata"]["uid"]
    kill_mid_run(env_vars, ns, tmp_path, "web")
    make_legacy(kubectl, ns, tmp_path, "web")
    assert set(folders(tmp_path, ns)) == {"web"} and set(records(kubectl, ns)) == {"csi-migrate-web"}

    shown = status(env_vars, ns, tmp_path, "web")
    assert (shown["phase"], shown["source"]) == ("stopped", "working directory"), shown
    assert shown["workingDirectory"].endswith(f"-{ns}-web")
    resumed = run_plugin(env_vars, "sts", "web", "-n", ns, *CSI, "--yes", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the run" in resumed.stdout and f"-{ns}-web" in resumed.stdout
    assert_migrated(env, kubectl, made, sts_uid)
    assert set(records(kubectl, ns)) == {"csi-migrate-web"}, "the run kept its key"
    assert not kubectl.get("lease", namespace=ns)["items"], "the Lease was given back"

    shutil.rmtree(next(tmp_path.glob(f"csi-migrate-*-{ns}-web")))
    back = run_plugin(env_vars, "rollback", "web", "-n", ns, "--yes", cwd=tmp_path)
    assert back.returncode == 0, back.stderr[-3000:]
    assert "rebuilt it from configmap/csi-migrate-web" in back.stdout
    for volume in made.volumes:
        assert_claim_in_tree(kubectl, ns, volume)
    assert len(ready_pods(kubectl, ns, "web")) == 2
    assert status(env_vars, ns, tmp_path, "web")["phase"] == "rolled back"


def test_item_9_an_earlier_release_s_run_of_statefulset_deployment_web_is_refused_to_deployment_web(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """An earlier release's unfinished run of StatefulSet `deployment-web` holds the names
    Deployment `web`'s run now has (folder, record `csi-migrate-deployment-web`): `deploy web`,
    `rollback deploy/web` and `status deploy/web` each stop with one `error:` line naming the
    StatefulSet's run, exit 1, nothing changed, by its folder and (another working directory) by
    its record. `status deployment-web` and `sts deployment-web` still find the StatefulSet's run;
    once it is rolled back and its record deleted, `deploy web` runs."""
    sts = scenario.create(env, "deployment-web", ns, replicas=1, pdb=False)
    deploy = scenario.deployment(env, "web", ns, replicas=1)
    sts_uid = kubectl.get("statefulset", "deployment-web", ns)["metadata"]["uid"]
    kill_mid_run(env_vars, ns, tmp_path, "deployment-web")
    make_legacy(kubectl, ns, tmp_path, "deployment-web")
    before = {**versions_of(kubectl, ns, sts), **versions_of(kubectl, ns, deploy)}
    record_before = records(kubectl, ns)
    assert set(record_before) == {"csi-migrate-deployment-web"}

    by_folder = f"holds the run of statefulset {ns}/deployment-web, not of deployment {ns}/web"
    by_record = f"configmap/csi-migrate-deployment-web holds the record of the run of statefulset {ns}/deployment-web"
    elsewhere = ["--working-directory", str(tmp_path / "elsewhere")]
    for words, message in (
        (["deploy", "web", *CSI, "--yes"], by_folder),
        (["deploy", "web", *CSI, "--yes", *elsewhere], by_record),
        (["deploy", "web", *CSI, "--dry-run"], by_folder),
        (["rollback", "deploy/web", "--yes"], by_folder),
        (["rollback", "deploy/web", "--yes", *elsewhere], by_record),
        (["status", "deploy/web"], by_folder),
        (["status", "deploy/web", *elsewhere], by_record),
    ):
        proc = run_plugin(env_vars, *words[:2], "-n", ns, *words[2:], cwd=tmp_path)
        assert "nothing was changed" in one_error(proc, message), words
        assert not (tmp_path / "elsewhere").exists(), f"{words}: a working directory was made"
    assert {**versions_of(kubectl, ns, sts), **versions_of(kubectl, ns, deploy)} == before, "something changed"
    assert records(kubectl, ns) == record_before

    shown = status(env_vars, ns, tmp_path, "deployment-web")
    assert (shown["owner"]["kind"], shown["phase"]) == ("StatefulSet", "stopped"), shown
    resumed = run_plugin(env_vars, "sts", "deployment-web", "-n", ns, *CSI, "--yes", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_migrated(env, kubectl, sts, sts_uid)
    back = run_plugin(env_vars, "rollback", "deployment-web", "-n", ns, "--yes", cwd=tmp_path)
    assert back.returncode == 0, back.stderr[-3000:]
    for volume in [*sts.volumes, *deploy.volumes]:
        assert_claim_in_tree(kubectl, ns, volume)

    # As docs/how-it-works.md ("Run keys") says: once the StatefulSet's run is no longer needed, its record is deleted.
    kubectl("-n", ns, "delete", "configmap", "csi-migrate-deployment-web")
    done = run_plugin(env_vars, "deploy", "web", "-n", ns, *CSI, "--yes", *elsewhere, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for volume in deploy.volumes:
        assert_claim_migrated(env, kubectl, ns, volume)
    for volume in sts.volumes:
        assert_claim_in_tree(kubectl, ns, volume)


def test_item_9_a_lease_of_the_run_s_name_locking_another_owner_is_refused(
    env: cluster.Env, env_vars: dict[str, str], ns: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """Lease `csi-migrate-deployment-web` locks StatefulSet `deployment-web`'s run (its owner
    annotation: an earlier release's run of it, resumed by this one): `deploy web` stops with one
    `error:` line naming it, exit 1, before any change, without waiting for it or taking it over."""
    from kubectl_csi_migrate.kube.lock import now

    deploy = scenario.deployment(env, "web", ns, replicas=1)
    meta = {"name": "csi-migrate-deployment-web", "namespace": ns,
            "annotations": {OWNER_ANNOTATION: "StatefulSet/deployment-web"}}  # fmt: skip
    spec = {"holderIdentity": "elsewhere/other-run/1", "leaseDurationSeconds": 5, "renewTime": now()}
    kubectl.apply({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec})
    before = versions_of(kubectl, ns, deploy)
    workdir = tmp_path / "run"
    proc = run_plugin(env_vars, "deploy", "web", "-n", ns, *CSI, "--yes", "--working-directory", str(workdir))
    one_error(proc, f"lease {ns}/csi-migrate-deployment-web locks the runs of StatefulSet/deployment-web", "nothing")
    assert versions_of(kubectl, ns, deploy) == before, "something changed"
    assert kubectl.get("lease", "csi-migrate-deployment-web", ns)["spec"]["holderIdentity"] == "elsewhere/other-run/1"
    assert not workdir.exists()
    for volume in deploy.volumes:
        assert_claim_in_tree(kubectl, ns, volume)
