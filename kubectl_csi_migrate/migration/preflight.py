"""Preflight: every check that must pass before an owner's claims are migrated (a StatefulSet, a
Deployment or ReplicaSet, a claim on its own). Read-only.

Each check gives a name, PASS / WARN / FAIL and a message saying what to do. `sts` runs the same
checks first and refuses on any FAIL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kubectl_csi_migrate.errors import CsiMigrateError, PermanentError
from kubectl_csi_migrate.kube.client import Kube
from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration import budget, translate
from kubectl_csi_migrate.migration.check import FAIL, PASS, WARN, Check
from kubectl_csi_migrate.migration.context import Access
from kubectl_csi_migrate.migration.driver import DRIVER_LEASES, DRIVER_NAMESPACES, driver_leases, lease_age
from kubectl_csi_migrate.migration.kinds import REQUIRED_ACCESS, access_for
from kubectl_csi_migrate.migration.owners import owner
from kubectl_csi_migrate.migration.plan import (
    CLAIM,
    MIGRATE,
    SKIP_CSI,
    Plan,
    Snapshot,
)
from kubectl_csi_migrate.migration.workdir import WorkDir
from kubectl_csi_migrate.vsphere import paths

if TYPE_CHECKING:
    from kubectl_csi_migrate.vsphere.client import VCenter


# CSI migration of vSphere is on by default from 1.26 (GA 1.26... the in-tree code is gone in
# 1.30, so PVs are served through it). Tested on 1.28, 1.30 and 1.36; other releases get a warning.
MIN_VERSION = (1, 26)
TESTED_KUBERNETES = ("1.36.3", "1.30.14", "1.28.15")
"""The Kubernetes releases the e2e suite passes on, one leg each (testenv/legs.py PASSING; a unit
test keeps the two the same). A minor release of these passes; another one from 1.26 on is a WARN."""

# Every request a run or a rollback makes after its first change is in REQUIRED_ACCESS, the union
# of what each step needs (each Kind's needs, kinds.py): a verb missing there would pass preflight and stop the
# run half way (tests/e2e: every request logged at -v 6 is checked against it).


def rbac_text() -> str:
    """REQUIRED_ACCESS as docs/commands.md ("RBAC needed") prints it: one line per resource, its verbs in order."""
    from kubectl_csi_migrate.kube.client import RESOURCES

    verbs: dict[str, list[str]] = {}
    for verb, kind, sub in REQUIRED_ACCESS:
        prefix, plural, _ = RESOURCES[kind]
        group = "core" if prefix == "/api/v1" else prefix.split("/")[2]
        verbs.setdefault(f"{plural}{'/' + sub if sub else ''} ({group})", []).append(verb)
    return "\n".join(f"{resource}: {', '.join(v)}" for resource, v in verbs.items())


def failed(checks: list[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


def _version(info: Obj) -> tuple[int, int] | None:
    try:
        return int(info["major"]), int(re.sub(r"\D.*$", "", info["minor"]))
    except (KeyError, ValueError):
        return None


def check_version(kube: Kube) -> Check:
    info = kube.server_version()
    version = _version(info)
    text = info.get("gitVersion", "?")
    if version is None:
        return Check("kubernetes-version", WARN, f"cannot parse the server version {text}")
    if version < MIN_VERSION:
        return Check(
            "kubernetes-version", FAIL,
            f"{text}: vSphere CSI migration needs Kubernetes 1.26 or newer; upgrade the cluster first",
        )  # fmt: skip
    tested = [tuple(int(p) for p in v.split(".")[:2]) for v in TESTED_KUBERNETES]
    names = ", ".join(".".join(v.split(".")[:2]) for v in TESTED_KUBERNETES)
    if version not in tested:
        return Check(
            "kubernetes-version", WARN,
            f"{text}: this tool was not tested on this release (tested: Kubernetes {names})",
        )  # fmt: skip
    return Check("kubernetes-version", PASS, f"{text} (tested: Kubernetes {names})")


def check_owner(snap: Snapshot) -> Check:
    """The owner is settled: its pods Ready, no rollout in progress; a claim's pod is a bare pod."""
    return owner(snap.kind).settled(snap)


