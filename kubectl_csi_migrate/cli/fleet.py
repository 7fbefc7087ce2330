"""Many owners in one command: `sts NAME NAME...`, `sts -l SELECTOR`, `sts --all [-A]` (and the
same for `deploy` and `pvc`), `all [-A]` (every owner of every kind), `sts --from-file FILE`
(the survey's JSON, `preflight -A -o json`, fed back: each row by its own command).

Each owner is migrated by a `kubectl csi-migrate sts|deploy|pvc NAME` process of its own (the
same program, the same flags), up to `--parallel N` at once: its own working directory, Lease,
record in the cluster, API and vCenter connections. A SIGTERM, SIGHUP or SIGINT the parent
receives is passed on to every child running (`Children`: Ctrl-C from a terminal reaches them
all anyway, a `kill PID` or a CI system's SIGTERM the parent only), and each stops as a single
run does, resumable; no other is started, and the summary names them interrupted. The rolling strategy keeps at most one
replica of each StatefulSet down, whatever N, and runs whose pods one disruption budget covers take
turns (each holds the budget's Lease for its whole run: migration/budget.py). The summary lists
each owner: migrated, nothing to do, skipped (it sent no change: preflight refused it, another run
holds its Lease, or it waited its --timeout for another run's budget Lease), failed or interrupted
with the command that resumes it, or not started (--fail-fast, or a signal).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from kubectl_csi_migrate.cli import common, printers
from kubectl_csi_migrate.threads import wait_for

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
OUTCOME_FILE = "CSI_MIGRATE_OUTCOME_FILE"
"""Set for each child: where it writes how it ended (`{"exit": N, "changed": bool}`, cli/main.py),
so that "nothing changed" in the summary is what the child did, never read from its words."""
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143

# Flags of the parent that choose the targets or the output; every other flag is passed on.
NOT_PASSED_ON = {
    "name", "names", "sts_name", "selector", "all", "all_namespaces", "parallel", "fail_fast", "output", "from_file",
    "working_directory", "yes", "namespace", "run", "confirm_needs_yes", "command", "parser", "kind",
}  # fmt: skip
STATEFULSET_ONLY = {"--strategy"}
"""Flags only `sts` takes: not passed on to a `deploy` or `pvc` run."""
KINDS = ("StatefulSet", "Deployment", "ReplicaSet", "PersistentVolumeClaim")
PLURAL = {"StatefulSet": "StatefulSet(s)", "Deployment": "Deployment(s)", "ReplicaSet": "ReplicaSet(s)",
          "PersistentVolumeClaim": "claim(s)"}  # fmt: skip

Child = TypeVar("Child")
Target = tuple[str, str, str]
"""(namespace, kind, name)."""


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from kubectl_csi_migrate.cli.flags import add_flags, positive

    parser = sub.add_parser(
        "all",
        parents=parents,
        help="migrate every owner of in-tree vSphere volumes in the namespace (-A: every namespace)",
        description="Every StatefulSet, Deployment (or ReplicaSet of its own) and claim no controller "
        "mounts that the survey (`preflight` without a name) finds with in-tree vSphere volumes, each by "
        "its own command (sts, deploy, pvc) as a run of its own; a summary at the end. Running it again "
        "resumes the interrupted ones and finds nothing to do for the finished ones.",
    )
    add_flags(parser)
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="in every namespace")
    parser.add_argument(
        "--parallel", type=positive, default=1, metavar="N",
        help="migrate up to N owners at once (default 1); a StatefulSet keeps at most one replica down",
    )  # fmt: skip
    parser.add_argument("--fail-fast", action="store_true", help="start no other owner once one failed")
    parser.set_defaults(
        run=run_all, confirm_needs_yes=True, parser=parser, kind=None, all=True, names=[], selector=None, from_file=None
    )


def run_all(args: argparse.Namespace) -> int:
    """`all`: every owner the survey finds, each by its own command."""
    from kubectl_csi_migrate.errors import UsageError

    if getattr(args, "sts_name", None):
        raise UsageError("--sts-name names one StatefulSet; give several as STS_NAME arguments")
    return run_many(args, common.kube_from(args, dry_run=args.dry_run), args.parser)


def from_file(path: str, default_kind: str) -> tuple[list[Target], dict[Target, str]]:
    """(namespace, kind, name) of each item of a JSON list read from `path` ("-": standard input;
    an item without a kind is a `default_kind`), and, for the survey's rows it found not
    migratable, why (they are skipped, not run)."""
    from kubectl_csi_migrate.errors import UsageError

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        data = json.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not JSON ({exc.msg}, line {exc.lineno}): give the output of `-o json`") from exc
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise UsageError(f'{path}: expected a JSON object with "items" (`preflight -A -o json`)')
    targets: list[Target] = []
    refused: dict[Target, str] = {}
    for index, item in enumerate(items):
        where = item.get("metadata", item) if isinstance(item, dict) else {}
        ns, name = where.get("namespace"), where.get("name")
        if not isinstance(ns, str) or not isinstance(name, str) or not ns or not name:
            raise UsageError(f"{path}: item {index} has no namespace and name")
        kind = item.get("kind") or default_kind
        if kind not in KINDS:
            raise UsageError(f"{path}: item {index} is a {kind}: expected {', '.join(KINDS)}")
        target = (ns, kind, name)
        if target in targets:
            continue
        targets.append(target)
        if item.get("migratable") is False:
            problems = "; ".join(item.get("problems") or []) or "not migratable"
            refused[target] = f"the survey found: {problems} (nothing changed)"
    return targets, refused


def targets_of(args: argparse.Namespace, kube: Any) -> list[Target]:
    """(namespace, kind, name) of each owner the command names, selects, or (--all) that has
    in-tree vSphere volumes to migrate (`all`: of every kind)."""
    namespace = None if args.all_namespaces else common.namespace_of(args, kube)
    if args.names:
        return [(common.namespace_of(args, kube), args.kind, n) for n in dict.fromkeys(args.names)]
    if args.selector:
        found = kube.items(args.kind, namespace, label_selector=args.selector)
        return sorted((s["metadata"]["namespace"], args.kind, s["metadata"]["name"]) for s in found)
    from kubectl_csi_migrate.cli.preflight import plan_for
    from kubectl_csi_migrate.migration.owners import gather_all

    wanted = (
        set(KINDS) if args.kind is None else {args.kind, "ReplicaSet"} if args.kind == "Deployment" else {args.kind}
    )
    from kubectl_csi_migrate.migration import record

    result = set()
    for snap in gather_all(kube, namespace):
        if snap.kind in wanted and plan_for(args, kube, snap).to_migrate():
            result.add((snap.namespace, snap.kind, snap.name))
    # A run stopped half way is resumed too, though its owner may show nothing in-tree now.
    server = kube.info.server
    result |= {
        (ns, kind, name) for at, ns, kind, name in record.unfinished(kube, namespace) if kind in wanted and at == server
    }
    return sorted(result, key=lambda t: (t[0], KINDS.index(t[1]), t[2]))


def _label(target: Target) -> str:
    """How lines and the summary name a target: `ns/web` (a StatefulSet), `ns/deploy/api`."""
    ns, kind, name = target
    from kubectl_csi_migrate.migration.plan import OwnerKind

    owner = OwnerKind(kind)
    return f"{ns}/{name}" if owner.bare_name else f"{ns}/{owner.command}/{name}"


def _counted(targets: list[Target]) -> str:
    counts: dict[str, int] = {}
    for _, kind, _ in targets:
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {PLURAL[kind]}" for kind, n in counts.items())


def child_argv(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The parent's flags, as given, for a child `sts` run (targets and output excepted)."""
    argv: list[str] = []
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        if not action.option_strings or action.dest in NOT_PASSED_ON:
            continue
        value = getattr(args, action.dest, None)
        if value is None or value == action.default or value is False:
            continue
        flag = max(action.option_strings, key=len)
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value) if not isinstance(value, float) else f"{value:g}s"]
    return argv


