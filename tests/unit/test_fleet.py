"""A signal to the parent of several runs (`sts A B C --parallel 2`, `sts --all`, `all`): passed on
to each child running, none started after it, a summary naming the interrupted ones with the
command that resumes each, exit 143 (130 for SIGINT). The children are fakes here (pipes and
threads standing in for `kubectl csi-migrate sts NAME` processes); the signal is a real one, sent
to this process and handled in its main thread, as in the command."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kubectl_csi_migrate.cli import fleet, main

STOP_CODES = {signal.SIGTERM: 143, signal.SIGHUP: 143, signal.SIGINT: 130}


class FakeChild:
    """A child run: says it deleted its StatefulSet, then runs until it gets a signal, and stops
    as a run does (an `error:` line, exit 143 or 130). Left alone, it ends after 10 s, failed."""

    def __init__(self, argv: list[str], started: list[FakeChild], **_: Any) -> None:
        self.argv = argv
        self.name = argv[argv.index("sts") + 1]
        self.signals: list[int] = []
        self.returncode: int | None = None
        self._ended = threading.Event()
        err_r, err_w = os.pipe()
        out_r, out_w = os.pipe()
        self.stderr = os.fdopen(err_r)
        self.stdout = os.fdopen(out_r)
        self._err = os.fdopen(err_w, "w")
        self._out = os.fdopen(out_w, "w")
        self._err.write(f"statefulset.apps/{self.name} deleted (orphan: pods, PVCs and PVs kept)\n")
        self._err.flush()
        self._timer = threading.Timer(10, self._end, (1, "error: nobody stopped this run"))
        self._timer.daemon = True
        self._timer.start()
        started.append(self)

    def _end(self, code: int, line: str) -> None:
        if self._ended.is_set():
            return
        self._err.write(line + "\n")
        self._err.close()
        self._out.close()
        self.returncode = code
        self._ended.set()

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)
        self._timer.cancel()
        self._end(STOP_CODES[signum], f"error: {signal.Signals(signum).name}: a run is resumed by the same command")

    def wait(self) -> int:
        self._ended.wait()
        assert self.returncode is not None
        return self.returncode

    def poll(self) -> int | None:
        return self.returncode


class Sink:
    """A child that notes the signals it gets."""

    def __init__(self, send_signal: Any) -> None:
        self.send_signal = send_signal


class Unhandled(Exception):
    """The signal reached the test's own handler: the command did not handle it."""


@pytest.fixture
def guarded() -> Iterator[None]:
    """Handlers that raise for the stop signals while the test runs: a command that installs
    none fails the test instead of ending pytest."""

    def unhandled(signum: int, _frame: object) -> None:
        raise Unhandled(signal.Signals(signum).name)

    before = {s: signal.signal(s, unhandled) for s in STOP_CODES}
    yield
    for s, handler in before.items():
        signal.signal(s, handler)


def fleet_args(tmp_path: Path, *names: str) -> Any:
    parser = main.build_parser()
    args = parser.parse_args(
        ["sts", *names, "-n", "ns", "--csi-storageclass", "standard-rwo", "--yes", "--parallel", "2",
         "--working-directory", str(tmp_path), "-o", "json"]
    )  # fmt: skip
    for flag, default in (("selector", None), ("all", False), ("all_namespaces", False), ("from_file", None)):
        setattr(args, flag, getattr(args, flag, default))
    return args


