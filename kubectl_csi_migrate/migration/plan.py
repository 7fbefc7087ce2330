"""The plan: what a migration of one owner will do, as values. The kinds of owner and how each
is named (`OwnerKind`), the strategies, a `Plan` and each claim's `VolumePlan`, the `Snapshot` of
an owner's live objects, and the names a run takes in the cluster (its key, its Lease's and
record's names). What each kind of owner does (gathers, checks, which steps stop and start it)
and how a snapshot becomes a plan: owners.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum

from kubectl_csi_migrate.kube.resources import Obj

MIGRATE = "migrate"
SKIP_CSI = "skip (already CSI)"
SKIP_OTHER = "skip (not vSphere)"


class OwnerKind(StrEnum):
    """The kinds of owner a run migrates the volumes of (their API kinds), and how each is named:
    its command, the word messages use, kubectl's reference, the run's key. What each does (how
    its objects are gathered and checked, which steps stop and start it) is its `Owner`
    (owners.py)."""

    STATEFULSET = "StatefulSet"
    DEPLOYMENT = "Deployment"
    REPLICASET = "ReplicaSet"
    CLAIM = "PersistentVolumeClaim"
    """A claim on its own (`pvc`), with the bare pod mounting it if any."""

    @property
    def command(self) -> str:
        """The command that migrates this kind of owner: `sts`, `deploy` (a ReplicaSet too), `pvc`."""
        return _NAMES[self][0]

    @property
    def word(self) -> str:
        """How messages name the kind: `statefulset`, `deployment`, `replicaset`, `pvc`."""
        return _NAMES[self][1]

    @property
    def resource(self) -> str:
        """The resource as kubectl names it: `statefulset.apps`, `pvc`."""
        return _NAMES[self][2]

    @property
    def plural(self) -> str:
        """The resource as the API server's NotFound names it: `statefulsets.apps`."""
        return _NAMES[self][3]

    @property
    def short(self) -> str:
        """The kind as `status` and `rollback` take it before `/NAME`: `sts`, `deploy`, `rs`, `pvc`."""
        return _NAMES[self][4]

    @property
    def spellings(self) -> tuple[str, ...]:
        """Every way kubectl spells the kind before `/NAME`."""
        return _NAMES[self][5]

    @property
    def chooses_strategy(self) -> bool:
        """Whether a run of this kind takes `--strategy` (a StatefulSet's: rolling or offline;
        the others' is fixed by what they are)."""
        return self is OwnerKind.STATEFULSET

    @property
    def bare_name(self) -> bool:
        """Whether the owner is named by its bare NAME (a StatefulSet: `sts web`, `status web`)."""
        return self is OwnerKind.STATEFULSET

    def key(self, name: str) -> str:
        """The run's key, which names it in the cluster and on disk (its Lease and its record
        `csi-migrate-<key>`, its working directory `csi-migrate-<context>-<namespace>-<key>`):
        `<word>-<name>` for every kind (`statefulset-web`, `deployment-web`, `replicaset-web`,
        `pvc-web`). No kind's word followed by `-` begins another's, so two owners never share a
        key, whatever `-` and `.` their names hold."""
        return f"{self.word}-{name}"

    def legacy_key(self, name: str) -> str | None:
        """The key an earlier release gave the run, where it differs: a StatefulSet's bare name.
        That key may be another owner's (StatefulSet `deployment-web`'s is Deployment `web`'s,
        and StatefulSet `statefulset-web`'s is StatefulSet `web`'s): what is found under it is
        this owner's run only when the plan it stores names this kind and name."""
        return name if self.bare_name else None

    def ref(self, name: str) -> str:
        """kubectl's name for the owner: `statefulset.apps/web`, `pvc/data`."""
        return f"{self.resource}/{name}"

    def arg(self, name: str) -> str:
        """The owner as `status` and `rollback` take it: `web` (a StatefulSet), `deploy/api`, `pvc/data`."""
        return name if self.bare_name else f"{self.short}/{name}"

    def not_found(self, namespace: str, name: str) -> str:
        """The API server's words for a missing owner."""
        return f'{self.plural} "{name}" not found in namespace "{namespace}"'


_NAMES: dict[str, tuple[str, str, str, str, str, tuple[str, ...]]] = {
    # command, word, resource, plural, short, spellings
    "StatefulSet": (
        "sts", "statefulset", "statefulset.apps", "statefulsets.apps", "sts",
        ("sts", "statefulset", "statefulsets", "statefulset.apps"),
    ),
    "Deployment": (
        "deploy", "deployment", "deployment.apps", "deployments.apps", "deploy",
        ("deploy", "deployment", "deployments", "deployment.apps"),
    ),
    "ReplicaSet": (
        "deploy", "replicaset", "replicaset.apps", "replicasets.apps", "rs",
        ("rs", "replicaset", "replicasets", "replicaset.apps"),
    ),
    "PersistentVolumeClaim": (
        "pvc", "pvc", "pvc", "persistentvolumeclaims", "pvc",
        ("pvc", "persistentvolumeclaim", "persistentvolumeclaims"),
    ),
}  # fmt: skip


