"""The steps that act on the owner and its pods, forwards and backwards (rollback): the backup;
for a StatefulSet scaling down, the orphan delete, evictions, pods and the StatefulSet created
again; for a Deployment or ReplicaSet scaling to zero and back; for a claim its bare pod evicted
and created again.

Each function takes the run as a `Context` (context.py: its plan, clients, working directory and waits) and the
step; each looks at the live object first and does only what is left (a killed run repeats it).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

from kubectl_csi_migrate.errors import (
    ConflictError,
    NotFoundError,
    PermanentError,
    TemporaryError,
    TooManyRequestsError,
)
from kubectl_csi_migrate.kube import predicates as p
from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration import events, owners, translate
from kubectl_csi_migrate.migration.budget import orphan_budget
from kubectl_csi_migrate.migration.context import OWNER, Context, Kind, crud, nothing
from kubectl_csi_migrate.migration.plan import OwnerKind
from kubectl_csi_migrate.migration.steps import Step, StepKind, step_id

RETAIN_CLAIMS = {"whenDeleted": "Retain", "whenScaled": "Retain"}
# On the StatefulSet the tool recreates: the uid of the one it replaced. It tells the tool's own
# StatefulSet from one put back by someone else.
RECREATED_FROM = "csi-migrate.kubectl.io/recreated-from"


def backup(m: Context, step: Step) -> Obj:
    ns, kind, who = m.plan.namespace, str(m.plan.kind), owners.owner(m.plan.kind)
    owner = m.kube.get(kind, m.plan.name, ns)
    if owner is None or owner["metadata"]["uid"] != m.plan.uid:
        raise PermanentError(f"{m.plan.what} changed since it was planned; run again")
    objects: list[tuple[str, str, Obj]] = [(kind, who.api_version, owner)] if who.api_version else []
    if who.pods(m.plan):
        pods = _read(m, "Pod", who.pods(m.plan), ns)
        objects += [("Pod", "v1", pod) for pod in pods.values()]
    claims = _read(m, "PersistentVolumeClaim", [v.pvc for v in m.plan.volumes], ns)
    cached = {pv["metadata"]["name"]: pv for pv in m.pvs.items()}  # listed now: the run's first use
    for v in m.plan.volumes:
        pv = cached.get(v.pv) or m.kube.get("PersistentVolume", v.pv)
        for kind, name, obj in (("PersistentVolumeClaim", v.pvc, claims.get(v.pvc)), ("PersistentVolume", v.pv, pv)):
            if obj is None:
                raise NotFoundError(f"{kind.lower()} {name} disappeared before the backup")
            objects.append((kind, "v1", copy.deepcopy(obj)))
    if m.kube.has_resource("CnsVSphereVolumeMigration"):
        # The CSI driver's path -> FCD id records: kept as the quickest way to the FCD id,
        # since the driver deletes them once the in-tree PV is gone. As preflight listed them a
        # moment ago, when it did (the driver writes one when it first sees an in-tree PV).
        disks = {v.vmdk for v in m.plan.to_migrate()}
        for record in m.kube.items_once("CnsVSphereVolumeMigration"):
            if record.get("spec", {}).get("volumepath") in disks:
                objects.append(("CnsVSphereVolumeMigration", "cns.vmware.com/v1alpha1", record))
    for kind, api_version, obj in objects:
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", api_version)
        m.workdir.save_backup(obj)
    m.say(f"backed up {len(objects)} objects to {m.workdir.backup_dir}")
    return {"objects": len(objects)}


def _read(m: Context, kind: str, names: list[str], namespace: str) -> dict[str, Obj]:
    """The objects of `names` that exist (pods or claims of the run's namespace), from the run's
    cache of the kind: listed on its first use, then followed by a watch."""
    wanted = set(names)
    return {o["metadata"]["name"]: o for o in m.caches[(kind, namespace)].items() if o["metadata"]["name"] in wanted}


def scale_down(m: Context, step: Step) -> None:
    ns, name = m.plan.namespace, m.plan.name
    sts = m.kube.get("StatefulSet", name, ns)
    if sts is not None and sts["metadata"]["uid"] == m.plan.uid:
        # With persistentVolumeClaimRetentionPolicy.whenScaled: Delete, scaling to zero
        # would delete every claim, the skipped ones too: keep them (the backup has the
        # original policy, which the recreated StatefulSet gets back).
        _refresh_backups(m, sts)
        patch = {"spec": {"replicas": 0, "persistentVolumeClaimRetentionPolicy": RETAIN_CLAIMS}}
        m.kube.patch("StatefulSet", name, patch, ns)
        m.say(f"statefulset.apps/{name} scaled to 0 (downtime starts)")
    pods = {m.plan.pod_name(o) for o in range(m.plan.replicas)}
    m.wait("Pod", lambda objs: not pods & set(objs), f"the pods of {name} to stop", namespace=ns, label="Pod gone")


def delete_statefulset(m: Context, step: Step) -> None:
    ns, name = m.plan.namespace, m.plan.name
    sts = m.kube.get("StatefulSet", name, ns)
    if sts is not None and sts["metadata"]["uid"] == m.plan.uid:
        if m.plan.strategy == "rolling":  # offline: refreshed before our own scale-down
            _refresh_backups(m, sts)
        policy = sts["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
        if any(policy.get(k) == "Delete" for k in ("whenDeleted", "whenScaled")):
            patch = {"spec": {"persistentVolumeClaimRetentionPolicy": RETAIN_CLAIMS}}
            m.kube.patch("StatefulSet", name, patch, ns)
            m.say(f"statefulset.apps/{name} claim retention set to Retain for the migration")
        m.kube.delete("StatefulSet", name, ns, uid=m.plan.uid, propagation="Orphan")
        m.say(f"statefulset.apps/{name} deleted (orphan: pods, PVCs and PVs kept)")
    m.wait_gone("StatefulSet", name, m.plan.uid, f"statefulset {name} to go", ns)
    pods = {m.plan.pod_name(o) for o in range(m.plan.replicas)}
    m.wait(
        "Pod",
        p.not_owned_by(m.plan.uid, pods),
        "the garbage collector to orphan the pods",
        namespace=ns,
        label="Pod orphaned",
    )


def stop_if_recreated_elsewhere(m: Context, live: Obj | None) -> None:
    """Once the tool has deleted the StatefulSet, the only one of that name it accepts is the
    one it creates itself (annotated with the old uid). Any other was put back by someone
    else, with the in-tree templates: adopting it would end the run "migrated" with the
    application still asking for in-tree volumes, and it would recreate pods under the run.
    Checked before every step (Migration.step), so the run stops at the first boundary after it
    appears. A replica whose claim the run had deleted and not yet created again meanwhile got a
    new, empty claim of that name from the StatefulSet's controller, and a pod on it: the message
    names them, where that replica's data is, and what to delete before the same command can
    finish (issue 17, item 4)."""
    if live is None or live["metadata"]["uid"] == m.plan.uid:
        return
    if (live["metadata"].get("annotations") or {}).get(RECREATED_FROM) == m.plan.uid:
        return
    ns, name = m.plan.namespace, m.plan.name
    uid = live["metadata"]["uid"]
    writer = p.writer_of(live, ("f:spec",))  # not the controller's later status writes
    by = f", written by {writer}" if writer else ""
    message = (
        f"statefulset {ns}/{name} was created again by someone else while the migration ran "
        f"(uid {uid}{by}), not by this run: something manages it (Argo CD, Flux, a Helm release, an "
        "operator?) and puts the in-tree templates back; the run stopped before its next step"
    )
    window = [
        v
        for v in m.plan.to_migrate()
        if step_id(StepKind.DELETE_PVC, v.pvc) in m.done and step_id(StepKind.CREATE_PVC, v.pvc) not in m.done
    ]
    # Listed now, not read from the run's pod cache: its watch may not have delivered yet the pod
    # the StatefulSet's controller made a moment ago (a run resumed from a pause saw none), and
    # what the message tells the user to delete must be what is there (suite run 6).
    pods = m.kube.items("Pod", ns)
    theirs = sorted(
        o["metadata"]["name"]
        for o in pods
        if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
    )
    replaced, users_of_window = [], []
    for v in window:
        claim = m.kube.get("PersistentVolumeClaim", v.pvc, ns)
        if claim is None:
            continue
        bound = claim["spec"].get("volumeName")
        on = f"bound to persistentvolume/{bound}, a new empty volume" if bound else "not bound yet"
        users = [
            o["metadata"]["name"]
            for o in pods
            if any(
                (vol.get("persistentVolumeClaim") or {}).get("claimName") == v.pvc
                for vol in o["spec"].get("volumes") or []
            )
        ]
        users_of_window += users
        used = f", mounted by pod {', '.join(users)}" if users else ""
        replaced.append(
            f"persistentvolumeclaim {v.pvc} is one its controller made anew ({on}{used}); the data of "
            f"{v.pvc} is safe on {v.vmdk}"
        )
    if replaced:
        # Offline, every pod it made must go (the run moves volumes with none running); rolling,
        # those on the new claims (the others run on their own claims, as the run left them).
        pods_to_delete = theirs if m.plan.strategy == "offline" else sorted(set(users_of_window))
        to_delete = ["pod " + " ".join(pods_to_delete)] if pods_to_delete else []
        to_delete.append("pvc " + " ".join(v.pvc for v in window))
        message += (
            ". " + "; ".join(replaced) + ". To finish: pause that manager; run "
            f"`kubectl -n {ns} delete statefulset {name} --cascade=orphan`; copy off anything written to the new "
            "claims since, then delete the pods and the new claims (`"
            + "`, `".join(f"kubectl -n {ns} delete {d}" for d in to_delete)
            + "`); then run the same command again"
        )
    else:
        pods_note = (
            f"; delete the pods it made ({', '.join(theirs)})" if theirs and m.plan.strategy == "offline" else ""
        )
        message += (
            f". Nothing is lost: migrated volumes are on CSI, the rest untouched, all recorded in {m.workdir.path}. "
            f"Pause that manager, run `kubectl -n {ns} delete statefulset {name} --cascade=orphan`{pods_note}, "
            "and run the same command again"
        )
    raise PermanentError(message)


def stop_if_scaled_up(m: Context) -> None:
    """Between the run's scale to 0 and its scale back, the Deployment (or ReplicaSet) stays at
    0: scaled up by someone else (an autoscaler, a GitOps sync, a person), its new pods would take
    the in-tree claim back before the run deletes it (the claim then sticks in Terminating) or
    start before it is bound again. Checked before every step (Migration.step): the run stops at
    the next boundary; the same command scales it to 0 again (Migration.run) once that has been
    paused (issue 17, item 7)."""
    live = _live_owner(m)
    replicas = int(live["spec"].get("replicas", 1))
    if replicas == 0:
        return
    writer = p.writer_of(live, ("f:spec", "f:replicas"))
    by = f" by {writer}" if writer else ""
    raise PermanentError(
        f"{m.plan.what} was scaled to {replicas}{by} while the run kept it at 0 (an autoscaler, a GitOps sync, a "
        "person?): its pods would take the claims back before they are replaced; the run stopped before its next "
        f"step, nothing is lost (every step is recorded in {m.workdir.path}). Pause what scales it, then run the "
        f"same command again (it scales {m.plan.ref} to 0 again and goes on), or roll back with "
        f"`kubectl csi-migrate rollback {m.plan.ref} -n {m.plan.namespace}`"
    )


def _own_retention_patch(live: Obj, backup: Obj) -> Obj | None:
    """The user's claim retention policy (from the backup) when the live StatefulSet carries
    the tool's own (RETAIN_CLAIMS) in its place, else None."""
    original = backup["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
    current = live["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
    if current == RETAIN_CLAIMS and any(original.get(k) == "Delete" for k in RETAIN_CLAIMS):
        return dict(original)
    return None


def _refresh_backups(m: Context, sts: Obj) -> None:
    """A run resumed before the StatefulSet was deleted may find it changed since the
    backup (a rollout, a replaced pod). Nothing is deleted yet: back up the current
    StatefulSet and pods again, so that what is recreated is what ran last."""
    backup = m.workdir.load_backup("StatefulSet", m.plan.name)
    if m.plan.strategy == "offline" and sts["spec"].get("replicas") == 0:
        return  # our own scale-down, interrupted before it was recorded: the backup stands
    if int(sts["spec"].get("replicas", 1)) != m.plan.replicas and m.plan.strategy == "rolling":
        raise PermanentError(
            f"statefulset {m.plan.namespace}/{m.plan.name} was scaled since it was planned; "
            "nothing was deleted: start again with a new --working-directory"
        )
    if sts["metadata"].get("deletionTimestamp"):
        return  # our own orphan delete, interrupted before it was recorded: the backup stands
    ours = _own_retention_patch(sts, backup)
    if ours:
        # Our own patch (claims kept for the migration) bumped the generation: recreate with
        # the user's policy, not ours.
        sts["spec"]["persistentVolumeClaimRetentionPolicy"] = ours
    generation = int(sts["metadata"].get("generation") or 0) - (1 if ours else 0)
    changed = generation != backup["metadata"].get("generation")
    pods = list(_read(m, "Pod", [m.plan.pod_name(o) for o in range(m.plan.replicas)], m.plan.namespace).values())
    for pod in pods:
        if not m.workdir.has_backup("Pod", pod["metadata"]["name"]):
            changed = True
        else:
            old = m.workdir.load_backup("Pod", pod["metadata"]["name"])
            changed = changed or old["metadata"]["uid"] != pod["metadata"]["uid"]
    if not changed:
        return
    for kind, api_version, obj in [("StatefulSet", "apps/v1", sts)] + [("Pod", "v1", x) for x in pods]:
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", api_version)
        m.workdir.save_backup(obj, overwrite=True)
    m.say("the StatefulSet or its pods changed since the backup: backed them up again")


def evict(m: Context, step: Step) -> None:
    ns, pod = m.plan.namespace, m.plan.pod_name(step.ordinal or 0)
    if not m.workdir.has_backup("Pod", pod):
        _evict_live(m, pod, m.kube.get("Pod", pod, ns))  # no pod when backed up: one started since goes
        return
    # The backup's pod only (a precondition, no read first): another one of that name was
    # created by someone else while the run had the StatefulSet deleted.
    backup = m.workdir.load_backup("Pod", pod)
    try:
        _evict(m, pod, backup["metadata"]["uid"], backup["metadata"].get("labels") or {})
    except ConflictError:
        raise PermanentError(
            f"pod {ns}/{pod} was recreated by someone else while migrating; stop and inspect"
        ) from None


def _evict_live(m: Context, pod: str, live: Obj | None) -> None:
    """Evict `live` (pod `pod` as last read, None when gone) and wait until it is gone."""
    if live is None:
        m.wait_gone("Pod", pod, None, f"pod {pod} to go", m.plan.namespace)
        return
    _evict(m, pod, live["metadata"]["uid"], live["metadata"].get("labels") or {})


def _evict(m: Context, pod: str, uid: str, labels: dict[str, str]) -> None:
    """Evict pod `pod` of `uid` (labelled `labels`) and wait until it is gone: through the
    Eviction API where the cluster evaluates the pod's disruption budgets, or, where it cannot
    (the StatefulSet deleted: its pods have no controller to count them by), against the budgets
    as the tool evaluates them, with a delete of that uid. The budgets are looked at first: the
    Eviction API would refuse such a pod every time (429)."""
    ns = m.plan.namespace
    deadline = time.monotonic() + m.settings.timeout
    while True:
        budget = orphan_budget(m.kube, m.plan, labels)
        refused = "" if budget is None else f"poddisruptionbudget {budget[1]} allows no pod down now"
        try:
            if budget is None:
                m.kube.evict(pod, ns, uid=uid)
                m.say(f"pod/{pod} evicted")
                break
            if budget[0]:
                m.kube.delete("Pod", pod, ns, uid=uid)
                m.say(f"pod/{pod} deleted ({budget[1]})")
                break
            # Not allowed, counting this pod as Ready: is it still there (a resumed run finds
            # it gone)? Another of that name is someone else's (as the precondition would say).
            live = m.kube.get("Pod", pod, ns)
            if live is None:
                break
            if live["metadata"]["uid"] != uid:
                raise ConflictError(f"pod {ns}/{pod} has uid {live['metadata']['uid']}, not {uid}")
        except NotFoundError:
            break
        except TooManyRequestsError as exc:
            refused = str(exc)
        if time.monotonic() > deadline:
            raise TemporaryError(f"pod {ns}/{pod} cannot be evicted: {refused}")
        m.sleep(1)  # the disruption budget allows it once the last pod is Ready
    m.wait_gone("Pod", pod, uid, f"pod {pod} to go", ns)


def recreate_pod(m: Context, step: Step) -> None:
    ns, pod = m.plan.namespace, m.plan.pod_name(step.ordinal or 0)
    if not m.workdir.has_backup("Pod", pod):
        return  # there was no pod for this ordinal
    created: Obj | None
    try:  # created first: a pod already there (an earlier attempt's) answers 409, and is waited on
        created = m.kube.create(_pod_from_backup(m, pod))
        m.say(f"pod/{pod} created")
    except ConflictError:
        created = m.kube.get("Pod", pod, ns)
    m.wait(
        "Pod",
        p.pod_ready(pod, _uid(created)),  # that pod: the run's view may still show the one evicted
        f"pod {pod} to be Ready",
        namespace=ns,
        label="Pod Ready",
        field_selector=f"metadata.name={pod}",
    )


def _pod_from_backup(m: Context, pod: str) -> Obj:
    """The pod to create from its backup: a claim's is a bare pod (no controller places it)."""
    return translate.pod_for_recreate(m.workdir.load_backup("Pod", pod), bare=owners.owner(m.plan.kind).bare_pods)


def _uid(obj: Obj | None) -> str | None:
    return str(obj["metadata"]["uid"]) if obj and obj.get("metadata", {}).get("uid") else None


def recreate_statefulset(m: Context, step: Step) -> None:
    ns, name = m.plan.namespace, m.plan.name
    backup = m.workdir.load_backup("StatefulSet", name)
    live = m.kube.get("StatefulSet", name, ns)
    stop_if_recreated_elsewhere(m, live)
    if live is None:
        new = translate.statefulset_for_recreate(backup, m.plan.csi_class, set(m.plan.migrate_templates))
        new["metadata"].setdefault("annotations", {})[RECREATED_FROM] = m.plan.uid
        live = m.kube.create(new)
        m.say(f"statefulset.apps/{name} created (volumeClaimTemplates on {m.plan.csi_class})")
    elif live["metadata"]["uid"] == m.plan.uid:
        raise PermanentError(f"statefulset {ns}/{name} still has its old uid; it was not deleted")
    sts = _wait_owns_ready_pods(m, live["metadata"]["uid"], backup)
    if sts is not None:
        m.event("StatefulSet", "apps/v1", sts, "MigratedToCSI", events.owner_message(m.plan, m.done))


def _wait_owns_ready_pods(m: Context, uid: str, backup: Obj) -> Obj | None:
    """Until the StatefulSet `uid` owns its pods, all Ready; then, for a while and without
    failing over it, until its own status says so. Returns it as last read."""
    ns, name = m.plan.namespace, m.plan.name
    replicas = int(backup["spec"].get("replicas", 1))
    pods = {m.plan.pod_name(o) for o in range(replicas)}
    selector = ",".join(f"{k}={v}" for k, v in backup["spec"]["selector"].get("matchLabels", {}).items())
    m.wait(
        "Pod",
        lambda objs: p.statefulset_adopted_and_ready(uid, replicas, pods, objs),
        f"statefulset {name} to adopt {replicas} Ready pods",
        namespace=ns,
        label="Pod Ready",
        label_selector=selector or None,
    )
    m.say(f"statefulset.apps/{name} owns {replicas} Ready pods")
    # Every pod is Ready and adopted (checked above); the StatefulSet's own status can lag
    # behind its pods. Wait a while for it, but do not fail the migration over it.
    started = time.monotonic()
    try:
        seen = m.kube.watch_until(
            "StatefulSet",
            p.statefulset_ready(replicas),
            f"statefulset {name} to report {replicas} ready",
            min(60.0, m.settings.timeout),
            namespace=ns,
            field_selector=f"metadata.name={name}",
        )
        if name in seen:
            return seen[name]
    except TemporaryError:
        m.say(f"warning: statefulset.apps/{name} status does not report {replicas} ready yet; its pods are Ready")
    finally:
        m.timing.waited += time.monotonic() - started
    return m.kube.get("StatefulSet", name, ns)


def undo_recreate_statefulset(m: Context, step: Step) -> None:
    ns, name = m.plan.namespace, m.plan.name
    live = m.kube.get("StatefulSet", name, ns)
    if live is None or live["metadata"]["uid"] == m.plan.uid:
        return
    uid = live["metadata"]["uid"]
    if (live["metadata"].get("annotations") or {}).get(RECREATED_FROM) != m.plan.uid:
        raise PermanentError(
            f"statefulset {ns}/{name} (uid {uid}) was not created by this run; the rollback leaves it "
            f"alone. If it should go, run `kubectl -n {ns} delete statefulset {name} --cascade=orphan` "
            "and the same rollback command again"
        )
    if not live["metadata"].get("deletionTimestamp"):
        policy = live["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
        patch: Obj = {}
        if any(policy.get(k) == "Delete" for k in RETAIN_CLAIMS):
            patch["persistentVolumeClaimRetentionPolicy"] = RETAIN_CLAIMS
        if m.plan.strategy == "offline" and live["spec"].get("replicas") != 0:
            patch["replicas"] = 0
        if patch:
            m.kube.patch("StatefulSet", name, {"spec": patch}, ns)
            if "replicas" in patch:
                m.say(f"statefulset.apps/{name} scaled to 0 (downtime starts)")
        if m.plan.strategy == "offline":
            pods = {m.plan.pod_name(o) for o in range(m.plan.replicas)}
            m.wait(
                "Pod", lambda objs: not pods & set(objs), f"the pods of {name} to stop", namespace=ns, label="Pod gone"
            )
        m.kube.delete("StatefulSet", name, ns, uid=uid, propagation="Orphan")
        m.say(f"statefulset.apps/{name} (CSI) deleted (orphan: pods, PVCs and PVs kept)")
    m.wait_gone("StatefulSet", name, uid, f"statefulset {name} to go", ns)
    pods = {m.plan.pod_name(o) for o in range(m.plan.replicas)}
    m.wait(
        "Pod", p.not_owned_by(uid, pods), "the garbage collector to orphan the pods", namespace=ns, label="Pod orphaned"
    )


def undo_recreate_pod(m: Context, step: Step) -> None:
    ns, pod = m.plan.namespace, m.plan.pod_name(step.ordinal or 0)
    live = m.kube.get("Pod", pod, ns)
    if live is None or not m.workdir.has_backup("Pod", pod):
        return
    if live["metadata"]["uid"] == m.workdir.load_backup("Pod", pod)["metadata"]["uid"]:
        return  # still the original pod: it runs on in-tree volumes
    _evict_live(m, pod, live)


def undo_evict(m: Context, step: Step) -> None:
    ns, pod = m.plan.namespace, m.plan.pod_name(step.ordinal or 0)
    if not m.workdir.has_backup("Pod", pod):
        return
    live = m.kube.get("Pod", pod, ns)
    if live is None:
        live = m.kube.create(_pod_from_backup(m, pod))
        m.say(f"pod/{pod} created again from its backup")
    ready = p.pod_ready(pod, _uid(live))  # that pod: the run's view may still show the one deleted
    m.wait(
        "Pod", ready, f"pod {pod} to be Ready", namespace=ns, label="Pod Ready", field_selector=f"metadata.name={pod}"
    )


def undo_delete_statefulset(m: Context, step: Step) -> None:
    ns, name = m.plan.namespace, m.plan.name
    backup = m.workdir.load_backup("StatefulSet", name)
    live = m.kube.get("StatefulSet", name, ns)
    if live is not None and live["metadata"]["uid"] == m.plan.uid:
        if not live["metadata"].get("deletionTimestamp"):
            ours = _own_retention_patch(live, backup)
            if ours:
                patch = {"spec": {"persistentVolumeClaimRetentionPolicy": ours}}
                m.kube.patch("StatefulSet", name, patch, ns)
                m.say(f"statefulset.apps/{name} claim retention policy restored")
            return  # never deleted
        m.wait_gone("StatefulSet", name, m.plan.uid, f"statefulset {name} to go", ns)
        live = None
    if live is None:
        live = m.kube.create(translate.strip_server_fields(backup))
        m.say(f"statefulset.apps/{name} created again from its backup (in-tree volumeClaimTemplates)")
    elif (live["metadata"].get("annotations") or {}).get(RECREATED_FROM) == m.plan.uid:
        raise PermanentError(f"statefulset {ns}/{name} is still the CSI one this run created")
    else:
        m.say(f"statefulset.apps/{name} exists (uid {live['metadata']['uid']}, not created by this run); kept")
    _wait_owns_ready_pods(m, live["metadata"]["uid"], backup)


def undo_scale_down(m: Context, step: Step) -> None:
    ns, name = m.plan.namespace, m.plan.name
    live = m.kube.get("StatefulSet", name, ns)
    if live is None or live["metadata"]["uid"] != m.plan.uid:
        return  # created again from its backup, at its full size
    backup = m.workdir.load_backup("StatefulSet", name)
    replicas = int(backup["spec"].get("replicas", 1))
    if live["spec"].get("replicas") != replicas:
        policy = backup["spec"].get("persistentVolumeClaimRetentionPolicy") or RETAIN_CLAIMS
        patch = {"spec": {"replicas": replicas, "persistentVolumeClaimRetentionPolicy": policy}}
        m.kube.patch("StatefulSet", name, patch, ns)
        m.say(f"statefulset.apps/{name} scaled back to {replicas}")
    _wait_owns_ready_pods(m, m.plan.uid, backup)


# -- a Deployment or a ReplicaSet: scaled to zero while its claims move, then back -------------


def _live_owner(m: Context) -> Obj:
    """The Deployment (or ReplicaSet) as it is now; the one planned, or the run stops."""
    live = m.kube.get(m.plan.kind, m.plan.name, m.plan.namespace)
    if live is None or live["metadata"]["uid"] != m.plan.uid:
        raise PermanentError(
            f"{m.plan.what} was deleted or replaced while the migration ran; nothing is lost (every step is "
            f"recorded in {m.workdir.path}): put it back, or roll back with `kubectl csi-migrate rollback "
            f"{m.plan.ref} -n {m.plan.namespace}`"
        )
    return live


def _pods_of(live: Obj) -> Callable[[p.Objects], list[Obj]]:
    """The owner's own pods: a ReplicaSet's by their controller reference; a Deployment's by their
    ReplicaSet's, named `<deployment>-<pod-template-hash>` as the Deployment controller names
    them. Not every pod its selector matches: another owner's pods under an overlapping selector
    would keep a scale to 0 waiting with the application down (issue 17, item 7)."""
    selector = live["spec"].get("selector")
    meta = live["metadata"]

    def owned(pod: Obj) -> bool:
        refs = [r for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")]
        if live.get("kind", "Deployment") == "ReplicaSet":
            return any(r.get("uid") == meta["uid"] for r in refs)
        template_hash = (pod["metadata"].get("labels") or {}).get("pod-template-hash")
        return bool(template_hash) and any(
            r.get("kind") == "ReplicaSet" and r.get("name") == f"{meta['name']}-{template_hash}" for r in refs
        )

    def mine(objs: p.Objects) -> list[Obj]:
        return [
            o for o in objs.values() if p.selector_matches(selector, o["metadata"].get("labels") or {}) and owned(o)
        ]

    return mine


def _scale(m: Context, replicas: int) -> None:
    """Scale the owner to `replicas` (unless it is there) and wait until its pods are gone (0)
    or that many are Ready."""
    ns, kind, ref = m.plan.namespace, m.plan.kind, m.plan.ref
    live = _live_owner(m)
    if int(live["spec"].get("replicas", 1)) != replicas:
        m.kube.patch(kind, m.plan.name, {"spec": {"replicas": replicas}}, ns)
        m.say(f"{ref} scaled to {replicas}" + (" (downtime starts)" if replicas == 0 else ""))
    mine = _pods_of(live)
    if replicas == 0:
        m.wait("Pod", lambda objs: not mine(objs), f"the pods of {ref} to stop", namespace=ns, label="Pod gone")
        return
    m.wait(
        "Pod",
        lambda objs: (
            sum(1 for o in mine(objs) if p.is_pod_ready(o) and not o["metadata"].get("deletionTimestamp")) >= replicas
        ),
        f"{ref} to have {replicas} Ready pods",
        namespace=ns,
        label="Pod Ready",
    )
    m.say(f"{ref}: {replicas} pod(s) Ready (downtime ends)")


def scale_to_zero(m: Context, step: Step) -> None:
    _scale(m, 0)


def undo_scale_to_zero(m: Context, step: Step) -> None:
    _scale(m, m.plan.replicas)


def scale_back(m: Context, step: Step) -> None:
    _scale(m, m.plan.replicas)
    m.event(m.plan.kind, "apps/v1", _live_owner(m), "MigratedToCSI", events.owner_message(m.plan, m.done))


def undo_scale_back(m: Context, step: Step) -> None:
    _scale(m, 0)


# -- the kinds of step defined here ------------------------------------------------------------

BACKUP = Kind(
    StepKind.BACKUP,
    backup,
    nothing,
    needs=(
        *crud(OWNER, "get"),
        *crud("Pod", "get", "list"),
        *crud("PersistentVolumeClaim", "get", "list"),
        *crud("PersistentVolume", "get", "list", "watch"),
        *crud("CnsVSphereVolumeMigration", "list"),
    ),
    recorded_after=True,
)
SCALE_DOWN = Kind(
    StepKind.SCALE_DOWN,
    scale_down,
    undo_scale_down,
    needs=(*crud("StatefulSet", "get", "patch", "list", "watch"), *crud("Pod", "get", "list", "watch")),
    owners=frozenset({OwnerKind.STATEFULSET}),
    recorded_after=True,
    dry_run=lambda kube, plan, step: kube.patch(plan.kind, plan.name, {"spec": {"replicas": 0}}, plan.namespace),
)
SCALE_TO_ZERO = Kind(
    StepKind.SCALE_TO_ZERO,
    scale_to_zero,
    undo_scale_to_zero,
    needs=(*crud(OWNER, "get", "patch"), *crud("Pod", "get", "list", "watch")),
    owners=frozenset({OwnerKind.DEPLOYMENT, OwnerKind.REPLICASET}),
    recorded_after=True,
    dry_run=lambda kube, plan, step: kube.patch(plan.kind, plan.name, {"spec": {"replicas": 0}}, plan.namespace),
)
DELETE_STATEFULSET = Kind(
    StepKind.DELETE_STATEFULSET,
    delete_statefulset,
    undo_delete_statefulset,
    needs=(
        *crud("StatefulSet", "get", "patch", "delete", "create", "list", "watch"),
        *crud("Pod", "get", "list", "watch"),
    ),
    owners=frozenset({OwnerKind.STATEFULSET}),
    recorded_after=True,
    dry_run=lambda kube, plan, step: kube.delete(
        "StatefulSet", plan.name, plan.namespace, uid=plan.uid, propagation="Orphan"
    ),
)
EVICT = Kind(
    StepKind.EVICT,
    evict,
    undo_evict,
    needs=(
        *crud("Pod", "get", "delete", "create", "list", "watch"),
        ("create", "Pod", "eviction"),
        *crud("PodDisruptionBudget", "list"),
    ),
    owners=frozenset({OwnerKind.STATEFULSET, OwnerKind.CLAIM}),
    dry_run=lambda kube, plan, step: kube.evict(plan.pod_name(step.ordinal or 0), plan.namespace),
    dry_run_once=True,
)
RECREATE_POD = Kind(
    StepKind.RECREATE_POD,
    recreate_pod,
    undo_recreate_pod,
    needs=(
        *crud("Pod", "get", "create", "delete", "list", "watch"),
        ("create", "Pod", "eviction"),
        *crud("PodDisruptionBudget", "list"),
    ),
    owners=frozenset({OwnerKind.STATEFULSET, OwnerKind.CLAIM}),
)
RECREATE_STATEFULSET = Kind(
    StepKind.RECREATE_STATEFULSET,
    recreate_statefulset,
    undo_recreate_statefulset,
    needs=(
        *crud("StatefulSet", "get", "create", "patch", "delete", "list", "watch"),
        *crud("Pod", "list", "watch"),
        *crud("Event", "create"),
    ),
    owners=frozenset({OwnerKind.STATEFULSET}),
    recorded_after=True,
)
SCALE_BACK = Kind(
    StepKind.SCALE_BACK,
    scale_back,
    undo_scale_back,
    needs=(*crud(OWNER, "get", "patch"), *crud("Pod", "list", "watch"), *crud("Event", "create")),
    owners=frozenset({OwnerKind.DEPLOYMENT, OwnerKind.REPLICASET}),
    recorded_after=True,
)
KINDS = (BACKUP, SCALE_DOWN, SCALE_TO_ZERO, DELETE_STATEFULSET, EVICT, RECREATE_POD, RECREATE_STATEFULSET, SCALE_BACK)
