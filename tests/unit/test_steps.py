"""Issue 19, item 6: every kind of step's do and undo on a fake cluster (tests/unit/fakes.py).
Each test brings a plan's cluster to the point where a step runs (the steps before it done in
order, the backup first), does the step, does it again (a killed run repeats a step: the second
time changes nothing), then undoes it; and what another writer does between a step's read and its
write."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubectl_csi_migrate.errors import PermanentError, TemporaryError
from kubectl_csi_migrate.kube import predicates as p
from kubectl_csi_migrate.migration import translate, workload
from kubectl_csi_migrate.migration.context import nothing
from kubectl_csi_migrate.migration.kinds import KINDS
from kubectl_csi_migrate.migration.owners import build_plan, steps_for
from kubectl_csi_migrate.migration.plan import DEPLOYMENT, Plan
from kubectl_csi_migrate.migration.steps import Step, StepKind, fcd_of
from tests.unit.fakes import FakeContext, FakeKube, new_workdir
from tests.unit.test_logic import owner_snapshot, snapshot

Obj = dict[str, Any]
NS = "ns"


# -- the clusters ----------------------------------------------------------------------------


def ready(pod: Obj) -> Obj:
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    return pod


def claim(name: str, volume: str, klass: str, uid: str) -> Obj:
    return {
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NS, "uid": uid},
        "spec": {
            "volumeName": volume,
            "storageClassName": klass,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
        "status": {"phase": "Bound"},
    }


def volume(name: str, kind: str, pvc: Obj) -> Obj:
    spec: Obj = {
        "capacity": {"storage": "1Gi"},
        "accessModes": ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Delete",
        "storageClassName": pvc["spec"]["storageClassName"],
        "claimRef": {"kind": "PersistentVolumeClaim", "name": pvc["metadata"]["name"], "namespace": NS,
                     "uid": pvc["metadata"]["uid"]},
    }  # fmt: skip
    if kind == "intree":
        spec["vsphereVolume"] = {"volumePath": f"[ds] kubevols/{name}.vmdk", "fsType": "ext4"}
    elif kind == "csi":
        spec["csi"] = {"driver": "csi.vsphere.vmware.com", "volumeHandle": f"fcd-{name}"}
    else:
        spec["nfs"] = {"server": "x", "path": "/"}
    return {"kind": "PersistentVolume", "metadata": {"name": name, "uid": f"u-{name}"}, "spec": spec,
            "status": {"phase": "Bound"}}  # fmt: skip


def statefulset_cluster() -> list[Obj]:
    """StatefulSet web (uid u1) of one replica, its pod and its three claims: data in-tree, logs
    CSI, nfs neither (as tests/unit/test_logic.snapshot plans them)."""
    templates = copy.deepcopy(snapshot(replicas=1).owner["spec"]["volumeClaimTemplates"])
    sts = {
        "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": NS, "uid": "u1", "generation": 1},
        "spec": {
            "replicas": 1,
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
            "volumeClaimTemplates": templates,
        },
        "status": {"replicas": 1, "readyReplicas": 1, "observedGeneration": 1},
    }
    objs: list[Obj] = [sts]
    mounts = []
    for template, kind, klass in (
        ("data", "intree", "standard"),
        ("logs", "csi", "standard-rwo"),
        ("nfs", "nfs", "nfs"),
    ):
        pvc = claim(f"{template}-web-0", f"pv-{template}-web-0", klass, f"uc-{template}")
        objs += [pvc, volume(f"pv-{template}-web-0", kind, pvc)]
        mounts.append({"name": template, "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}})
    pod = {
        "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": NS, "uid": "up-0", "labels": {"app": "web"},
                     "ownerReferences": [{"kind": "StatefulSet", "name": "web", "uid": "u1", "controller": True}]},
        "spec": {"containers": [{"name": "c", "image": "i"}], "volumes": mounts, "nodeName": "node-1"},
    }  # fmt: skip
    return [*objs, ready(pod)]


def deployment_cluster() -> list[Obj]:
    """Deployment api (uid d1) of two replicas mounting api-a (in-tree) and api-b (CSI)."""
    owner = copy.deepcopy(owner_snapshot(DEPLOYMENT).owner)
    owner.update(kind="Deployment")
    owner["metadata"].update(namespace=NS, generation=1)
    owner["spec"]["selector"] = {"matchLabels": {"app": "api"}}
    objs: list[Obj] = [owner]
    for name, kind in (("api-a", "intree"), ("api-b", "csi")):
        pvc = claim(name, f"pv-{name}", "standard", f"uc-{name}")
        objs += [pvc, volume(f"pv-{name}", kind, pvc)]
    objs += [deployment_pod(i) for i in range(2)]
    return objs


def deployment_pod(i: int) -> Obj:
    return ready(
        {
            "kind": "Pod",
            "metadata": {"name": f"api-h-{i}", "namespace": NS, "labels": {"app": "api", "pod-template-hash": "h"},
                         "ownerReferences": [{"kind": "ReplicaSet", "name": "api-h", "uid": "rs1",
                                              "controller": True}]},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }
    )  # fmt: skip


# -- what the controllers do while a step waits -------------------------------------------------


def kubelet(kube: FakeKube) -> None:
    """Every pod starts and is Ready."""
    for (kind, _, _), obj in kube.objs.items():
        if kind == "Pod" and not p.is_pod_ready(obj):
            ready(obj)


def binder(kube: FakeKube) -> None:
    """The PV controller binds each claim naming a PV that exists."""
    for (kind, _, _), obj in list(kube.objs.items()):
        if kind != "PersistentVolumeClaim" or obj.get("status", {}).get("phase") == "Bound":
            continue
        pv = kube.obj("PersistentVolume", obj["spec"].get("volumeName", ""))
        if pv is not None:
            obj["status"] = {"phase": "Bound"}
            pv["spec"]["claimRef"] = {"name": obj["metadata"]["name"], "namespace": NS, "uid": obj["metadata"]["uid"]}
            pv["status"] = {"phase": "Bound"}


def statefulset_controller(kube: FakeKube) -> None:
    """Each StatefulSet owns its pods, as many as its replicas (made anew, or orphans adopted)."""
    for (kind, _, name), sts in list(kube.objs.items()):
        if kind != "StatefulSet":
            continue
        uid, replicas = sts["metadata"]["uid"], int(sts["spec"].get("replicas", 1))
        owner = [{"kind": "StatefulSet", "name": name, "uid": uid, "controller": True}]
        for o in range(replicas):
            pod = kube.obj("Pod", f"{name}-{o}", NS)
            if pod is None:
                kube.put(
                    ready({"kind": "Pod", "metadata": {"name": f"{name}-{o}", "labels": {"app": name}}, "spec": {}})
                )
                pod = kube.obj("Pod", f"{name}-{o}", NS)
            assert pod is not None
            if not any(r.get("controller") for r in pod["metadata"].get("ownerReferences") or []):
                pod["metadata"]["ownerReferences"] = copy.deepcopy(owner)
        for key, pod in list(kube.objs.items()):
            owned = any(r.get("uid") == uid for r in pod["metadata"].get("ownerReferences") or [])
            if key[0] == "Pod" and owned and int(key[2].rsplit("-", 1)[1]) >= replicas:
                del kube.objs[key]
        sts["status"] = {"replicas": replicas, "readyReplicas": replicas,
                         "observedGeneration": sts["metadata"].get("generation", 1)}  # fmt: skip


def deployment_controller(kube: FakeKube) -> None:
    """Deployment api keeps spec.replicas pods of its ReplicaSet api-h."""
    dep = kube.obj("Deployment", "api", NS)
    if dep is None:
        return
    want = int(dep["spec"].get("replicas", 1))
    pods = sorted(n for (k, _, n) in kube.objs if k == "Pod" and n.startswith("api-h-"))
    for name in pods[want:]:
        del kube.objs[kube.key("Pod", name, NS)]
    for i in range(len(pods), want):
        kube.put(deployment_pod(i))


CONTROLLERS = [kubelet, binder, statefulset_controller, deployment_controller]


# -- a world: a plan, its cluster, a run's context ---------------------------------------------


class World:
    def __init__(self, tmp_path: Path, plan: Plan, objs: list[Obj], resources: set[str] | None = None) -> None:
        self.kube = FakeKube(*objs, resources=resources)
        self.kube.controllers = list(CONTROLLERS)
        self.plan = plan
        self.ctx = FakeContext(self.kube, plan, new_workdir(tmp_path / "run", plan))
        self.m = self.ctx.as_context()
        self.steps = steps_for(plan)

    def step(self, kind: StepKind) -> Step:
        return next(s for s in self.steps if s.kind == kind)

    def do(self, step: Step) -> Obj | None:
        result = KINDS[step.kind].do(self.m, step)
        self.ctx.done[step.id] = {"step": step.id, "event": "done", **(result or {})}
        return result

    def undo(self, step: Step) -> None:
        KINDS[step.kind].undo(self.m, step)
        self.ctx.done.pop(step.id, None)

    def until(self, kind: StepKind) -> Step:
        """Every step before the first of `kind` done, in order; that step."""
        for step in self.steps:
            if step.kind == kind:
                return step
            self.do(step)
        raise AssertionError(f"no {kind} step")

    def get(self, kind: str, name: str) -> Obj | None:
        return self.kube.get(kind, name, NS)


def rolling(tmp_path: Path, resources: set[str] | None = None) -> World:
    plan = build_plan(snapshot(replicas=1), "ctx", "https://k", "standard-rwo", None, "rolling")
    return World(tmp_path, plan, statefulset_cluster(), resources)


def offline(tmp_path: Path) -> World:
    plan = build_plan(snapshot(replicas=1), "ctx", "https://k", "standard-rwo", None, "offline")
    return World(tmp_path, plan, statefulset_cluster())


def deployment(tmp_path: Path) -> World:
    plan = build_plan(owner_snapshot(DEPLOYMENT), "ctx", "https://k", "standard-rwo", None, "rolling")
    return World(tmp_path, plan, deployment_cluster())


def policy(w: World, pv: str) -> str | None:
    obj = w.kube.obj("PersistentVolume", pv)
    return None if obj is None else obj["spec"].get("persistentVolumeReclaimPolicy")


def noted(w: World, pv: str) -> bool:
    obj = w.kube.obj("PersistentVolume", pv) or {}
    return translate.ORIGINAL_RECLAIM_POLICY in (obj.get("metadata", {}).get("annotations") or {})


def owners_of(w: World, pod: str) -> list[str]:
    obj = w.kube.obj("Pod", pod, NS) or {"metadata": {}}
    return [r["uid"] for r in obj["metadata"].get("ownerReferences") or []]


# -- each kind: brought to its turn, done, done again, undone ------------------------------------
#
# KIND -> (world, what holds once it is done, what holds once it is undone)

Check = Callable[[World], None]


def after_backup(w: World) -> None:
    for kind, name in (("StatefulSet", "web"), ("Pod", "web-0"), ("PersistentVolumeClaim", "data-web-0"),
                       ("PersistentVolume", "pv-data-web-0")):  # fmt: skip
        assert (
            w.ctx.workdir.load_backup(kind, name)["metadata"]["uid"]
            == (w.kube.obj(kind, name, NS) or {})["metadata"]["uid"]
        )
    assert w.kube.mutations() == [], "a backup writes nothing to the cluster"


def after_retain(w: World) -> None:
    assert policy(w, "pv-data-web-0") == "Retain" and noted(w, "pv-data-web-0")
    assert policy(w, "pv-logs-web-0") == "Delete", "only the volumes migrated"


def after_undo_retain(w: World) -> None:
    assert policy(w, "pv-data-web-0") == "Delete" and not noted(w, "pv-data-web-0")


def after_delete_statefulset(w: World) -> None:
    assert w.get("StatefulSet", "web") is None
    assert w.kube.mutations()[-1] == ("delete", "StatefulSet", "web")
    assert w.get("Pod", "web-0") is not None and owners_of(w, "web-0") == [], "pods orphaned, kept"
    assert w.get("PersistentVolumeClaim", "data-web-0") is not None


def after_undo_delete_statefulset(w: World) -> None:
    sts = w.get("StatefulSet", "web")
    assert sts is not None and sts["metadata"]["uid"] != "u1"
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "standard", "in-tree templates"
    assert owners_of(w, "web-0") == [sts["metadata"]["uid"]], "the pod adopted again"


def after_evict(w: World) -> None:
    assert w.get("Pod", "web-0") is None
    assert ("evict", "Pod", "web-0") in w.kube.mutations()


def after_undo_evict(w: World) -> None:
    pod = w.get("Pod", "web-0")
    assert pod is not None and pod["metadata"]["uid"] != "up-0" and p.is_pod_ready(pod)
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "data-web-0"


def after_detach(w: World) -> None:
    assert ("VolumeAttachment", "volume pv-data-web-0 to be detached") in w.ctx.waits


def nothing_changed(w: World) -> None:
    pass


def after_delete_pvc(w: World) -> None:
    assert w.get("PersistentVolumeClaim", "data-web-0") is None
    assert policy(w, "pv-data-web-0") == "Retain", "the PV (and the disk) stays"
    assert w.get("PersistentVolumeClaim", "logs-web-0") is not None


def after_undo_delete_pvc(w: World) -> None:
    pvc = w.get("PersistentVolumeClaim", "data-web-0")
    assert pvc is not None and pvc["metadata"]["uid"] != "uc-data" and pvc["status"]["phase"] == "Bound"
    assert pvc["spec"]["volumeName"] == "pv-data-web-0" and pvc["spec"]["storageClassName"] == "standard"


def after_delete_pv(w: World) -> None:
    assert w.kube.obj("PersistentVolume", "pv-data-web-0") is None
    assert w.ctx.done["delete-pv/pv-data-web-0"]["gone_at"] == w.kube.server_date


def after_undo_delete_pv(w: World) -> None:
    pv = w.kube.obj("PersistentVolume", "pv-data-web-0")
    assert pv is not None and translate.is_intree_vsphere_pv(pv)
    assert pv["spec"]["vsphereVolume"]["volumePath"] == "[ds] kubevols/pv-data-web-0.vmdk"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"


def after_fcd(w: World) -> None:
    vmdk = "[ds] kubevols/pv-data-web-0.vmdk"
    assert w.ctx.vsphere.fcds == {vmdk: "fcd-1"} and w.ctx.vsphere.registered == [vmdk]
    assert w.ctx.done["fcd/pv-data-web-0"]["keep_after_delete_vm"] is True
    assert fcd_of(w.ctx.done, "pv-data-web-0") == "fcd-1" and "fcd-1" in w.ctx.vsphere.protected


def after_undo_fcd(w: World) -> None:
    assert w.ctx.vsphere.fcds == {"[ds] kubevols/pv-data-web-0.vmdk": "fcd-1"}, "a registered disk stays registered"


def after_create_pv(w: World) -> None:
    pv = w.kube.obj("PersistentVolume", "pv-data-web-0")
    assert pv is not None and translate.is_csi_vsphere_pv(pv)
    assert pv["spec"]["csi"]["volumeHandle"] == fcd_of(w.ctx.done, "pv-data-web-0") == "fcd-1"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"


def after_undo_create_pv(w: World) -> None:
    assert w.kube.obj("PersistentVolume", "pv-data-web-0") is None
    assert w.kube.obj("PersistentVolume", "pv-logs-web-0") is not None, "only that CSI PV"


def after_create_pvc(w: World) -> None:
    pvc = w.get("PersistentVolumeClaim", "data-web-0")
    assert pvc is not None and pvc["spec"]["storageClassName"] == "standard-rwo"
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["volumeName"] == "pv-data-web-0"
    assert ("PersistentVolumeClaim", "data-web-0", "MigratedToCSI") in w.ctx.events


def after_undo_create_pvc(w: World) -> None:
    assert w.get("PersistentVolumeClaim", "data-web-0") is None
    assert policy(w, "pv-data-web-0") == "Retain", "the CSI PV is kept"


def after_recreate_pod(w: World) -> None:
    pod = w.get("Pod", "web-0")
    assert pod is not None and pod["metadata"]["uid"] != "up-0" and p.is_pod_ready(pod)
    assert owners_of(w, "web-0") == [], "a pod of no controller until the StatefulSet is back"


def after_undo_recreate_pod(w: World) -> None:
    assert w.get("Pod", "web-0") is None


def after_recreate_statefulset(w: World) -> None:
    sts = w.get("StatefulSet", "web")
    assert sts is not None and sts["metadata"]["uid"] != "u1"
    assert sts["metadata"]["annotations"][workload.RECREATED_FROM] == "u1"
    classes = {t["metadata"]["name"]: t["spec"]["storageClassName"] for t in sts["spec"]["volumeClaimTemplates"]}
    assert classes["data"] == "standard-rwo" and classes["nfs"] == "nfs"
    assert owners_of(w, "web-0") == [sts["metadata"]["uid"]]
    assert ("StatefulSet", "web", "MigratedToCSI") in w.ctx.events


def after_undo_recreate_statefulset(w: World) -> None:
    assert w.get("StatefulSet", "web") is None
    assert w.get("Pod", "web-0") is not None and owners_of(w, "web-0") == []


def after_restore(w: World) -> None:
    assert policy(w, "pv-data-web-0") == "Delete" and not noted(w, "pv-data-web-0")


def after_undo_restore(w: World) -> None:
    assert policy(w, "pv-data-web-0") == "Retain" and noted(w, "pv-data-web-0")


def after_scale_down(w: World) -> None:
    sts = w.get("StatefulSet", "web")
    assert sts is not None and sts["spec"]["replicas"] == 0
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == workload.RETAIN_CLAIMS
    assert w.get("Pod", "web-0") is None


def after_undo_scale_down(w: World) -> None:
    sts = w.get("StatefulSet", "web")
    assert sts is not None and sts["spec"]["replicas"] == 1 and sts["metadata"]["uid"] == "u1"
    assert owners_of(w, "web-0") == ["u1"]


def api_pods(w: World) -> list[str]:
    return sorted(n for (k, _, n) in w.kube.objs if k == "Pod")


def after_scale_to_zero(w: World) -> None:
    dep = w.get("Deployment", "api")
    assert dep is not None and dep["spec"]["replicas"] == 0 and api_pods(w) == []


def after_scale_up(w: World) -> None:
    dep = w.get("Deployment", "api")
    assert dep is not None and dep["spec"]["replicas"] == 2 and api_pods(w) == ["api-h-0", "api-h-1"]


def after_scale_back(w: World) -> None:
    after_scale_up(w)
    assert ("Deployment", "api", "MigratedToCSI") in w.ctx.events


CASES: dict[StepKind, tuple[Callable[[Path], World], Check, Check]] = {
    StepKind.BACKUP: (rolling, after_backup, nothing_changed),
    StepKind.RETAIN: (rolling, after_retain, after_undo_retain),
    StepKind.DELETE_STATEFULSET: (rolling, after_delete_statefulset, after_undo_delete_statefulset),
    StepKind.EVICT: (rolling, after_evict, after_undo_evict),
    StepKind.DETACH: (rolling, after_detach, nothing_changed),
    StepKind.DELETE_PVC: (rolling, after_delete_pvc, after_undo_delete_pvc),
    StepKind.DELETE_PV: (rolling, after_delete_pv, after_undo_delete_pv),
    StepKind.CNS_RELEASE: (rolling, nothing_changed, nothing_changed),
    StepKind.FCD: (rolling, after_fcd, after_undo_fcd),
    StepKind.CREATE_PV: (rolling, after_create_pv, after_undo_create_pv),
    StepKind.CREATE_PVC: (rolling, after_create_pvc, after_undo_create_pvc),
    StepKind.RECREATE_POD: (rolling, after_recreate_pod, after_undo_recreate_pod),
    StepKind.RECREATE_STATEFULSET: (rolling, after_recreate_statefulset, after_undo_recreate_statefulset),
    StepKind.RESTORE_RECLAIM_POLICY: (rolling, after_restore, after_undo_restore),
    StepKind.SCALE_DOWN: (offline, after_scale_down, after_undo_scale_down),
    StepKind.SCALE_TO_ZERO: (deployment, after_scale_to_zero, after_scale_up),
    StepKind.SCALE_BACK: (deployment, after_scale_back, after_scale_to_zero),
}


@pytest.mark.parametrize("kind", list(CASES), ids=str)
def test_each_kind_of_step_is_done_once_however_often_it_runs_and_undone(tmp_path: Path, kind: StepKind) -> None:
    make, done, undone = CASES[kind]
    w = make(tmp_path)
    step = w.until(kind)
    before = w.kube.mutations()
    w.do(step)
    done(w)
    after = w.kube.mutations()
    state = copy.deepcopy(w.kube.objs)
    w.do(step)  # a killed run repeats the step
    assert w.kube.mutations() == after, f"{kind} done again wrote {w.kube.mutations()[len(after) :]}"
    assert w.kube.objs == state
    if kind == StepKind.BACKUP:
        assert after == before
    w.undo(step)
    if KINDS[kind].undo is nothing:
        assert w.kube.mutations() == after, f"{kind} has nothing to undo, and its undo wrote nothing"
    undone(w)
    undone_state = copy.deepcopy(w.kube.objs)
    mutations = w.kube.mutations()
    w.undo(step)  # a rollback stopped and started again
    assert w.kube.mutations() == mutations and w.kube.objs == undone_state, f"{kind} undone again changed something"


@pytest.mark.parametrize("kind", list(StepKind), ids=str)
def test_every_kind_of_step_has_a_test_of_its_do_and_undo(kind: StepKind) -> None:
    assert kind in KINDS and kind in CASES, f"step kind {kind} has no do/undo test in {__file__}"


# -- other writers between a step's read and its write ------------------------------------------


def test_a_reclaim_policy_set_back_to_delete_after_retain_is_retained_again_before_the_claim_goes(
    tmp_path: Path,
) -> None:
    w = rolling(tmp_path)
    step = w.until(StepKind.DELETE_PVC)
    w.kube.patch("PersistentVolume", "pv-data-web-0", {"spec": {"persistentVolumeReclaimPolicy": "Delete"}})
    w.do(step)
    assert policy(w, "pv-data-web-0") == "Retain" and w.get("PersistentVolumeClaim", "data-web-0") is None
    assert any("changed back by someone" in line for line in w.ctx.said)


def test_a_reclaim_policy_that_does_not_stay_retain_keeps_the_claim(tmp_path: Path) -> None:
    w = rolling(tmp_path)
    step = w.until(StepKind.DELETE_PVC)
    w.kube.patch("PersistentVolume", "pv-data-web-0", {"spec": {"persistentVolumeReclaimPolicy": "Delete"}})

    # a GitOps sync puts Delete back right after the step's own patch
    w.kube.after_write[("patch", "PersistentVolume", "pv-data-web-0")] = lambda kube: kube.patch(
        "PersistentVolume", "pv-data-web-0", {"spec": {"persistentVolumeReclaimPolicy": "Delete"}}
    )
    with pytest.raises(PermanentError, match="does not stay Retain"):
        w.do(step)
    assert w.get("PersistentVolumeClaim", "data-web-0") is not None, "the claim was not deleted"


def test_a_claim_recreated_by_someone_else_between_the_backup_and_the_delete_is_not_deleted(tmp_path: Path) -> None:
    w = rolling(tmp_path)
    step = w.until(StepKind.DELETE_PVC)

    def recreate(kube: FakeKube) -> None:
        del kube.objs[kube.key("PersistentVolumeClaim", "data-web-0", NS)]
        kube.put(claim("data-web-0", "pv-data-web-0", "standard", "someone-elses"))

    w.kube.before_write[("delete", "PersistentVolumeClaim", "data-web-0")] = recreate
    with pytest.raises(PermanentError, match="recreated by someone else"):
        w.do(step)
    live = w.get("PersistentVolumeClaim", "data-web-0")
    assert live is not None and live["metadata"]["uid"] == "someone-elses"


def test_retain_reads_its_cache_and_a_pv_set_to_retain_by_someone_else_meanwhile_is_left_as_is(tmp_path: Path) -> None:
    """Someone sets the PV to Retain between the step's read (the cache) and its write: the
    merge patch sets the same policy; the annotation records the policy the plan saw (Delete),
    which the undo and restore-reclaim-policy put back."""
    w = rolling(tmp_path)
    step = w.until(StepKind.RETAIN)
    w.kube.before_write[("patch", "PersistentVolume", "pv-data-web-0")] = lambda kube: kube.patch(
        "PersistentVolume", "pv-data-web-0", {"spec": {"persistentVolumeReclaimPolicy": "Retain"}}
    )
    w.do(step)
    assert policy(w, "pv-data-web-0") == "Retain" and noted(w, "pv-data-web-0")
    w.undo(step)
    assert policy(w, "pv-data-web-0") == "Delete"


def test_delete_pv_refuses_a_pv_someone_set_back_to_delete(tmp_path: Path) -> None:
    w = rolling(tmp_path)
    step = w.until(StepKind.DELETE_PV)
    w.kube.patch("PersistentVolume", "pv-data-web-0", {"spec": {"persistentVolumeReclaimPolicy": "Delete"}})
    with pytest.raises(PermanentError, match="not Retain; refusing to delete"):
        w.do(step)
    assert w.kube.obj("PersistentVolume", "pv-data-web-0") is not None


def test_a_pod_recreated_by_someone_else_is_not_evicted(tmp_path: Path) -> None:
    w = rolling(tmp_path)
    step = w.until(StepKind.EVICT)
    pod = w.kube.objs.pop(w.kube.key("Pod", "web-0", NS))
    pod["metadata"]["uid"] = "someone-elses"
    w.kube.put(pod)
    with pytest.raises(PermanentError, match="recreated by someone else"):
        w.do(step)
    assert owners_of(w, "web-0") == [] and w.get("Pod", "web-0") is not None


def test_create_pvc_refuses_a_claim_of_that_name_on_another_volume(tmp_path: Path) -> None:
    w = rolling(tmp_path)
    step = w.until(StepKind.CREATE_PVC)
    w.kube.put(claim("data-web-0", "pvc-new", "standard", "someone-elses"))
    with pytest.raises(PermanentError, match="not bound to pv-data-web-0"):
        w.do(step)


def test_undo_create_pv_deletes_only_the_csi_pv_and_not_one_still_bound(tmp_path: Path) -> None:
    w = rolling(tmp_path)
    step = w.until(StepKind.CREATE_PVC)
    w.do(step)
    with pytest.raises(PermanentError, match="still bound to its claim"):
        w.undo(w.step(StepKind.CREATE_PV))
    assert w.kube.obj("PersistentVolume", "pv-data-web-0") is not None


def test_detach_waits_for_the_volume_attachment_and_times_out_while_it_stays(tmp_path: Path) -> None:
    w = rolling(tmp_path)
    step = w.until(StepKind.DETACH)
    attachment = {"kind": "VolumeAttachment", "metadata": {"name": "va-1"},
                  "spec": {"source": {"persistentVolumeName": "pv-data-web-0"}}}  # fmt: skip
    w.kube.put(attachment)
    with pytest.raises(TemporaryError, match="to be detached"):
        w.do(step)
    w.kube.controllers.append(lambda kube: kube.objs.pop(kube.key("VolumeAttachment", "va-1", None), None))
    w.do(step)
    w.ctx.vsphere.attached["[ds] kubevols/pv-data-web-0.vmdk"] = ["node-1"]
    with pytest.raises(TemporaryError, match="still attached to node-1"):
        w.do(step)


def test_cns_release_waits_until_the_driver_drops_its_record_of_the_disk(tmp_path: Path) -> None:
    w = rolling(tmp_path, resources={"CnsVSphereVolumeMigration"})
    record = {"kind": "CnsVSphereVolumeMigration", "metadata": {"name": "fcd-77"},
              "spec": {"volumepath": "[ds] kubevols/pv-data-web-0.vmdk"}}  # fmt: skip
    w.kube.put(record)
    step = w.until(StepKind.CNS_RELEASE)
    with pytest.raises(PermanentError, match="cnsvspherevolumemigration/fcd-77 still exists"):
        w.do(step)
    w.kube.controllers.append(lambda kube: kube.objs.pop(kube.key("CnsVSphereVolumeMigration", "fcd-77", None)))
    w.do(step)
    # The FCD id the driver recorded (kept by the backup) is used when vCenter confirms it.
    w.ctx.vsphere.fcds["[ds] kubevols/pv-data-web-0.vmdk"] = "fcd-77"
    assert w.do(w.step(StepKind.FCD)) == {"fcd_id": "fcd-77", "keep_after_delete_vm": True}
    assert w.ctx.vsphere.registered == []


def test_fcd_stops_when_vcenter_does_not_keep_the_disk_protected(tmp_path: Path) -> None:
    w = rolling(tmp_path)
    step = w.until(StepKind.FCD)
    w.ctx.vsphere.keeps_flag = False
    with pytest.raises(PermanentError, match="keepAfterDeleteVm"):
        w.do(step)


def test_create_pv_refuses_a_second_pv_for_a_disk_another_pv_names(tmp_path: Path) -> None:
    w = rolling(tmp_path)
    step = w.until(StepKind.CREATE_PV)
    other = copy.deepcopy(statefulset_cluster()[2])  # pv-data-web-0 as it was, under another name
    other["metadata"] = {"name": "someone-elses", "uid": "u-other"}
    w.kube.put(other)
    with pytest.raises(PermanentError, match="refusing to create a second PV"):
        w.do(step)
    assert w.kube.obj("PersistentVolume", "pv-data-web-0") is None


def test_a_claim_someone_else_created_is_neither_taken_for_the_in_tree_one_nor_deleted_as_the_run_s(
    tmp_path: Path,
) -> None:
    w = rolling(tmp_path)
    w.until(StepKind.DELETE_PV)  # the in-tree claim deleted, its PV still there
    w.kube.put(claim("data-web-0", "pv-data-web-0", "standard-rwo", "someone-elses"))
    with pytest.raises(PermanentError, match="is not the in-tree claim"):
        w.undo(w.step(StepKind.DELETE_PVC))
    w.kube.patch("PersistentVolumeClaim", "data-web-0", {"spec": {"volumeName": "elsewhere"}}, NS)
    with pytest.raises(PermanentError, match="neither the original nor the one this run created"):
        w.undo(w.step(StepKind.CREATE_PVC))
    live = w.get("PersistentVolumeClaim", "data-web-0")
    assert live is not None and live["metadata"]["uid"] == "someone-elses"


def test_a_claim_retention_policy_of_delete_is_set_to_retain_before_the_orphan_delete_and_comes_back(
    tmp_path: Path,
) -> None:
    objs = statefulset_cluster()
    objs[0]["spec"]["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Delete", "whenScaled": "Retain"}
    plan = build_plan(snapshot(replicas=1), "ctx", "https://k", "standard-rwo", None, "rolling")
    w = World(tmp_path, plan, objs)
    step = w.until(StepKind.DELETE_STATEFULSET)
    w.do(step)
    assert w.kube.mutations() == [
        ("patch", "PersistentVolume", "pv-data-web-0"),
        ("patch", "StatefulSet", "web"),
        ("delete", "StatefulSet", "web"),
    ]
    assert w.get("PersistentVolumeClaim", "data-web-0") is not None
    w.undo(step)
    sts = w.get("StatefulSet", "web")
    assert sts is not None and sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"


def test_restore_reclaim_policy_leaves_the_new_pvs_on_retain_when_asked(tmp_path: Path) -> None:
    w = rolling(tmp_path)
    step = w.until(StepKind.RESTORE_RECLAIM_POLICY)
    w.ctx.settings.keep_retain = True
    w.do(step)
    assert policy(w, "pv-data-web-0") == "Retain" and not noted(w, "pv-data-web-0")