def check_volumes(snap: Snapshot, plan: Plan) -> list[Check]:
    checks: list[Check] = []
    for pvc_name in snap.missing_pvcs:
        checks.append(
            Check(
                "pvc",
                FAIL,
                f"persistentvolumeclaim/{pvc_name} does not exist; every replica must have its claims",
            )
        )
    for pvc_name, pvc in sorted(snap.pvcs.items()):
        phase = pvc.get("status", {}).get("phase")
        if phase != "Bound":
            checks.append(
                Check(
                    "pvc",
                    FAIL,
                    f"persistentvolumeclaim/{pvc_name} is {phase}, not Bound; fix it first",
                )
            )
            continue
        capacity = pvc.get("status", {}).get("capacity", {}).get("storage")
        request = pvc["spec"].get("resources", {}).get("requests", {}).get("storage")
        resizing = {c.get("type") for c in pvc.get("status", {}).get("conditions") or []} & {
            "Resizing",
            "FileSystemResizePending",
        }
        if resizing or (capacity and request and _quantity(request) > _quantity(capacity)):
            checks.append(
                Check(
                    "pvc",
                    FAIL,
                    f"persistentvolumeclaim/{pvc_name} has an expansion pending; let it finish",
                )
            )
    migrate = plan.to_migrate()
    for v in migrate:
        modes = set(snap.pvs.get(v.pv, {}).get("spec", {}).get("accessModes") or [])
        modes |= set(snap.pvcs.get(v.pvc, {}).get("spec", {}).get("accessModes") or [])
        shared = sorted(modes & translate.FILE_VOLUME_ACCESS_MODES)
        if shared:
            checks.append(
                Check(
                    "pvc",
                    FAIL,
                    f"persistentvolumeclaim/{v.pvc} (persistentvolume/{v.pv}) asks for {', '.join(shared)}: the "
                    "vSphere CSI driver serves such volumes as vSAN file shares, so its disk cannot become "
                    "one; a vSphere disk attaches to one node: fix the access modes to ReadWriteOnce first",
                )
            )
    skipped = [v for v in plan.volumes if v.action == SKIP_CSI]
    other = [v for v in plan.volumes if v.action not in (MIGRATE, SKIP_CSI)]
    failing = {m.split()[0].split("/", 1)[1] for m in (c.message for c in checks)}
    for v in other:
        if v.pvc in failing:
            continue  # already reported as a FAIL
        checks.append(
            Check(
                "pvc",
                WARN,
                f"persistentvolumeclaim/{v.pvc} is not an in-tree vSphere volume of the chosen class; left alone",
            )
        )
    if not any(c.status == FAIL for c in checks):
        msg = f"{len(migrate)} in-tree vSphere volumes to migrate"
        if skipped:
            msg += f", {len(skipped)} already on CSI (left alone)"
        checks.append(Check("volumes", PASS if migrate else WARN, msg if migrate else msg + ": nothing to do"))
    return checks


def _quantity(text: str) -> float:
    units = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "Pi": 2**50,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
    }
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text.strip())
    if not match:
        return 0.0
    return float(match.group(1)) * units.get(match.group(2), 1)


def recorded_fcds(kube: Kube) -> dict[str, set[str]]:
    """disk_key(in-tree path) -> the FCD ids the CSI driver's CnsVSphereVolumeMigration records
    give it (one, unless a stale record is left); listed once per command; none where the kind
    is missing or may not be listed."""
    if not kube.has_resource("CnsVSphereVolumeMigration"):
        return {}
    try:
        records = kube.items_once("CnsVSphereVolumeMigration")  # the backup keeps these
    except PermanentError:
        return {}  # not allowed to list them: the rbac check says so
    found: dict[str, set[str]] = {}
    for record in records:
        spec = record.get("spec", {})
        if spec.get("volumepath") and spec.get("volumeid"):
            found.setdefault(paths.disk_key(spec["volumepath"]), set()).add(str(spec["volumeid"]))
    return found