class Strategy(StrEnum):
    ROLLING = "rolling"
    """One replica at a time, no downtime (a StatefulSet's)."""
    OFFLINE = "offline"
    """The owner scaled to zero, its volumes moved side by side."""


STATEFULSET, DEPLOYMENT, REPLICASET, CLAIM = (
    OwnerKind.STATEFULSET,
    OwnerKind.DEPLOYMENT,
    OwnerKind.REPLICASET,
    OwnerKind.CLAIM,
)


def run_key(kind: str, name: str) -> str:
    """OwnerKind.key, for a kind as text (a stored plan's)."""
    return OwnerKind(kind).key(name)


def legacy_key(kind: str, name: str) -> str | None:
    """OwnerKind.legacy_key, for a kind as text."""
    return OwnerKind(kind).legacy_key(name)


def fit_name(name: str, limit: int) -> str:
    """`name`, or when longer than `limit`, its start and a hash of the whole (two long names
    that share their start still differ), ending in a letter or digit, as names must."""
    if len(name) <= limit:
        return name
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: limit - len(digest) - 1].rstrip('.-_')}-{digest}"


def object_name(key: str) -> str:
    """The name of the run `key`'s Lease and record (ConfigMap) in the owner's namespace:
    `csi-migrate-<key>`, a DNS subdomain of at most 253 characters."""
    return fit_name(f"csi-migrate-{key}", 253)


def label_value(key: str) -> str:
    """The run `key` as a label value (at most 63 characters)."""
    return fit_name(key, 63)


def owner_id(plan: Obj) -> tuple[str, str, str, str]:
    """(server, namespace, kind, name) of the owner a stored plan (run.json's, a record's) is a
    run of; an earlier release's plan of a StatefulSet names it in `statefulset`."""
    name = plan.get("name") or plan.get("statefulset") or ""
    return (plan.get("server", ""), plan.get("namespace", ""), plan.get("kind") or STATEFULSET, name)


def word(kind: str) -> str:
    """OwnerKind.word, for a kind as text."""
    return OwnerKind(kind).word


def ref(kind: str, name: str) -> str:
    """OwnerKind.ref, for a kind as text."""
    return OwnerKind(kind).ref(name)


def parse_ref(text: str) -> tuple[OwnerKind, str]:
    """`NAME` (a StatefulSet) or `KIND/NAME` (sts, deploy, rs, pvc, as kubectl spells them)."""
    from kubectl_csi_migrate.errors import UsageError

    if "/" not in text:
        return STATEFULSET, text
    spelled, _, name = text.partition("/")
    for kind in OwnerKind:
        if spelled.lower() in kind.spellings and name:
            return kind, name
    raise UsageError(f"{text!r}: expected NAME (a StatefulSet), sts/NAME, deploy/NAME, rs/NAME or pvc/NAME")


@dataclass(frozen=True)
class VolumePlan:
    """One PVC of one replica."""

    template: str
    """The volumeClaimTemplate it comes from (a StatefulSet's; else the pod's volume name)."""
    ordinal: int
    """The replica (pod `<sts>-<ordinal>`); 0 for the other owners."""
    pvc: str
    """PVC name (`<template>-<sts>-<ordinal>` for a StatefulSet); unchanged by the migration."""
    pv: str
    """PV name; the CSI PV gets the same name."""
    action: str
    """MIGRATE, SKIP_CSI or SKIP_OTHER."""
    vmdk: str = ""
    """In-tree `[datastore] path.vmdk`; the disk the CSI PV will point at."""
    fcd_id: str = ""
    """The First Class Disk id when known before the run (already CSI, or already an FCD)."""
    reclaim_policy: str = "Delete"
    """The PV's original reclaim policy, restored at the end."""
    capacity: str = ""
    storage_class: str = ""
    """The PVC's class before the migration."""
    datacenter: str = ""
    """The vCenter datacenter holding the disk, as preflight found it; the run registers the
    disk there (not in the configuration's first datacenter)."""


