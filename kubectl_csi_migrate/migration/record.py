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
(steps.RECORDED_AFTER): it lags the working directory by the steps since, and a rollback from it
also undoes those (steps.may_have_run), which is safe because undoing a step that never started
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
from pathlib import Path
from typing import Any

from kubectl_csi_migrate.errors import ConflictError, NotFoundError
from kubectl_csi_migrate.kube.client import Kube
from kubectl_csi_migrate.migration.plan import Plan, label_value, object_name, owner_id
from kubectl_csi_migrate.migration.workdir import WorkDir, dump_all_yaml, dump_yaml, load_all_yaml, load_yaml

Obj = dict[str, Any]

LABEL = "csi-migrate.kubectl.io/record"


def name_of(key: str) -> str:
    """The record of the run `key` (Plan.key: `statefulset-web`, `deployment-api`...)."""
    return object_name(key)


def owner_of(found: Obj) -> tuple[str, str, str, str]:
    """(server, namespace, kind, name): whose run a record (as `read` returns it) is."""
    return owner_id(found["run"].get("plan") or {})


class ClusterRecord:
    def __init__(self, kube: Kube, plan: Plan) -> None:
        self.kube = kube
        self.plan = plan
        self.name = name_of(plan.key)
        self._signature = ""
        self._packed = ""
        self._lock = threading.Lock()  # volumes moved at once (offline) save from several threads
        self._exists: bool | None = None

    def save(self, workdir: WorkDir) -> None:
        """Write the record as the working directory has it now (the backups only when they
        changed since the last write)."""
        with self._lock:
            self._save(workdir)

    def _save(self, workdir: WorkDir) -> None:
        run = workdir.load_run()
        steps = kept_steps(workdir.steps())
        fcd = {k.split("/", 1)[1]: v.get("fcd_id", "") for k, v in steps.items() if k.startswith("fcd/")}
        volumes = [
            {"claim": v.pvc, "oldPV": v.pv, "vmdk": v.vmdk, "fcdId": fcd.get(v.pv, "")} for v in self.plan.to_migrate()
        ]
        data = {
            "run.json": json.dumps(run, indent=1),
            "steps.json": json.dumps(steps, indent=1),
            "volumes.yaml": dump_yaml(volumes),
        }
        body: Obj = {"data": data}
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
            self._packed = base64.b64encode(gzip.compress(self._backups(files), mtime=0)).decode()
            body["binaryData"] = {"backups.yaml.gz": self._packed}
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
        self._signature = signature

    def _create(self, body: Obj) -> None:
        body["binaryData"] = {"backups.yaml.gz": self._packed}
        labels = {LABEL: label_value(self.plan.key)}
        meta = {"name": self.name, "namespace": self.plan.namespace, "labels": labels}
        self.kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, **body})

    @staticmethod
    def _backups(files: list[Path]) -> bytes:
        docs = []
        for path in files:
            obj = load_yaml(path.read_text())
            obj.get("metadata", {}).pop("managedFields", None)
            docs.append(obj)
        return dump_all_yaml(docs).encode()


def kept_steps(steps: dict[str, Obj]) -> dict[str, Obj]:
    """What the record keeps of the working directory's steps (WorkDir.steps): the steps done
    and those undone, each with what it recorded; not the steps started or being undone. What
    it lacks, a rollback from it undoes all the same (steps.may_have_run)."""
    return {
        step: {k: v for k, v in entry.items() if k not in ("step", "time")}
        for step, entry in steps.items()
        if entry.get("event") in ("done", "undone")
    }


def read(kube: Kube, namespace: str, key: str) -> Obj | None:
    """The record of the last run `key` (Plan.key): {"run", "steps", "volumes", "backups"}, or
    None when there is none."""
    cm = kube.get_once("ConfigMap", name_of(key), namespace)  # read at a command's start only
    return None if cm is None else parse(cm)


def parse(cm: Obj) -> Obj:
    """A record's ConfigMap as `read` returns it."""
    data = cm.get("data") or {}
    packed = (cm.get("binaryData") or {}).get("backups.yaml.gz", "")
    backups = load_all_yaml(gzip.decompress(base64.b64decode(packed))) if packed else []
    return {
        "run": json.loads(data.get("run.json", "{}")),
        "steps": json.loads(data.get("steps.json", "{}")),
        "volumes": load_yaml(data.get("volumes.yaml", "[]")),
        "backups": backups,
    }


def unfinished(kube: Kube, namespace: str | None) -> list[Plan]:
    """The plans of the runs recorded in a namespace (None: every one) that neither finished nor
    were rolled back: `--all` and `all` resume them, whatever the live objects show now (a
    Deployment whose claim the run deleted has no in-tree claim left to find)."""
    plans = []
    for cm in kube.items("ConfigMap", namespace, label_selector=LABEL):
        run = json.loads((cm.get("data") or {}).get("run.json") or "{}")
        if run.get("plan") and not any(run.get(k) for k in ("finished", "rolling_back", "rolled_back")):
            plans.append(Plan.from_dict(run["plan"]))
    return plans


def rebuild(workdir: WorkDir, record: Obj) -> None:
    """Write the working directory again from the record (run.json, the steps done, backups)."""
    plan = Plan.from_dict(record["run"]["plan"])
    workdir.create(plan, record["run"]["run_id"], record["run"].get("options"))
    for backup in record["backups"]:
        workdir.save_backup(backup, overwrite=True)
    for step, entry in record["steps"].items():
        workdir.record(step, "done", **{k: v for k, v in entry.items() if k != "event"})
        if entry.get("event") == "undone":
            workdir.record(step, "undone")
    flags = {k: record["run"][k] for k in ("finished", "rolling_back", "rolled_back") if record["run"].get(k)}
    if flags:
        workdir.update_run(**flags)