def check_disk_owners(kube: Kube, plan: Plan) -> list[Check]:
    """No other PV may name a disk to migrate, bound or not: by its in-tree path, or (as a CSI PV)
    by the FCD id the CSI driver recorded for that path. The run would otherwise find it only
    when creating the new PV, with the old PV and claim already deleted."""
    migrate = plan.to_migrate()
    if not migrate:
        return []
    ours = {v.pv for v in migrate}
    by_disk = {paths.disk_key(v.vmdk): v for v in migrate}
    fcd_of = {fcd: disk for disk, fcds in recorded_fcds(kube).items() if disk in by_disk for fcd in fcds}
    checks = []
    for pv in kube.cache("PersistentVolume").items():  # the run's own PV cache: listed once
        name = pv["metadata"]["name"]
        if name in ours:
            continue
        spec = pv.get("spec", {})
        path = (spec.get("vsphereVolume") or {}).get("volumePath")
        handle = (spec.get("csi") or {}).get("volumeHandle")
        disk = paths.disk_key(path) if path else fcd_of.get(handle or "")
        if disk in by_disk:
            v = by_disk[disk]
            how = f"first class disk {handle}" if not path else "its path"
            checks.append(
                Check(
                    "disk-owners",
                    FAIL,
                    f"persistentvolume/{name} also names {v.vmdk} (by {how}), the disk of "
                    f"persistentvolumeclaim/{v.pvc}; two PVs must never share a disk: remove or fix {name} first",
                )
            )
    return checks or [Check("disk-owners", PASS, "no other PersistentVolume names the disks to migrate")]


def check_storage_classes(kube: Kube, csi_class: str, intree_class: str | None) -> list[Check]:
    checks = []
    csi = kube.get_once("StorageClass", csi_class)
    if csi is None:
        checks.append(
            Check(
                "csi-storageclass",
                FAIL,
                f'storageclass "{csi_class}" not found; create it or name another with --csi-storageclass',
            )
        )
    elif csi.get("provisioner") != translate.CSI_DRIVER:
        checks.append(
            Check(
                "csi-storageclass",
                FAIL,
                f'storageclass "{csi_class}" has provisioner {csi.get("provisioner")}, not {translate.CSI_DRIVER}',
            )
        )
    else:
        checks.append(Check("csi-storageclass", PASS, f"storageclass/{csi_class} ({translate.CSI_DRIVER})"))
    if intree_class:
        old = kube.get("StorageClass", intree_class)
        if old is None:
            checks.append(
                Check(
                    "intree-storageclass",
                    FAIL,
                    f'storageclass "{intree_class}" not found; check --intree-storageclass',
                )
            )
        elif old.get("provisioner") != translate.INTREE_PROVISIONER:
            checks.append(
                Check(
                    "intree-storageclass",
                    FAIL,
                    f'storageclass "{intree_class}" has provisioner {old.get("provisioner")}, '
                    f"not {translate.INTREE_PROVISIONER}",
                )
            )
        else:
            checks.append(
                Check(
                    "intree-storageclass",
                    PASS,
                    f"storageclass/{intree_class} ({translate.INTREE_PROVISIONER})",
                )
            )
    return checks