@dataclass(frozen=True)
class Plan:
    """A whole migration of one owner."""

    context: str
    server: str
    namespace: str
    name: str
    """The owner's name (a StatefulSet, Deployment, ReplicaSet, or the claim)."""
    uid: str
    """The owner's uid when planned: a resumed run checks it is the same one."""
    replicas: int
    """The owner's replica count, given back at the end (a claim: 1 when a pod mounts it)."""
    strategy: Strategy
    """"rolling" (one replica at a time, no downtime) or "offline" (scale to zero). A Deployment
    is always offline (its pods share the claims); a claim's pod is stopped while it moves."""
    csi_class: str
    migrate_templates: tuple[str, ...]
    volumes: tuple[VolumePlan, ...] = field(default_factory=tuple)
    topology_keys: tuple[str, ...] = ()
    """The zone/region keys the CSI driver reports (CSINode); the new PVs' node affinity uses them."""
    kind: OwnerKind = STATEFULSET
    pod: str = ""
    """A claim's: the bare pod mounting it, stopped while it moves and created again after."""
    key: str = ""
    """The run's key (`run_key`: its Lease, its record, its default working directory), fixed
    when the run starts: a run of an earlier release keeps the key it had (`legacy_key`: a
    plan stored without one is such a run)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", OwnerKind(self.kind))  # as read back from a record: a str
        object.__setattr__(self, "strategy", Strategy(self.strategy))
        if not self.key:
            object.__setattr__(self, "key", run_key(self.kind, self.name))

    @property
    def owner(self) -> tuple[str, str, str, str]:
        """(server, namespace, kind, name): the owner this is a run of, as a run found under a
        key (a Lease, a record, a working directory) is checked to be the one asked about."""
        return (self.server, self.namespace, self.kind, self.name)

    @property
    def ref(self) -> str:
        return self.kind.ref(self.name)

    @property
    def command(self) -> str:
        """How this run is started again: `sts web`, `deploy api`, `pvc data`."""
        return f"{self.kind.command} {self.name}"

    @property
    def arg(self) -> str:
        """The owner as `status` and `rollback` take it: `web` (a StatefulSet), `deploy/api`, `pvc/data`."""
        return self.kind.arg(self.name)

    @property
    def what(self) -> str:
        """The owner in a sentence: `statefulset ns/web`."""
        return f"{self.kind.word} {self.namespace}/{self.name}"

    def with_datacenters(self, found: dict[str, str]) -> Plan:
        """This plan with each disk's datacenter (by VMDK path) recorded."""
        volumes = tuple(replace(v, datacenter=found.get(v.vmdk, v.datacenter)) for v in self.volumes)
        return replace(self, volumes=volumes)

    def to_migrate(self, ordinal: int | None = None) -> list[VolumePlan]:
        return [v for v in self.volumes if v.action == MIGRATE and (ordinal is None or v.ordinal == ordinal)]

    def ordinals_descending(self) -> list[int]:
        return sorted({v.ordinal for v in self.to_migrate()}, reverse=True)

    def pod_name(self, ordinal: int) -> str:
        return self.pod if self.kind == CLAIM else f"{self.name}-{ordinal}"

    def to_dict(self) -> Obj:
        data = asdict(self)
        data["kind"], data["strategy"] = self.kind.value, self.strategy.value  # plain text on disk
        if self.kind == STATEFULSET:
            data["statefulset"] = self.name  # as the first releases wrote it
        return data

    @classmethod
    def from_dict(cls, data: Obj) -> Plan:
        volumes = tuple(VolumePlan(**v) for v in data.get("volumes", []))
        fields = {k: v for k, v in data.items() if k not in ("volumes", "statefulset")}
        fields.setdefault("name", data.get("statefulset", ""))
        if not fields.get("key"):  # an earlier release's run: the key it was started under
            kind = fields.get("kind", STATEFULSET)
            fields["key"] = legacy_key(kind, fields["name"]) or run_key(kind, fields["name"])
        fields["migrate_templates"] = tuple(fields.get("migrate_templates", ()))
        fields["topology_keys"] = tuple(fields.get("topology_keys", ()))
        return cls(**fields, volumes=volumes)


@dataclass
class Snapshot:
    """The live objects of one owner, read once."""

    namespace: str
    name: str
    owner: Obj
    """The StatefulSet, Deployment or ReplicaSet; for a claim, the claim itself."""
    pods: dict[str, Obj]
    """The pods that stop while the claims move (a StatefulSet's by ordinal, a Deployment's by
    its selector, the bare pod mounting a claim)."""
    pvcs: dict[str, Obj]
    pvs: dict[str, Obj]
    missing_pvcs: list[str]
    kind: str = STATEFULSET

    @property
    def replicas(self) -> int:
        if self.kind == CLAIM:
            return len(self.pods)
        return int(self.owner["spec"].get("replicas", 1))

    def templates(self) -> list[Obj]:
        if self.kind != STATEFULSET:
            return []
        return list(self.owner["spec"].get("volumeClaimTemplates") or [])


def claims_of_template(template: Obj) -> list[tuple[str, str]]:
    """(volume name, claim name) of each claim a pod template (or pod) mounts."""
    found = []
    for volume in (template.get("spec") or {}).get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim:
            found.append((volume["name"], claim))
    return found


def controller_of(obj: Obj) -> Obj | None:
    return next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