STOP_SIGNALS = ("SIGTERM", "SIGHUP", "SIGINT")
"""The signals that stop a fleet: passed on to its children (SIGHUP where the system has it)."""
PASSES_SIGNALS_ON = os.name != "nt"
"""Windows delivers Ctrl-C to every process of the console, and no signal from one process to
another (Popen.send_signal(SIGTERM) would be TerminateProcess, a kill): the children are not sent one."""


def stopped_by(code: int) -> str | None:
    """The signal a child's exit code says stopped it (a run's 130 or 143, or killed by one before
    it could handle it), else None."""
    if code == EXIT_INTERRUPTED:
        return "SIGINT"
    if code == EXIT_TERMINATED:
        return "SIGTERM"
    names = {int(getattr(signal, n)): n for n in STOP_SIGNALS if hasattr(signal, n)}
    return names.get(-code)


class Children:
    """The fleet's running child processes, and the signal that stops the fleet.

    The parent's main thread only waits on the worker threads (each waits on its child), so a
    signal is handled there by `handle`: it notes the first signal, passes each one on to every
    child running, and from then on `start` starts none. A child is started and registered under
    one lock, so none is started unseen by a signal. The lock is re-entrant: a second signal's
    handler may run in the main thread while the first one's holds it."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._lock = threading.RLock()
        self._running: set[Any] = set()
        self._say = say
        self.signum: int | None = None
        """The first stop signal received; None while none was."""

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.signum == signal.SIGINT else EXIT_TERMINATED

    def start(self, spawn: Callable[[], Child]) -> Child | None:
        """spawn() a child and register it, unless a stop signal came: then None."""
        with self._lock:
            if self.signum is not None:
                return None
            child = spawn()
            self._running.add(child)
            return child

    def ended(self, child: Any) -> None:
        with self._lock:
            self._running.discard(child)

    def handle(self, signum: int, _frame: object = None) -> None:
        """A signal handler: pass `signum` on to every running child (a child that ended since is
        not signalled: Popen.send_signal checks)."""
        with self._lock:
            first = self.signum is None
            if first:
                self.signum = signum
            running = list(self._running)
        for child in running if PASSES_SIGNALS_ON else []:
            with contextlib.suppress(OSError):
                child.send_signal(signum)
        if first:
            with contextlib.suppress(OSError):  # an output gone (a closed terminal) must not stop the stop
                self._say(
                    f"{signal.Signals(signum).name}: passed on to the {len(running)} run(s) in progress; starting "
                    "no other, waiting for them to stop"
                )

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """`handle` installed for the stop signals (in the main thread, where Python runs signal
        handlers), the handlers before it put back at the end."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        before = {}
        for name in STOP_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None:
                before[signum] = signal.signal(signum, self.handle)
        try:
            yield
        finally:
            for signum, handler in before.items():
                signal.signal(signum, handler)