def check_storage_policy(kube: Kube, snap: Snapshot, plan: Plan) -> list[Check]:
    """Registration keeps a disk's current SPBM policy: a CSI class naming another one does not
    move the disk, and later expansions and snapshots run under the policy the disk has."""
    csi = kube.get_once("StorageClass", plan.csi_class) or {}
    params = {k.lower(): v for k, v in (csi.get("parameters") or {}).items()}
    wanted = params.get(translate.STORAGE_POLICY_ATTRIBUTE, "")
    differ = [
        (v, translate.storage_policy_of(snap.pvs[v.pv]))
        for v in plan.to_migrate()
        if v.pv in snap.pvs and translate.storage_policy_of(snap.pvs[v.pv]) != wanted
    ]
    if not differ:
        return [] if not wanted else [Check("storage-policy", PASS, f"every disk has storage policy {wanted}")]
    disks = ", ".join(f"persistentvolume/{v.pv} ({policy or 'no policy'})" for v, policy in differ)
    return [
        Check(
            "storage-policy",
            WARN,
            f"storageclass/{plan.csi_class} names storage policy {wanted or '(none)'} but {disks}: the "
            "migration keeps each disk where it is with the policy it has; change a disk's policy in "
            "vCenter if it must follow the class",
        )
    ]


def check_csi_driver(kube: Kube, snap: Snapshot) -> list[Check]:
    if kube.get("CSIDriver", translate.CSI_DRIVER) is None:
        return [
            Check(
                "csi-driver",
                FAIL,
                f"CSIDriver {translate.CSI_DRIVER} not found: install the vSphere CSI driver first",
            )
        ]
    nodes = {n["metadata"]["name"] for n in kube.items_once("Node")}
    with_driver = {
        n["metadata"]["name"]
        for n in kube.items_once("CSINode")
        if any(d.get("name") == translate.CSI_DRIVER for d in n.get("spec", {}).get("drivers") or [])
    }
    missing = sorted(nodes - with_driver)
    used = {pod["spec"].get("nodeName") for pod in snap.pods.values()} - {None}
    if not with_driver:
        return [Check("csi-driver", FAIL, "no node runs the vSphere CSI node plugin (no CSINode lists it)")]
    if used & set(missing):
        return [
            Check(
                "csi-driver",
                FAIL,
                f"nodes running the StatefulSet lack the CSI node plugin: {', '.join(sorted(used & set(missing)))}",
            )
        ]
    if missing:
        return [
            Check(
                "csi-driver",
                WARN,
                f"nodes without the CSI node plugin (pods must not land there): {', '.join(missing)}",
            )
        ]
    return [
        Check(
            "csi-driver",
            PASS,
            f"CSIDriver {translate.CSI_DRIVER} registered on all {len(nodes)} nodes",
        )
    ]


def check_csi_controller(kube: Kube) -> Check:
    """The driver's controller is running: the Leases its syncer and attacher renew, judged by the
    API server's clock (the Date of the answer), both of them clocks in the cluster."""
    found = driver_leases(kube)
    if not found:
        return Check(
            "csi-controller",
            WARN,
            "cannot tell whether the vSphere CSI controller runs (no leader-election Lease "
            f"{DRIVER_LEASES[0][0]} readable in {', '.join(DRIVER_NAMESPACES)}): check that its pods are "
            "Running before you migrate",
        )
    stale = []
    for namespace, name, what, spec, date in found:
        age = lease_age(spec.get("renewTime") or "", date)
        duration = int(spec.get("leaseDurationSeconds") or 15)
        if age is not None and age > duration:
            stale.append(
                f"{what} has not renewed lease {namespace}/{name} for {age:.0f}s (its duration is {duration}s)"
            )
    if stale:
        return Check(
            "csi-controller",
            FAIL,
            f"{'; '.join(stale)}: the vSphere CSI controller is not running or cannot reach the API "
            "server, and the run would stop with a disk deleted and waiting for the driver. Fix the "
            f"driver first (kubectl -n {found[0][0]} get pods; kubectl -n {found[0][0]} logs "
            "deploy/vsphere-csi-controller -c vsphere-syncer)",
        )
    names = ", ".join(f"{ns}/{name}" for ns, name, *_ in found)
    return Check("csi-controller", PASS, f"the CSI driver's controller renews its leases ({names})")


