"""The run's record kept in the cluster: ConfigMap `csi-migrate-<key>` (Plan.key:
`csi-migrate-statefulset-web`, `csi-migrate-deployment-api`, `csi-migrate-pvc-data`; an earlier
release's run of a StatefulSet keeps its `csi-migrate-<name>`) in the owner's namespace, written
once the backup is done (before anything is deleted) and updated as steps
finish, so that a lost working directory (an ephemeral CI runner, a deleted folder) does not lose
which disk belonged to which claim: `sts`, `rollback` and `status` rebuild the directory from it.

Why a ConfigMap, not annotations on the objects: the objects it describes are deleted during the
run (an annotation goes with its PV), and one object is one read for `status`. It holds the plan,
the per-volume map (claim, old PV, VMDK, FCD id once known), the steps done and the backups of
the StatefulSet, pods, claims and PVs (gzip, without managedFields): objects anyone who may read
the namespace's ConfigMaps may read as such. It holds no Secret and no credential.

The record keeps "done" and "undone" events only, written after some kinds of step
(`Kind.recorded_after`): it lags the working directory by the steps since, and a rollback from it
also undoes those (kinds.may_have_run), which is safe because undoing a step that never started
finds nothing to undo. A rollback's "undone" events are kept as they happen: a rollback stopped
part-way and started again from the record alone carries on where it stopped, the steps that
may have run included.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import threading

from kubectl_csi_migrate.errors import ConflictError, NotFoundError, OutOfDate
from kubectl_csi_migrate.kube.client import Kube
from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration.plan import Plan, label_value, object_name, owner_id
from kubectl_csi_migrate.migration.runrecord import END_FLAGS, Run, RunRecord, Store, check_format
from kubectl_csi_migrate.migration.steps import fcd_of
from kubectl_csi_migrate.migration.workdir import WorkDir, dump_all_yaml, dump_yaml, load_all_yaml, load_yaml

LABEL = "csi-migrate.kubectl.io/record"


def name_of(key: str) -> str:
    """The record of the run `key` (Plan.key: `statefulset-web`, `deployment-api`...)."""
    return object_name(key)


def owner_of(found: RunRecord) -> tuple[str, str, str, str]:
    """(server, namespace, kind, name): whose run a record (as `read` returns it) is."""
    return found.run.owner


class ClusterRecord:
    """The record of one run in the cluster: one of the run's two stores (runrecord.Store), the
    working directory the other. A run writes it from its folder as steps finish (`save`)."""

    def __init__(self, kube: Kube, plan: Plan) -> None:
        self.kube = kube
        self.plan = plan
        self.name = name_of(plan.key)
        self._signature = ""
        self._packed = ""
        self._lock = threading.Lock()  # volumes moved at once (offline) save from several threads
        self._exists: bool | None = None

    def load_record(self) -> RunRecord | None:
        """The record as it is in the cluster now (a GET)."""
        return read(self.kube, self.plan.namespace, self.plan.key, again=True)

    def save_record(self, record: RunRecord) -> None:
        """Write the record from `record` (its backups packed again)."""
        with self._lock:
            self._packed = _pack(record.backups)
            body = self._body(record.run.to_dict(), kept_steps(record.steps))
            body["binaryData"] = {"backups.yaml.gz": self._packed}
            self._write(body)
            self._signature = ""  # the next `save` packs the folder's backups again

    def save(self, workdir: WorkDir) -> None:
        """Write the record as the working directory has it now (the backups only when they
        changed since the last write)."""
        with self._lock:
            self._save(workdir)

    def _body(self, run: Obj, steps: dict[str, Obj]) -> Obj:
        volumes = [
            {"claim": v.pvc, "oldPV": v.pv, "vmdk": v.vmdk, "fcdId": fcd_of(steps, v.pv)}
            for v in self.plan.to_migrate()
        ]
        data = {
            "run.json": json.dumps(run, indent=1),
            "steps.json": json.dumps(steps, indent=1),
            "volumes.yaml": dump_yaml(volumes),
        }
        return {"data": data}

    def _save(self, workdir: WorkDir) -> None:
        run = Run.from_dict(workdir.load_run(), str(workdir.run_file)).to_dict()
        body = self._body(run, kept_steps(workdir.steps()))
        # The backups change at the backup step and when a resume backs up a changed StatefulSet:
        # read and packed again only when this process wrote one or a file of theirs changed.
        files = sorted(workdir.backup_dir.glob("*/*.yaml"))
        signature = hashlib.sha256(
            repr(
                [workdir.backups_written]
                + [(str(f), f.stat().st_ino, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
            ).encode()
        ).hexdigest()
        if signature != self._signature:
            self._packed = _pack([load_yaml(f.read_text()) for f in files])
            body["binaryData"] = {"backups.yaml.gz": self._packed}
        self._write(body)
        self._signature = signature

    def _write(self, body: Obj) -> None:
        ns = self.plan.namespace
        if self._exists is None:  # as the command found it at its start (`read`), without a request
            self._exists = self.kube.get_once("ConfigMap", self.name, ns) is not None
        try:
            if self._exists:
                self.kube.patch("ConfigMap", self.name, body, ns)
            else:
                self._create(body)
        except NotFoundError:
            self._create(body)
        except ConflictError:  # made since the command looked
            self.kube.patch("ConfigMap", self.name, body, ns)
        self._exists = True

    def _create(self, body: Obj) -> None:
        body["binaryData"] = {"backups.yaml.gz": self._packed}
        labels = {LABEL: label_value(self.plan.key)}
        meta = {"name": self.name, "namespace": self.plan.namespace, "labels": labels}
        self.kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, **body})


def _pack(backups: list[Obj]) -> str:
    """The backups as one YAML stream without managedFields, gzip'd, in base64 (`parse` reads it)."""
    docs = []
    for obj in backups:
        obj = dict(obj)
        obj["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
        docs.append(obj)
    return base64.b64encode(gzip.compress(dump_all_yaml(docs).encode(), mtime=0)).decode()


def kept_steps(steps: dict[str, Obj]) -> dict[str, Obj]:
    """What the record keeps of the working directory's steps (WorkDir.steps): the steps done
    and those undone, each with what it recorded; not the steps started or being undone. What
    it lacks, a rollback from it undoes all the same (kinds.may_have_run)."""
    return {
        step: {k: v for k, v in entry.items() if k not in ("step", "time")}
        for step, entry in steps.items()
        if entry.get("event") in ("done", "undone")
    }


def read(kube: Kube, namespace: str, key: str, again: bool = False) -> RunRecord | None:
    """The record of the last run `key` (Plan.key), or None when there is none (or its ConfigMap
    holds no run: written over, as before); read at a command's start only, unless `again` (once
    its Lease is held)."""
    get = kube.get if again else kube.get_once
    cm = get("ConfigMap", name_of(key), namespace)
    return None if cm is None else parse(cm)


def parse(cm: Obj) -> RunRecord | None:
    """A record's ConfigMap as `read` returns it (RecordTooNew when a later release wrote it)."""
    data = cm.get("data") or {}
    run = json.loads(data.get("run.json") or "{}")
    where = f"configmap/{(cm.get('metadata') or {}).get('name', '?')}"
    check_format(run, where)  # first: a later format may keep its plan elsewhere
    if not run.get("plan"):
        return None
    packed = (cm.get("binaryData") or {}).get("backups.yaml.gz", "")
    backups = load_all_yaml(gzip.decompress(base64.b64decode(packed))) if packed else []
    return RunRecord(Run.from_dict(run, where), json.loads(data.get("steps.json") or "{}"), backups)


def unfinished(kube: Kube, namespace: str | None) -> list[tuple[str, str, str, str]]:
    """The owners (server, namespace, kind, name) of the runs recorded in a namespace (None: every
    one) that neither finished nor were rolled back: `--all` and `all` resume them, whatever the
    live objects show now (a Deployment whose claim the run deleted has no in-tree claim left to
    find). Read from run.json alone; a record of a later format is taken too: that owner's own
    command then refuses it (RecordTooNew), one owner among the others."""
    owners = []
    for cm in kube.items("ConfigMap", namespace, label_selector=LABEL):
        run = json.loads((cm.get("data") or {}).get("run.json") or "{}")
        if run.get("plan") and not any(run.get(k) for k in END_FLAGS):
            owners.append(owner_id(run["plan"]))
    return owners


def rebuild(workdir: Store, record: RunRecord) -> None:
    """Write the working directory (or any store of a run) again from the record (run.json, the
    steps done, backups)."""
    workdir.save_record(record)


EVENTS = (None, "start", "done", "undo-start", "undone")
"""A step's events in the order they happen: of two, the later one is the newer."""


def ahead(workdir: WorkDir, found: RunRecord, name: str) -> tuple[list[tuple[str, Obj]], dict[str, bool]]:
    """What the record in the cluster (`found`, read from configmap `name`) holds of the run in
    the working directory that the folder lacks: (step, its entry) for each step the record has
    further on (done, or undone), and the end flags (finished, rolling back, rolled back) it
    has and the folder has not. Both empty when the folder is up to date, as it is unless a
    command elsewhere (another machine, a rebuilt folder) carried the same run on.

    Raises OutOfDate when the record is of a later run of the owner than the folder's: the folder's
    run ended (rolled back, or given up) and another began, which only that run's folder or the
    record may act on. A rollback or a resume from the older folder would undo or redo its steps
    over the later run's objects and write its record over the later one's."""
    mine = Run.from_dict(workdir.load_run(), str(workdir.run_file))
    theirs = found.run
    if theirs.run_id != mine.run_id:
        if theirs.started > mine.started:
            raise OutOfDate(
                f"{workdir.path} holds run {mine.run_id[:8] or '?'} of this {theirs.plan.kind}, "
                f"but configmap/{name} records a later run ({theirs.run_id[:8] or '?'}, "
                f"{theirs.state}) that this folder never saw: move the folder away (the command then "
                "goes on from the record in the cluster) or pass the later run's --working-directory"
            )
        return [], {}  # the folder's run is the later one: its record was written over, it writes it again
    steps = workdir.steps()
    newer = [
        (step, entry)
        for step, entry in found.steps.items()
        if EVENTS.index(entry.get("event")) > EVENTS.index(steps.get(step, {}).get("event"))
    ]
    flags = {k: True for k in END_FLAGS if k in theirs.ends and k not in mine.ends}
    return newer, flags


def _state(flags: dict[str, bool]) -> str:
    """End flags in words (the last that can happen first)."""
    for flag, said in (("rolled_back", "rolled back"), ("rolling_back", "being rolled back"), ("finished", "finished")):
        if flags.get(flag):
            return said
    return "unfinished"


def catch_up(workdir: WorkDir, found: RunRecord, name: str) -> str | None:
    """Bring the working directory up to the record in the cluster where the record is ahead of it
    (`ahead`; OutOfDate when it is another, later run's): the newer of the two wins. What it took
    from the record, in words, or None when the folder was up to date."""
    newer, flags = ahead(workdir, found, name)
    for step, entry in newer:
        data = {k: v for k, v in entry.items() if k != "event"}
        if entry["event"] == "undone" and workdir.steps().get(step, {}).get("event") != "done":
            workdir.record(step, "done", **data)
        workdir.record(step, entry["event"], **data)
    if flags:
        workdir.update_run(**flags)
    if not newer and not flags:
        return None
    said = [f"{len(newer)} step(s) {'/'.join(sorted({e['event'] for _, e in newer}))}"] if newer else []
    said += [_state(flags)] if flags else []
    return ", ".join(said)


def check_current(workdir: WorkDir, found: RunRecord | None, name: str) -> None:
    """Raise OutOfDate unless the working directory is up to date with the record in the cluster
    (`found`: read again once the run's Lease is held: a command elsewhere may have carried the run
    on between this command's first look and its Lease)."""
    if found is None or not workdir.has_run():
        return
    newer, flags = ahead(workdir, found, name)
    if newer or flags:
        what = ", ".join([f"step {s} {e['event']}" for s, e in newer[:3]] + [_state(flags)] * bool(flags))
        raise OutOfDate(
            f"configmap/{name} shows this run further on than {workdir.path} ({what}): a command elsewhere "
            "carried it on; nothing was changed: run the same command again (it takes the record's progress)"
        )