@pytest.mark.parametrize("signum", list(STOP_CODES), ids=lambda s: signal.Signals(s).name)
def test_a_signal_to_the_parent_reaches_each_running_child_and_the_summary_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], guarded: None, signum: int
) -> None:
    started: list[FakeChild] = []
    monkeypatch.setattr(fleet.subprocess, "Popen", lambda argv, **kw: FakeChild(argv, started, **kw))
    kube = SimpleNamespace(info=SimpleNamespace(server="https://k8s", context="ctx", namespace="ns"))
    args = fleet_args(tmp_path, "alpha", "beta", "gamma")

    def send_once_two_run() -> None:
        deadline = time.monotonic() + 5
        while len(started) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signum)  # to this process: handled in its main thread, in run_many

    sender = threading.Thread(target=send_once_two_run)
    sender.start()
    code = fleet.run_many(args, kube, args.parser)
    sender.join()
    out, err = capsys.readouterr()

    assert code == STOP_CODES[signum]
    assert sorted(c.name for c in started) == ["alpha", "beta"], "a run was started after the signal"
    assert [c.signals for c in started] == [[signum], [signum]], "each running child gets the signal once"
    name = signal.Signals(signum).name
    items = {i["name"]: i for i in json.loads(out)["items"]}
    for child in ("alpha", "beta"):
        assert items[child]["result"] == "interrupted" and items[child]["reason"] == f"stopped by {name}"
        workdir = tmp_path / f"csi-migrate-ctx-ns-statefulset-{child}"
        assert items[child]["resume"] == (
            f"kubectl csi-migrate sts {child} -n ns --yes --working-directory {workdir} --csi-storageclass standard-rwo"
        )
    assert items["gamma"]["result"] == "not started" and items["gamma"]["reason"] == f"{name} before it started"
    assert "resume" not in items["gamma"]
    assert f"{name}: passed on to the 2 run(s) in progress" in err
    assert err.rstrip().splitlines()[-1] == (
        f"error: stopped by {name}; the same command resumes the interrupted runs and starts the ones not started"
    )
    # The handlers the command found are back.
    assert all(signal.getsignal(s).__name__ == "unhandled" for s in STOP_CODES)  # type: ignore[union-attr]


def test_the_human_summary_gives_each_interrupted_run_its_resume_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], guarded: None
) -> None:
    started: list[FakeChild] = []
    monkeypatch.setattr(fleet.subprocess, "Popen", lambda argv, **kw: FakeChild(argv, started, **kw))
    kube = SimpleNamespace(info=SimpleNamespace(server="https://k8s", context="ctx", namespace="ns"))
    args = fleet_args(tmp_path / "with space", "alpha", "beta")
    args.output = None
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    assert fleet.run_many(args, kube, args.parser) == 143
    out, _ = capsys.readouterr()
    assert "[ns/alpha] statefulset.apps/alpha deleted" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("ns ")]
    assert [r[:4] for r in rows] == [["ns", "sts", "alpha", "interrupted"], ["ns", "sts", "beta", "interrupted"]]
    workdir = tmp_path / "with space" / "csi-migrate-ctx-ns-statefulset-beta"
    assert f"resume ns/beta: kubectl csi-migrate sts beta -n ns --yes --working-directory '{workdir}'" in out


def test_children_started_after_a_signal_are_none_and_ended_ones_are_not_signalled() -> None:
    said: list[str] = []
    children = fleet.Children(said.append)
    sent: dict[str, list[int]] = {"a": [], "b": [], "c": []}

    def child(name: str) -> Any:
        return Sink(sent[name].append)

    a = children.start(lambda: child("a"))
    b = children.start(lambda: child("b"))
    children.ended(b)
    children.handle(signal.SIGHUP)
    children.handle(signal.SIGTERM)  # a second signal is passed on too; the first decides the exit code
    assert sent == {"a": [signal.SIGHUP, signal.SIGTERM], "b": [], "c": []}
    assert a is not None and children.signal_name == "SIGHUP" and children.exit_code == 143
    assert children.start(lambda: child("c")) is None
    assert said == ["SIGHUP: passed on to the 1 run(s) in progress; starting no other, waiting for them to stop"]


def test_a_signal_during_a_child_s_start_waits_for_it_and_reaches_it() -> None:
    """A worker thread starting a child holds the lock; the signal's handler (the main thread)
    waits for the start to end, and then passes the signal on to that child too."""
    children = fleet.Children(lambda line: None)
    spawning, go = threading.Event(), threading.Event()
    sent: list[int] = []

    def spawn() -> Any:
        spawning.set()
        go.wait(5)
        return Sink(sent.append)

    worker = threading.Thread(target=children.start, args=(spawn,))
    worker.start()
    assert spawning.wait(5)
    threading.Timer(0.2, go.set).start()
    children.handle(signal.SIGTERM)
    worker.join()
    assert sent == [signal.SIGTERM]