# Labels and annotations by which GitOps tools and Helm mark what they manage.
_MANAGERS: tuple[tuple[str, str, str], ...] = (
    ("label", "argocd.argoproj.io/instance", "Argo CD application {}"),
    ("annotation", "argocd.argoproj.io/tracking-id", "Argo CD (tracking id {})"),
    ("label", "kustomize.toolkit.fluxcd.io/name", "Flux Kustomization {}"),
    ("label", "helm.toolkit.fluxcd.io/name", "Flux HelmRelease {}"),
    ("annotation", "meta.helm.sh/release-name", "Helm release {}"),
    ("label", "app.kubernetes.io/managed-by", "{} (app.kubernetes.io/managed-by)"),
)


def check_managers(snap: Snapshot, csi_class: str) -> Check:
    """Something that would put the StatefulSet back with its in-tree templates while the run
    has it deleted (or right after), or scale a Deployment back up: an owner, a GitOps tool, a
    Helm release."""
    meta = snap.owner["metadata"]
    found = [f"{ref.get('kind')}/{ref.get('name')} (owner)" for ref in meta.get("ownerReferences") or []]
    for where, key, text in _MANAGERS:
        value = (meta.get("labels" if where == "label" else "annotations") or {}).get(key)
        said = " ".join(found).lower()
        if value and not (key == "app.kubernetes.io/managed-by" and value.lower() in said):
            found.append(text.format(value))
    return owner(snap.kind).managed(snap, found, csi_class)


def check_other_users(kube: Kube, snap: Snapshot) -> Check:
    claims = set(snap.pvcs)
    users = []
    for pod in kube.items_once("Pod", snap.namespace):
        name = pod["metadata"]["name"]
        if name in snap.pods:
            continue
        for vol in pod["spec"].get("volumes") or []:
            claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            if claim in claims:
                users.append(f"pod/{name} ({claim})")
    if users:
        return Check(
            "pvc-users",
            FAIL,
            f"claims mounted outside the {snap.kind}: {', '.join(users)}; stop those pods first",
        )
    return Check("pvc-users", PASS, f"no pod outside the {snap.kind} mounts its claims")


def check_disruption_budget(kube: Kube, snap: Snapshot, strategy: str) -> Check:
    """Each pod the run evicts judged with its live labels (a budget on
    `statefulset.kubernetes.io/pod-name`, `controller-revision-hash` or
    `apps.kubernetes.io/pod-index` covers one pod), by budget.covering, as the run judges them:
    `selector: {}` covers every pod of the namespace."""
    down = owner(snap.kind).downtime(snap, strategy)
    if down is not None:
        return down
    listed = kube.items("PodDisruptionBudget", snap.namespace)
    pods = {name: pod["metadata"].get("labels") or {} for name, pod in sorted(snap.pods.items())}
    if not pods:  # no pod now (preflight says so elsewhere): as its template labels them
        pods = {snap.name: snap.owner["spec"]["template"]["metadata"].get("labels") or {}}
    covered = {name: budget.covering(listed, labels) for name, labels in pods.items()}
    shared: dict[tuple[str, ...], list[str]] = {}
    for name, found in covered.items():
        if len(found) > 1:
            shared.setdefault(tuple(b["metadata"]["name"] for b in found), []).append(name)
    if shared:
        # The Eviction API answers 500 "This pod has more than one PodDisruptionBudget, which the
        # eviction subresource does not support" for every such pod: the run could not evict
        # one, and would find out with the StatefulSet already deleted.
        empty = {b["metadata"]["name"] for b in listed if (b.get("spec") or {}).get("selector") == {}}
        said = []
        for names, which in shared.items():
            text = ", ".join(
                f"poddisruptionbudget/{n}" + (" (selector {}: every pod of the namespace)" if n in empty else "")
                for n in names
            )
            who = f"pod/{which[0]} is" if len(which) == 1 else f"pod/{', pod/'.join(which)} are each"
            said.append(f"{who} selected by {len(names)} PodDisruptionBudgets ({text})")
        return Check(
            "disruption",
            FAIL,
            f"{'; '.join(said)}; the Eviction API refuses to evict a pod with more than one: keep one budget "
            "for each pod",
        )
    if snap.kind == CLAIM:
        return Check(
            "disruption",
            WARN,
            f"pod/{next(iter(snap.pods))} is down while its claim moves (a bare pod: nothing else serves it)",
        )
    if snap.replicas == 1:
        return Check(
            "disruption",
            WARN,
            "a single replica: its pod is down while its volumes move (downtime)",
        )
    budgets = {b["metadata"]["name"]: b for found in covered.values() for b in found}
    allowing = []
    for name, pdb in sorted(budgets.items()):
        allowed = pdb.get("status", {}).get("disruptionsAllowed", 0)
        if allowed < 1:
            which = [pod for pod, found in covered.items() if name in {b["metadata"]["name"] for b in found}]
            whom = f"pod/{which[0]}" if len(which) == 1 else f"{len(which)} of the pods"
            return Check(
                "disruption",
                FAIL,
                f"poddisruptionbudget/{name} (covering {whom}) allows no disruption now; the migration could not "
                "evict a pod",
            )
        allowing.append(f"poddisruptionbudget/{name} allows {allowed} pod(s) down")
    if allowing:
        return Check("disruption", PASS, "; ".join(allowing))
    return Check("disruption", PASS, "no PodDisruptionBudget; one pod at a time will be evicted")