def _self() -> list[str]:
    """How to start this program again: the binary itself, or this Python on the package."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "kubectl_csi_migrate"]


def run_many(args: argparse.Namespace, kube: Any, parser: argparse.ArgumentParser) -> int:
    from kubectl_csi_migrate.migration.locate import default_workdir
    from kubectl_csi_migrate.migration.plan import OwnerKind

    refused: dict[Target, str] = {}
    owners = "owner" if args.kind is None else PLURAL[args.kind].replace("(s)", "")
    if args.from_file is not None:
        targets, refused = from_file(args.from_file, args.kind or "StatefulSet")
        where = args.from_file if args.from_file != "-" else "standard input"
    else:
        targets = targets_of(args, kube)
        where = "every namespace" if args.all_namespaces else f"namespace {common.namespace_of(args, kube)}"
    if not targets:
        human = f"no {owners} with in-tree vSphere volumes in {where}: nothing to do"
        if args.from_file is not None:
            human = f"no {owners} listed in {where}: nothing to do"
        printers.render({"apiVersion": "v1", "kind": "List", "items": []}, args.output, human, [])
        return EXIT_OK
    listing = ", ".join(_label(t) for t in targets)
    if not args.yes and args.dry_run == "none":
        question = f"Migrate {_counted(targets)}, {args.parallel} at a time: {listing}"
        unasked = f"not a terminal: pass --yes to migrate several {owners}s (or --dry-run to see the plans)"
        if (code := printers.confirm(question, unasked)) is not None:
            return code
    info = sys.stderr if args.output else sys.stdout
    lock = threading.RLock()  # re-entrant: a signal handler may say a line in the main thread
    stop = threading.Event()
    flags = child_argv(args, parser)
    sts_only: list[str] = []
    for flag in STATEFULSET_ONLY:
        if flag in flags:
            at = flags.index(flag)
            sts_only, flags = flags[at : at + 2], flags[:at] + flags[at + 2 :]

    def say(line: str) -> None:
        with lock:
            info.write(line + "\n")
            info.flush()

    say(f"{_counted(targets)} in {where}, {args.parallel} at a time: {listing}")
    children = Children(say)
    import tempfile

    outcomes = Path(tempfile.mkdtemp(prefix="kubectl-csi-migrate-fleet-"))  # 0700; each child's end

    def one(target: Target) -> dict[str, Any]:
        ns, kind, name = target
        entry: dict[str, Any] = {"namespace": ns, "kind": kind, "name": name}
        if target in refused:
            return entry | {"result": "skipped", "reason": refused[target]}
        if stop.is_set():
            return entry | {"result": "not started", "reason": "an earlier one failed (--fail-fast)"}
        if children.signum is not None:
            return entry | {"result": "not started", "reason": f"{children.signal_name} before it started"}
        # Named by the run's key (an earlier release's folder when it holds this owner's run).
        server = kube.info.server
        workdir = str(default_workdir(kube.info.context, ns, kind, name, server, args.working_directory).path)
        own = flags + (sts_only if kind == "StatefulSet" else [])
        base = [OwnerKind(kind).command, name, "-n", ns, "--yes", "--working-directory", workdir]
        argv = [*base, "-o", "json", *own]
        outcome = outcomes / f"{ns}.{kind}.{name}.json"
        env = {**os.environ, OUTCOME_FILE: str(outcome)}
        proc = children.start(
            lambda: subprocess.Popen(
                [*_self(), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        )
        if proc is None:  # the signal came meanwhile
            return entry | {"result": "not started", "reason": f"{children.signal_name} before it started"}
        try:
            errors: list[str] = []
            assert proc.stderr is not None and proc.stdout is not None
            # Its report is read while its log is followed: a report larger than a pipe holds
            # (64 KiB, about 60 volumes) would otherwise block the child, and so this loop, for ever.
            chunks: list[str] = []
            reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
            reader.start()
            for line in proc.stderr:
                line = line.rstrip("\n")
                say(f"[{_label(target)}] {line}")
                if line.startswith("error: "):
                    errors.append(line[len("error: ") :])
            reader.join()
            out = "".join(chunks)
            code = proc.wait()
        finally:
            children.ended(proc)
        entry["workingDirectory"] = workdir
        if code == 0:
            report = json.loads(out) if out.strip() else {}
            if report.get("kind") == "MigrationPlan":
                volumes = [v for v in report["plan"]["volumes"] if v["action"] == "migrate"]
                return entry | {"result": "planned", "volumes": len(volumes)}
            migrated = sum(1 for v in report.get("volumes", []) if v.get("result") == "migrated")
            entry["result"] = "migrated" if migrated else "nothing to do"
            entry["volumes"] = migrated
            if report.get("kind") == "MigrationReport" and "timing" in report:
                entry["report"] = report
            return entry
        if args.fail_fast:
            stop.set()
        resume = shlex.join(["kubectl", "csi-migrate", *base, *own])  # without -o json
        by = stopped_by(code)
        if by is not None:
            return entry | {
                "result": "interrupted",
                "reason": f"stopped by {children.signal_name or by}",
                "resume": resume,
            }
        reason = errors[0] if errors else f"exit code {code}"
        if _changed_nothing(outcome, code):
            return entry | {"result": "skipped", "reason": f"{reason} (nothing changed)"}
        return entry | {"result": "failed", "reason": reason, "resume": resume}

    try:
        with children.handling():
            return _summary(args, children, _run_all(one, targets, args.parallel))
    finally:
        shutil.rmtree(outcomes, ignore_errors=True)


def _changed_nothing(outcome: Path, code: int) -> bool:
    """Whether a child that ended with `code` sent no request that may change the cluster, as it
    wrote in its outcome file (cli/main.py, OUTCOME_FILE): never judged from its words. A child
    that wrote none (killed) may have changed anything."""
    try:
        ended = json.loads(outcome.read_text())
    except (OSError, ValueError):
        return False
    return bool(ended.get("exit") == code and ended.get("changed") is False)


def _run_all(one: Callable[[Target], dict[str, Any]], targets: list[Target], parallel: int) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = [pool.submit(one, target) for target in targets]
        wait_for(futures)  # in slices: a signal another thread took is handled at once (threads.py)
        return [f.result() for f in futures]


def _summary(args: argparse.Namespace, children: Children, results: list[dict[str, Any]]) -> int:
    """Print the summary of `results`; the exit code: 143 (130) when a signal stopped the fleet."""
    from kubectl_csi_migrate.migration.plan import OwnerKind, ref

    rows = [
        (
            r["namespace"],
            OwnerKind(r["kind"]).command,
            r["name"],
            r["result"],
            r.get("reason") or f"{r.get('volumes', 0)} volume(s)",
        )
        for r in results
    ]
    human = printers.table(["NAMESPACE", "KIND", "NAME", "RESULT", "DETAIL"], rows)
    for r in results:
        if r.get("resume"):
            human += f"\nresume {_label((r['namespace'], r['kind'], r['name']))}: {r['resume']}"
    data = {"apiVersion": "csi-migrate.kubectl.io/v1", "kind": "MigrationSummary", "items": results}
    printers.render(data, args.output, human, [ref(r["kind"], r["name"]) for r in results])
    if children.signum is not None:
        later = " and starts the ones not started" if any(r["result"] == "not started" for r in results) else ""
        printers.error(f"stopped by {children.signal_name}; the same command resumes the interrupted runs{later}")
        return children.exit_code
    ok = all(r["result"] in ("migrated", "nothing to do", "planned") for r in results)
    return EXIT_OK if ok else EXIT_FAILED
