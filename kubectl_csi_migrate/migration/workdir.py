"""The working directory: backups of every object and the record of every step.

Layout (the folder is 0700, every file 0600, every write fsync'd before the step it guards):

    run.json               the plan and who runs it (run id); written once
    steps.jsonl            one line per step event: {"step", "event", ...}; the events are
                           "start", "done", and in a rollback "undo-start", "undone"
    backup/<kind>/<name>.yaml   the objects as they were before anything changed
    report.json            the result, at the end (rollback-report.json after a rollback)

A folder may be used when it is new, empty, or holds an unfinished run of the same owner
(same cluster, namespace, kind and name): then the run resumes from the record.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import time
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from kubectl_csi_migrate.errors import PermanentError
from kubectl_csi_migrate.kube.resources import Obj
from kubectl_csi_migrate.migration.plan import Plan, fit_name, word
from kubectl_csi_migrate.migration.runrecord import END_FLAGS, FORMAT, Run, RunRecord, check_format

# libyaml's parser and emitter where PyYAML has them (its wheels do): the pure-Python ones cost
# a run more of its own time than all its API requests.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER: Any = type("Dumper", (getattr(yaml, "CSafeDumper", yaml.SafeDumper),), {})
# The plan's enums (an owner's kind, a strategy, a step's kind) are written as their text.
_DUMPER.add_multi_representer(StrEnum, lambda dumper, value: dumper.represent_str(value.value))


def load_yaml(text: str | bytes) -> Any:
    return yaml.load(text, Loader=_LOADER)


def load_all_yaml(text: str | bytes) -> list[Any]:
    return list(yaml.load_all(text, Loader=_LOADER))


def dump_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_DUMPER, sort_keys=False)


def dump_all_yaml(docs: list[Any]) -> str:
    return yaml.dump_all(docs, Dumper=_DUMPER, sort_keys=False)


def default_name(context: str, namespace: str, key: str) -> str:
    """csi-migrate-<context>-<namespace>-<run key>, reduced to safe file-name characters and to
    255 bytes (the key: `statefulset-<name>`, `deployment-<name>`, `pvc-<name>`: Plan.key; an
    earlier release's run of a StatefulSet: its bare name). Which owner's run a folder holds is
    read from its run.json, never from its name: names of several owners can meet here."""
    raw = f"csi-migrate-{context or 'cluster'}-{namespace}-{key}"
    return fit_name(re.sub(r"[^A-Za-z0-9._-]+", "_", raw), 255)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Write atomically (temp file + rename), 0600, fsync'd file and folder."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class WorkDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.run_file = self.path / "run.json"
        self.steps_file = self.path / "steps.jsonl"
        self.backup_dir = self.path / "backup"
        self._loaded: dict[Path, tuple[tuple[int, int, int], Obj]] = {}
        self.backups_written = 0
        """Backup files this process wrote: the record packs them again when this changes."""

    # -- checks -----------------------------------------------------------------------------

    def problem(self, owner: tuple[str, str, str, str]) -> str | None:
        """Why this folder cannot be used for the `owner` (server, namespace, kind, name: Plan.owner),
        or None when it can (new, empty, or this owner's unfinished run)."""
        if not self.path.exists():
            # Created with its missing parents: the nearest folder that exists must be writable.
            parent = self.path.absolute().parent
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent
            if not parent.is_dir():
                return f"cannot create {self.path}: {parent} is not a directory"
            if not os.access(parent, os.W_OK):
                return f"cannot create {self.path}: {parent} is not writable"
            return None
        if not self.path.is_dir():
            return f"{self.path} exists and is not a directory"
        if not os.access(self.path, os.W_OK):
            return f"{self.path} is not writable"
        if not any(self.path.iterdir()):
            return None
        if not self.run_file.exists():
            return f"{self.path} is not empty and holds no csi-migrate run; choose another --working-directory"
        run = self.load_run()
        plan = Plan.from_dict(run["plan"])
        if plan.owner != owner:
            return self.not_owner(plan, owner) + "; choose another --working-directory"
        if run.get("rolled_back"):
            return (
                f"{self.path} holds a run of this {plan.kind} that was rolled back; move it away or choose "
                "another --working-directory"
            )
        if run.get("rolling_back"):
            return (
                f"{self.path} holds a run of this {plan.kind} that is being rolled back; finish it with "
                f"`kubectl csi-migrate rollback {plan.name if plan.kind.bare_name else plan.ref}`"
            )
        if run.get("finished"):
            return f"{self.path} holds a finished migration of this {plan.kind}; choose another --working-directory"
        return None

    def run_problem(self, owner: tuple[str, str, str, str]) -> str | None:
        """Why this folder holds no run of the `owner` (Plan.owner) to roll back or report on,
        or None when it does."""
        if not self.run_file.exists():
            return f"{self.path} holds no csi-migrate run (pass the run's --working-directory)"
        plan = Plan.from_dict(self.load_run()["plan"])
        if plan.owner != owner:
            return self.not_owner(plan, owner)
        return None

    def not_owner(self, plan: Plan, owner: tuple[str, str, str, str]) -> str:
        """This folder's run (of `plan`) is not one of `owner`: says whose it is."""
        server, namespace, kind, name = owner
        where = f" on {plan.server}" if plan.server != server else ""
        return f"{self.path} holds the run of {plan.what}{where}, not of {word(kind)} {namespace}/{name}"

    def plan(self) -> Plan | None:
        """The plan of the run this folder holds, if any."""
        return Plan.from_dict(self.load_run()["plan"]) if self.run_file.exists() else None

    def has_run(self) -> bool:
        return self.run_file.exists()

    # -- run --------------------------------------------------------------------------------

    def create(
        self, plan: Plan, run_id: str | None = None, options: Obj | None = None, started: float | None = None
    ) -> str:
        """Start (or restart, when no step changed anything yet) the record of a run (`started`:
        when it first started, for a folder rebuilt from the record in the cluster)."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        # A record that never finished its backup changed nothing: start it afresh.
        shutil.rmtree(self.backup_dir, ignore_errors=True)
        self.steps_file.unlink(missing_ok=True)
        self.backup_dir.mkdir(mode=0o700)
        _fsync_dir(self.path.parent if str(self.path.parent) else Path("."))
        run_id = run_id or uuid.uuid4().hex
        record = {
            "format": FORMAT,
            "run_id": run_id,
            "started": started or time.time(),
            "plan": plan.to_dict(),
            "options": options or {},
            "finished": False,
        }
        write_private(self.run_file, json.dumps(record, indent=1).encode())
        return run_id

    def backed_up(self) -> bool:
        """Whether a recorded run got as far as its backup: from then on it resumes."""
        return self.has_run() and self.steps().get("backup", {}).get("event") == "done"

    def load_run(self) -> Obj:
        """run.json as stored (RecordTooNew when a later release wrote it): `run` reads it typed."""
        data: Obj = json.loads(self.run_file.read_text())
        check_format(data, str(self.run_file))
        return data

    def run(self) -> Run:
        return Run.from_dict(self.load_run(), str(self.run_file))

    # -- the folder as a store of the run (runrecord.Store) -----------------------------------

    def load_record(self) -> RunRecord | None:
        """The run this folder holds with its steps and backups, or None."""
        if not self.has_run():
            return None
        backups = [load_yaml(path.read_text()) for path in sorted(self.backup_dir.glob("*/*.yaml"))]
        steps = {step: {k: v for k, v in e.items() if k not in ("step", "time")} for step, e in self.steps().items()}
        return RunRecord(self.run(), steps, backups)

    def save_record(self, record: RunRecord) -> None:
        """Write this folder again from `record` (the run, each step's last event, the backups),
        as `sts`, `rollback` and `status` do from the record in the cluster when the folder is lost."""
        run = record.run
        self.create(run.plan, run.run_id, run.options, run.started)
        for backup in record.backups:
            self.save_backup(backup, overwrite=True)
        for step, entry in record.steps.items():
            data = {k: v for k, v in entry.items() if k not in ("step", "event", "time")}
            event = entry.get("event")
            self.record(step, "start" if event == "start" else "done", **data)
            if event in ("undo-start", "undone"):  # undone once done
                self.record(step, event)
        flags = {k: True for k in END_FLAGS if k in run.ends}
        if flags:
            self.update_run(**flags)

    def mark_finished(self, report: Obj) -> None:
        write_private(self.path / "report.json", json.dumps(report, indent=1).encode())
        self.update_run(finished=True)

    def mark_rolling_back(self) -> None:
        """From the first undo on, the run can only be rolled back further, not resumed."""
        self.update_run(rolling_back=True)

    def mark_rolled_back(self, report: Obj) -> None:
        write_private(self.path / "rollback-report.json", json.dumps(report, indent=1).encode())
        self.update_run(rolled_back=True)

    def update_run(self, **fields: Any) -> None:
        run = self.load_run()
        run.update(fields)
        write_private(self.run_file, json.dumps(run, indent=1).encode())

    # -- backups ----------------------------------------------------------------------------

    def backup_path(self, kind: str, name: str) -> Path:
        return self.backup_dir / kind.lower() / f"{name}.yaml"

    def save_backup(self, obj: Obj, overwrite: bool = False) -> Path:
        path = self.backup_path(obj["kind"], obj["metadata"]["name"])
        if path.exists() and not overwrite:
            return path  # the first backup is the original; never overwrite it on resume
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700)
            _fsync_dir(path.parent.parent)
        write_private(path, dump_yaml(obj).encode())
        self._loaded.pop(path, None)
        self.backups_written += 1
        return path

    def load_backup(self, kind: str, name: str) -> Obj:
        """The backup as a new object each time (callers change theirs): read once, then copied
        until this process writes it again (or the file is not the one read: inode, size, mtime)."""
        path = self.backup_path(kind, name)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise PermanentError(f"the working directory lacks the backup {path}") from None
        seen = self._loaded.get(path)
        if seen is None or seen[0] != (stat.st_ino, stat.st_size, stat.st_mtime_ns):
            seen = ((stat.st_ino, stat.st_size, stat.st_mtime_ns), load_yaml(path.read_text()))
            self._loaded[path] = seen
        return copy.deepcopy(seen[1])

    def has_backup(self, kind: str, name: str) -> bool:
        return self.backup_path(kind, name).exists()

    # -- step record ------------------------------------------------------------------------

    def record(self, step: str, event: str, **data: Any) -> None:
        line = json.dumps({"step": step, "event": event, "time": time.time(), **data}) + "\n"
        new = not self.steps_file.exists()
        fd = os.open(self.steps_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            _fsync_dir(self.path)

    def steps(self) -> dict[str, Obj]:
        """step -> its last event (with the data recorded with it)."""
        result: dict[str, Obj] = {}
        if not self.steps_file.exists():
            return result
        for line in self.steps_file.read_text().splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by a kill: the step is re-run, being idempotent
            previous = result.get(entry["step"], {})
            result[entry["step"]] = {**previous, **entry}
        return result