def check_rbac(kube: Kube, namespace: str, required: tuple[Access, ...]) -> Check:
    """Every entry of `required` (kinds.access_for the owner's kind), from two
    SelfSubjectRulesReviews: the namespace's rules, and the cluster-wide ones (asked for a
    namespace that cannot exist, where no RoleBinding applies: a RoleBinding never grants
    cluster-scoped resources such as PVs). An access no rule grants is asked about on its own
    (SelfSubjectAccessReview): another authorizer may allow it."""
    import uuid

    from kubectl_csi_migrate.kube.client import RESOURCES

    local = kube.rules(namespace)
    cluster = kube.rules(f"csi-migrate-rules-{uuid.uuid4().hex[:12]}")
    missing = []
    for verb, kind, sub in required:
        namespaced = RESOURCES[kind][2]
        if kube.allows(local if namespaced else cluster, verb, kind, sub):
            continue
        if not kube.can_i(verb, kind, namespace if namespaced else None, sub):
            missing.append(f"{verb} {RESOURCES[kind][1]}{f'/{sub}' if sub else ''}")
    if missing:
        return Check("rbac", FAIL, f"you lack permission to: {', '.join(missing)}")
    return Check("rbac", PASS, f"allowed every verb the migration needs ({len(required)} checked)")


def check_vcenter(
    connect: Callable[[], Any], plan: Plan, datacenter: str | None, recorded: dict[str, set[str]] | None = None
) -> tuple[list[Check], Plan]:
    """Each disk found in vCenter; the plan returned records the datacenter each was found in,
    which the run then uses (so the run looks where preflight looked). A disk's FCD id is named
    from `recorded` (the CSI driver's records, by disk_key), not searched for: vCenter has no
    lookup by path, and a search reads every FCD of the datastore."""
    try:
        vc = connect()
    except CsiMigrateError as exc:
        return [Check("vcenter", FAIL, str(exc))], plan
    checks = [Check("vcenter", PASS, f"connected: {vc.about()}")]
    found: dict[str, str] = {}
    for v in plan.to_migrate():
        try:
            dc = vc.datacenter_of(v.vmdk, datacenter)
            if not vc.disk_exists(v.vmdk, dc):
                checks.append(Check("disk", FAIL, f"{v.vmdk} (pv {v.pv}) not found in vCenter"))
                continue
            fcd = ", ".join(sorted((recorded or {}).get(paths.disk_key(v.vmdk), ())))
        except CsiMigrateError as exc:
            checks.append(Check("disk", FAIL, f"{v.vmdk}: {exc}"))
            continue
        found[v.vmdk] = dc
        note = (
            f"already first class disk {fcd} (recorded by the CSI driver)"
            if fcd
            else "to be registered as a first class disk (or found registered)"
        )
        checks.append(Check("disk", PASS, f"{v.vmdk}: found in datacenter {dc}, {note}"))
    checks += check_vcenter_privileges(vc, plan, found)
    return checks, plan.with_datacenters(found)