def test_a_signal_handled_inside_the_handler_does_not_deadlock() -> None:
    """A second signal's handler may run in the main thread while the first one's holds the lock."""
    said: list[str] = []
    children = fleet.Children(said.append)
    sent: list[int] = []

    def send_signal(signum: int) -> None:
        sent.append(signum)
        if len(sent) == 1:
            children.handle(signal.SIGINT)  # as if SIGINT arrived now

    assert children.start(lambda: Sink(send_signal)) is not None
    children.handle(signal.SIGTERM)
    assert sent == [signal.SIGTERM, signal.SIGINT] and children.signal_name == "SIGTERM" and len(said) == 1


def test_a_child_s_exit_code_says_which_signal_stopped_it() -> None:
    assert fleet.stopped_by(130) == "SIGINT"
    assert fleet.stopped_by(143) == "SIGTERM"
    assert fleet.stopped_by(-signal.SIGTERM) == "SIGTERM"  # killed before it could handle it
    assert fleet.stopped_by(-signal.SIGINT) == "SIGINT"
    assert fleet.stopped_by(1) is None and fleet.stopped_by(0) is None and fleet.stopped_by(-9) is None


def test_a_stop_signal_repeated_at_once_is_the_same_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child of a fleet gets its process group's Ctrl-C and the one its parent passes on: the
    second, within REPEAT_WINDOW, does not cut short the stop the first began; a later one does."""
    monkeypatch.setattr(main, "_honoured", [])
    with pytest.raises(main.Terminated, match="SIGTERM"):
        main._stop(signal.SIGTERM, None)
    main._stop(signal.SIGTERM, None)  # the same request, delivered twice
    main._stop(signal.SIGINT, None)
    main._honoured[-1] -= main.REPEAT_WINDOW
    with pytest.raises(KeyboardInterrupt):
        main._stop(signal.SIGINT, None)


def test_a_child_says_in_its_outcome_file_whether_it_sent_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summary's "skipped (nothing changed)" comes from what the child sent (cli/main.py writes
    fleet.OUTCOME_FILE), never from its error text (issue 19: the fleet searched stderr for "was
    not changed")."""
    from kubectl_csi_migrate.kube import client

    outcome = tmp_path / "child.json"
    monkeypatch.setenv(fleet.OUTCOME_FILE, str(outcome))
    monkeypatch.setattr(client, "CHANGES", [0])
    code = main.main(["sts", "web", "--kubeconfig", str(tmp_path / "missing"), "--csi-storageclass", "x", "--yes"])
    assert code == 1 and json.loads(outcome.read_text()) == {"exit": 1, "changed": False}
    assert fleet._changed_nothing(outcome, 1)
    assert not fleet._changed_nothing(outcome, 143), "another exit than the one recorded"
    assert not fleet._changed_nothing(tmp_path / "never-written.json", 1), "a killed child may have changed anything"
    outcome.write_text(json.dumps({"exit": 1, "changed": True}))
    assert not fleet._changed_nothing(outcome, 1)


@pytest.mark.parametrize(
    ("method", "path", "query", "changes"),
    [
        ("GET", "/api/v1/namespaces/ns/persistentvolumeclaims/a", None, False),
        ("DELETE", "/api/v1/namespaces/ns/persistentvolumeclaims/a", None, True),
        ("PATCH", "/api/v1/persistentvolumes/pv", None, True),
        ("POST", "/apis/apps/v1/namespaces/ns/statefulsets", {"dryRun": "All"}, False),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/csi-migrate-x", None, False),
        ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", None, False),
        ("POST", "/api/v1/namespaces/ns/configmaps", None, True),
    ],
)
def test_which_requests_may_change_the_cluster(
    method: str, path: str, query: dict[str, str] | None, changes: bool
) -> None:
    from kubectl_csi_migrate.kube.client import access_of, may_change

    assert may_change(method, access_of(method, path, query), query) is changes
