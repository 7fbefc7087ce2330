"""The Kubernetes client at the HTTP level, against a local fake API server (tests/unit/fake_api.py):
what the e2e suite cannot make a real cluster do on demand. A refused watch list, a 410 Gone and
the relist it needs, a stalled watch, retries through an outage (connections refused for a while),
a write whose answer was lost, and before_mutation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubectl_csi_migrate.errors import PermanentError, TemporaryError
from kubectl_csi_migrate.kube.client import Kube
from tests.unit.fake_api import FakeApi, Seen

NS = "ns"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"


def configmap(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS}, "data": {"k": "v"}}


@pytest.fixture
def fake() -> Iterator[FakeApi]:
    api = FakeApi().start()
    yield api
    api.stop()


def kube_for(api: FakeApi, tmp_path: Path) -> Kube:
    kube = Kube.from_kubeconfig(api.kubeconfig(tmp_path), request_timeout=5)
    assert kube.info.server == api.url and kube.info.namespace == "default"
    return kube


def kinds(requests: list[Seen]) -> list[str]:
    """Each request as "watch-list", "watch", "list" or "METHOD name"."""
    out = []
    for r in requests:
        if r.watch_list:
            out.append("watch-list")
        elif r.watch:
            out.append("watch")
        elif r.method == "GET" and r.path == CONFIGMAPS:
            out.append("list")
        else:
            out.append(f"{r.method} {r.path.rsplit('/', 1)[-1]}")
    return out


def later(seconds: float, action: object) -> threading.Thread:
    thread = threading.Timer(seconds, action)  # type: ignore[arg-type]
    thread.daemon = True
    thread.start()
    return thread


# -- watch lists (sendInitialEvents) and their fallback ---------------------------------------


def test_a_wait_is_one_streamed_watch_where_the_server_serves_watch_lists(fake: FakeApi, tmp_path: Path) -> None:
    fake.put(CONFIGMAPS, configmap("present"))
    kube = kube_for(fake, tmp_path)
    found = kube.watch_until("ConfigMap", lambda objs: "present" in objs, "present", 5, NS, "metadata.name=present")
    assert set(found) == {"present"}
    assert kube.watch_list == {"ConfigMap": True}
    assert kinds(fake.requests) == ["watch-list"]
    assert fake.requests[0].query["resourceVersionMatch"] == "NotOlderThan"

    # An object that comes while the watch is open: still the one request.
    later(0.2, lambda: fake.put(CONFIGMAPS, configmap("later")))
    found = kube.watch_until("ConfigMap", lambda objs: "later" in objs, "later", 5, NS)
    assert set(found) == {"present", "later"}
    assert kinds(fake.requests) == ["watch-list", "watch-list"]


def test_a_refused_watch_list_falls_back_to_a_list_and_a_watch_and_is_not_asked_again(tmp_path: Path) -> None:
    fake = FakeApi(watch_list=False).start()
    try:
        fake.put(CONFIGMAPS, configmap("present"))
        kube = kube_for(fake, tmp_path)
        found = kube.watch_until("ConfigMap", lambda objs: "present" in objs, "present", 5, NS)
        assert set(found) == {"present"}
        assert kube.watch_list == {"ConfigMap": False}
        assert kinds(fake.requests) == ["watch-list", "list"], "refused (422), then a list that answers"

        later(0.2, lambda: fake.put(CONFIGMAPS, configmap("later")))
        found = kube.watch_until("ConfigMap", lambda objs: "later" in objs, "later", 5, NS)
        assert set(found) == {"present", "later"}
        assert kinds(fake.requests)[2:] == ["list", "watch"], "no watch list asked again"
        assert fake.requests[3].query["resourceVersion"] == "101", "from the list's version"
    finally:
        fake.stop()


def test_a_watch_list_refused_once_it_was_served_is_an_error_not_a_fallback(fake: FakeApi, tmp_path: Path) -> None:
    kube = kube_for(fake, tmp_path)
    kube.watch_list["ConfigMap"] = True  # served before
    fake.watch_list = False
    with pytest.raises(PermanentError, match="WatchList feature gate"):
        kube.watch_until("ConfigMap", lambda objs: "x" in objs, "x", 5, NS)
    assert kinds(fake.requests) == ["watch-list"]


# -- 410 Gone -----------------------------------------------------------------------------------


def gone_at_first_watch(fake: FakeApi, name: str) -> None:
    """At the first watch: `name` is created, then every version so far is compacted away (the
    watch gets 410 Gone: what it missed only a new list shows)."""

    def on_watch(seen: Seen) -> None:
        if fake.on_watch is not None and not seen.watch_list:
            fake.on_watch = None
            fake.put(CONFIGMAPS, configmap(name))
            fake.expire()

    fake.on_watch = on_watch


def test_a_410_gone_on_a_wait_s_watch_lists_again_and_the_wait_sees_what_it_missed(
    fake: FakeApi, tmp_path: Path
) -> None:
    kube = kube_for(fake, tmp_path)
    kube.watch_list["ConfigMap"] = False  # list, then watch from the list's version
    gone_at_first_watch(fake, "missed")
    started = time.monotonic()
    found = kube.watch_until("ConfigMap", lambda objs: "missed" in objs, "missed", 5, NS)
    assert set(found) == {"missed"}
    assert kinds(fake.requests) == ["list", "watch", "list"]
    assert time.monotonic() - started < 2


def test_a_410_gone_on_a_cache_s_watch_lists_again_on_the_next_read(fake: FakeApi, tmp_path: Path) -> None:
    kube = kube_for(fake, tmp_path)
    cache = kube.cache("ConfigMap", NS)
    gone_at_first_watch(fake, "missed")
    try:
        assert cache.items() == []
        started = time.monotonic()
        found = cache.wait_until(lambda objs: "missed" in objs, "missed", 5)
        assert set(found) == {"missed"}
        assert time.monotonic() - started < 3
        assert kinds(fake.requests)[:3] == ["list", "watch", "list"]
        assert fake.watches()[0].query["resourceVersion"] == "100", "from the first list's version"
    finally:
        cache.stop()


# -- a stalled watch ----------------------------------------------------------------------------


def test_a_stalled_watch_is_given_up_after_its_window_and_the_wait_lists_again(fake: FakeApi, tmp_path: Path) -> None:
    """A watch that sends its headers and then nothing (a dead load balancer, a hung API server)
    ends at its read timeout (the window the wait asked for, plus 5s): the wait then lists again and
    sees what the stalled watch never brought, long before its own deadline."""
    kube = kube_for(fake, tmp_path)
    kube.watch_list["ConfigMap"] = False
    fake.stall_watches = 1
    later(0.3, lambda: fake.put(CONFIGMAPS, configmap("late")))
    ticks: list[float] = []
    result: list[object] = []

    def wait() -> None:
        try:
            result.append(
                kube.watch_until(
                    "ConfigMap", lambda objs: "late" in objs, "late", 30, NS, tick=ticks.append, tick_every=1
                )
            )
        except Exception as exc:
            result.append(exc)

    started = time.monotonic()
    waiter = threading.Thread(target=wait, daemon=True)  # a wait that hangs fails the test, not the suite
    waiter.start()
    waiter.join(12)
    waited = time.monotonic() - started
    assert result, f"still waiting after {waited:.0f}s on a stalled watch"
    found = result[0]
    assert isinstance(found, dict), found
    assert set(found) == {"late"}
    assert kinds(fake.requests) == ["list", "watch", "list"]
    assert fake.watches()[0].query["timeoutSeconds"] == "1", "the watch asked to end at the next tick"
    assert 5 < waited < 12, waited
    assert ticks, "the wait ticked once the stalled watch was given up"


# -- outages ----------------------------------------------------------------------------------------


def test_without_outage_seconds_a_refused_connection_fails_at_once(tmp_path: Path) -> None:
    fake = FakeApi().start(listening=False)
    try:
        kube = kube_for(fake, tmp_path)
        started = time.monotonic()
        with pytest.raises(TemporaryError, match="cannot reach the Kubernetes API server"):
            kube.get("ConfigMap", "a", NS)
        assert time.monotonic() - started < 1
    finally:
        fake.stop()


def test_reads_and_writes_refused_during_an_outage_are_sent_again_once_the_server_is_back(tmp_path: Path) -> None:
    """A migration run sets outage_seconds: a refused connection (an API server restarting) never
    reached the server, so even a write is sent again; before_mutation is asked once per write."""
    fake = FakeApi().start(listening=False)
    try:
        kube = kube_for(fake, tmp_path)
        kube.outage_seconds = 10
        asked: list[float] = []
        kube.before_mutation = lambda: asked.append(time.monotonic())
        later(0.5, fake.listen)
        started = time.monotonic()
        created = kube.create(configmap("a"))
        assert created["metadata"]["resourceVersion"] == str(fake.version())
        assert 0.5 < time.monotonic() - started < 4
        assert len(asked) == 1
        assert kinds(fake.requests) == ["POST configmaps"], "sent once: the refused attempts never arrived"
        assert kube.get("ConfigMap", "a", NS) is not None
    finally:
        fake.stop()


def test_an_outage_longer_than_outage_seconds_is_an_error(tmp_path: Path) -> None:
    fake = FakeApi().start(listening=False)
    try:
        kube = kube_for(fake, tmp_path)
        kube.outage_seconds = 1
        started = time.monotonic()
        with pytest.raises(TemporaryError, match="cannot reach"):
            kube.items("ConfigMap", NS)
        assert 1 <= time.monotonic() - started < 4
    finally:
        fake.stop()


def test_a_read_whose_answer_was_lost_is_sent_again_a_write_is_not(fake: FakeApi, tmp_path: Path) -> None:
    """A connection closed after the request was sent: a read is safe to send again (within
    outage_seconds), a write may have been applied, so it is an error at once."""
    kube = kube_for(fake, tmp_path)
    kube.outage_seconds = 10
    fake.put(CONFIGMAPS, configmap("a"))
    fake.drop_requests = 3  # more than the client library's own one retry
    assert kube.get("ConfigMap", "a", NS) is not None
    assert kinds(fake.requests) == ["GET a"] * 4

    fake.requests.clear()
    fake.drop_requests = 1
    started = time.monotonic()
    with pytest.raises(TemporaryError, match="cannot reach"):
        kube.create(configmap("b"))
    assert time.monotonic() - started < 1
    assert kinds(fake.requests) == ["POST configmaps"], "not sent again"


def test_before_mutation_runs_before_each_write_and_can_stop_it(fake: FakeApi, tmp_path: Path) -> None:
    kube = kube_for(fake, tmp_path)
    calls: list[str] = []
    kube.before_mutation = lambda: calls.append("checked")
    kube.create(configmap("a"))
    kube.patch("ConfigMap", "a", {"data": {"k": "w"}}, NS)
    kube.get("ConfigMap", "a", NS)
    kube.delete("ConfigMap", "a", NS)
    assert calls == ["checked"] * 3, "the read asked nothing"

    def lost() -> None:
        raise PermanentError("the run's lease was taken")

    kube.before_mutation = lost
    fake.requests.clear()
    with pytest.raises(PermanentError, match="lease"):
        kube.create(configmap("b"))
    assert fake.requests == [], "nothing sent"