def check_vcenter_privileges(vc: VCenter, plan: Plan, found: dict[str, str]) -> list[Check]:
    """The run registers each disk and sets its keepAfterDeleteVm flag: both need privileges on
    the disk's datastore, asked of vCenter once per datastore before anything changes."""
    checks: list[Check] = []
    seen: set[str] = set()
    for v in plan.to_migrate():
        datastore = v.vmdk.partition("]")[0].lstrip("[")
        if v.vmdk not in found or datastore in seen:
            continue
        seen.add(datastore)
        try:
            missing = vc.missing_privileges(v.vmdk, found[v.vmdk])
        except CsiMigrateError as exc:
            checks.append(Check("vcenter-privileges", FAIL, f"datastore {datastore}: {exc}"))
            continue
        if missing:
            checks.append(
                Check(
                    "vcenter-privileges",
                    FAIL,
                    f"vCenter user {vc.config.user} lacks {', '.join(missing)} on datastore {datastore}: the run "
                    "needs it to register the disks as First Class Disks and protect them from VM deletion "
                    "(the vSphere CSI driver's CNS-DATASTORE role has it); grant it first",
                )
            )
        else:
            checks.append(Check("vcenter-privileges", PASS, f"datastore {datastore}: First Class Disk privileges held"))
    return checks


def check_workdir(workdir: WorkDir, plan: Plan) -> Check:
    problem = workdir.problem(plan.owner)
    if problem:
        return Check("working-directory", FAIL, problem)
    state = "resumes the unfinished run" if workdir.has_run() else "usable"
    return Check("working-directory", PASS, f"{workdir.path}: {state}")


def run_checks(
    kube: Kube,
    snap: Snapshot,
    plan: Plan,
    connect_vcenter: Callable[[], Any],
    workdir: WorkDir | None,
    intree_class: str | None,
    datacenter: str | None,
) -> tuple[list[Check], Plan]:
    """Every check for one owner, and the plan completed with what they found (each disk's
    datacenter). Reads only."""
    checks = [check_version(kube), check_owner(snap)]
    checks += check_volumes(snap, plan)
    checks += check_disk_owners(kube, plan)
    checks += check_storage_classes(kube, plan.csi_class, intree_class)
    checks += check_storage_policy(kube, snap, plan)
    checks += check_csi_driver(kube, snap)
    checks.append(check_csi_controller(kube))
    checks.append(check_other_users(kube, snap))
    checks.append(check_managers(snap, plan.csi_class))
    checks.append(check_disruption_budget(kube, snap, plan.strategy))
    checks.append(check_rbac(kube, snap.namespace, access_for(snap.kind)))
    if plan.to_migrate():
        found, plan = check_vcenter(connect_vcenter, plan, datacenter, recorded_fcds(kube))
        checks += found
    if workdir is not None:
        checks.append(check_workdir(workdir, plan))
    return checks, plan


def survey_row(snap: Snapshot, plan: Plan) -> Obj:
    """One line of the namespace survey: an owner, whether it can be migrated, and how."""
    migrate = len(plan.to_migrate())
    csi = sum(1 for v in plan.volumes if v.action == SKIP_CSI)
    problems = [c.message for c in check_volumes(snap, plan) if c.status == FAIL]
    settled = check_owner(snap)
    if settled.status == FAIL:
        problems.insert(0, settled.message)
    return {
        "kind": snap.kind,
        "namespace": snap.namespace,
        "name": snap.name,
        "command": f"kubectl csi-migrate {owner(snap.kind).kind.command} {snap.name} -n {snap.namespace}",
        "replicas": snap.replicas,
        "inTreeVolumes": migrate,
        "csiVolumes": csi,
        "migratable": migrate > 0 and not problems,
        "problems": problems,
    }
