"""scripts/benchmark: time the rolling migration of the 3-replica scenario and its rollback (see
scripts/benchmark)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from testenv import api, build, cluster, scenario

REPO = Path(__file__).resolve().parents[1]


def _timed(env: cluster.Env, *args: str) -> tuple[float, dict[str, object]]:
    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.exports()['PATH']}"
    started = time.monotonic()
    proc = subprocess.run(
        ["kubectl", "csi-migrate", *args, "-o", "json"],
        env={**os.environ, **env.exports(), "PATH": path}, capture_output=True, text=True,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"benchmark: `kubectl csi-migrate {' '.join(args)}` failed:\n{proc.stderr}")
    return elapsed, json.loads(proc.stdout)


def _figures(elapsed: float, report: dict[str, object], prefix: str) -> dict[str, float]:
    timing = report["timing"]
    assert isinstance(timing, dict)
    return {
        f"{prefix}process": elapsed,
        f"{prefix}wall": timing["wallSeconds"],
        f"{prefix}tool": timing["toolSeconds"],
        f"{prefix}wait": timing["waitSeconds"],
        f"{prefix}vcenter": timing["vcenterSeconds"],
        f"{prefix}requests_per_replica": float(report["apiRequests"]) / 3,  # type: ignore[arg-type]
    }


def _cpu_busy() -> float:
    """Seconds all CPUs of this machine have spent not idle (/proc/stat), to tell a run bound by
    the CPUs from one bound by waiting."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _settle(most: float = 90.0) -> None:
    """Until the machine's CPUs are less than a quarter busy over 2 s (at most `most` seconds)."""
    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        before = _cpu_busy()
        time.sleep(2)
        if (_cpu_busy() - before) / 2 / (os.cpu_count() or 1) < 0.25:
            return


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the tool's commands, and theirs)."""
    times = os.times()
    return times.children_user + times.children_system


def _cpu_by_process(since: dict[int, tuple[str, float]] | None = None) -> dict[int, tuple[str, float]]:
    """By PID: the name and the CPU seconds of every other running process (/proc/PID/stat:
    utime + stime, and cutime + cstime for the children it reaped); less `since`, if given."""
    tick, used = os.sysconf("SC_CLK_TCK"), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        seconds = sum(int(f) for f in fields[11:15]) / tick
        used[int(entry.name)] = (name, seconds - (since or {}).get(int(entry.name), ("", 0.0))[1])
    return used


def _by_name(used: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds by process name (the kernel's workers as one)."""
    named: dict[str, float] = {}
    for name, seconds in used.values():
        key = "kernel workers" if name.startswith("kworker/") else name
        named[key] = named.get(key, 0.0) + seconds
    return {name: seconds for name, seconds in named.items() if seconds > 0.005}


def one_run(env: cluster.Env) -> dict[str, float]:
    """The migration, then the rollback of the finished run (the longest way back)."""
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    scenario.create(env, "web", ns, replicas=3)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = ["-n", ns, "--yes", "--working-directory", f"{tmp}/run"]
        forward = _figures(*_timed(env, "sts", "web", "--csi-storageclass", "standard-rwo", *workdir), "")
        back = _figures(*_timed(env, "rollback", "web", *workdir), "rollback_")
    cluster.kubectl(env, "delete", "namespace", ns, "--wait=false")
    return forward | back


def fleet(env: cluster.Env, statefulsets: int) -> None:
    """`sts --all` over `statefulsets` StatefulSets of 3 replicas, --parallel 1 then 4 (each on a
    namespace of its own); then one StatefulSet of 10 replicas, rolling vs offline."""
    print(f"(b) sts --all on {statefulsets} StatefulSets of 3 replicas (rolling):")
    walls = {}
    for parallel in (1, 4):
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        cluster.kubectl(env, "create", "namespace", ns)
        for i in range(statefulsets):
            scenario.create(env, f"s{i:02d}", ns, replicas=3)
        _settle()  # the pods started, the driver done registering the new in-tree volumes
        with tempfile.TemporaryDirectory() as tmp:
            busy_before, by_process, tool_before = _cpu_busy(), _cpu_by_process(), _children_cpu()
            started = time.monotonic()
            _, summary = _timed(
                env, "sts", "--all", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
                "--parallel", str(parallel), "--working-directory", tmp,
            )  # fmt: skip
            walls[parallel] = time.monotonic() - started
            busy = (_cpu_busy() - busy_before) / walls[parallel] / (os.cpu_count() or 1)
            used = {"the tool": _children_cpu() - tool_before} | _by_name(_cpu_by_process(since=by_process))
        items = summary["items"]
        assert isinstance(items, list)
        reports = [i["report"] for i in items if "report" in i]
        tool = statistics.median(r["timing"]["toolSeconds"] / 3 for r in reports)
        requests = statistics.median(r["apiRequests"] / 3 for r in reports)
        print(
            f"  --parallel {parallel}: {walls[parallel]:6.1f} s wall for {len(reports)} StatefulSets; per replica: "
            f"the tool's own time {tool:.2f} s, {requests:.1f} API requests (median of the StatefulSets); "
            f"the machine's CPUs {busy:.0%} busy (every process: the tool, the API server, etcd, the "
            "controllers, the driver, vcsim)"
        )
        top = sorted(used.items(), key=lambda item: -item[1])
        named = ", ".join(f"{name} {seconds / len(reports):.2f}" for name, seconds in top[:6])
        rest = sum(seconds for _, seconds in top[6:]) / len(reports)
        total = sum(used.values()) / len(reports)
        print(f"    CPU seconds per StatefulSet: {named}, the rest {rest:.2f}; {total:.2f} in all")
        if parallel == 1:
            bound = walls[1] / (len(reports) * total / (os.cpu_count() or 1))
            print(
                f"    so no --parallel can be more than {bound:.1f}x faster on this machine's "
                f"{os.cpu_count()} CPUs (the wall time per StatefulSet over its CPU seconds per CPU)"
            )
        cluster.kubectl(env, "delete", "namespace", ns)
    print(f"  speed-up of --parallel 4: {walls[1] / walls[4]:.1f}x")
    print("(d) one StatefulSet of 10 replicas:")
    for strategy in ("rolling", "offline"):
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        scenario.create(env, "big", ns, replicas=10)
        with tempfile.TemporaryDirectory() as tmp:
            _, result = _timed(
                env, "sts", "big", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes", "--strategy", strategy,
                "--working-directory", f"{tmp}/run",
            )  # fmt: skip
        timing = result["timing"]
        assert isinstance(timing, dict)
        print(
            f"  {strategy:8} {timing['wallSeconds']:6.2f} s wall ({timing['toolSeconds']:.2f} s the tool's own, "
            f"{timing['waitSeconds']:.2f} s waiting), {float(result['apiRequests']) / 10:.1f} API requests per replica"  # type: ignore[arg-type]
        )
        cluster.kubectl(env, "delete", "namespace", ns, "--wait=false")


def owners(env: cluster.Env, volumes: int = 3) -> None:
    """(c) API requests per volume moved, preflight included, for each kind of owner: a
    StatefulSet of `volumes` replicas (rolling, one claim each), a Deployment of one replica
    mounting `volumes` claims, `volumes` bare pods' claims (one `pvc` run each, through `pvc A B C`)."""
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    scenario.create(env, "web", ns, replicas=volumes)
    scenario.deployment(env, "api", ns, replicas=1, claims=volumes)
    for i in range(volumes):
        scenario.bare_pod(env, f"tool{i}", ns, f"tool{i}-data")
    print(f"(c) API requests per volume moved, preflight included ({volumes} volumes of each):")
    with tempfile.TemporaryDirectory() as tmp:
        common = ["-n", ns, "--csi-storageclass", "standard-rwo", "--yes"]
        for label, args in (
            ("sts web (rolling, one replica per volume)", ["sts", "web", "--working-directory", f"{tmp}/sts"]),
            ("deploy api (one pod, all volumes at once)", ["deploy", "api", "--working-directory", f"{tmp}/deploy"]),
        ):
            elapsed, report = _timed(env, *args, *common)
            requests = float(report["apiRequests"]) / volumes  # type: ignore[arg-type]
            print(f"  {label:46} {requests:5.1f} requests, {elapsed:5.2f} s for the command")
        claims = [f"tool{i}-data" for i in range(volumes)]
        elapsed, summary = _timed(env, "pvc", *claims, *common, "--working-directory", f"{tmp}/pvc")
        items = summary["items"]
        assert isinstance(items, list)
        total = sum(i["report"]["apiRequests"] for i in items)
        label = "pvc (a bare pod's claim, one run each)"
        print(f"  {label:46} {total / volumes:5.1f} requests, {elapsed:5.2f} s for the command")
    cluster.kubectl(env, "delete", "namespace", ns, "--wait=false")


def survey(env: cluster.Env, statefulsets: int, replicas: int = 10) -> None:
    """The survey (`preflight -A -o json`) against `kubectl get sts,pvc,pv -A -o json`, on
    `statefulsets` StatefulSets of `replicas` in-tree claims each (claims and PVs bound, no pods:
    the pods are held Pending by a node selector no node has, so only ordinal 0 of each exists)."""
    ns = f"bench-survey-{uuid.uuid4().hex[:6]}"
    label = f"csi-migrate-bench={ns}"
    cluster.kubectl(env, "create", "namespace", ns)
    docs: list[dict[str, object]] = []
    stss: list[dict[str, object]] = []  # created last: their controller would make the claims
    for i in range(statefulsets):
        name = f"s{i:03d}"
        sts = scenario.statefulset(name, ns, replicas, {"data": "standard"}, "1Gi")
        sts["spec"]["template"]["spec"]["nodeSelector"] = {"csi-migrate-bench": "no-such-node"}
        stss.append(sts)
        for ordinal in range(replicas):
            pvc, pv = f"data-{name}-{ordinal}", f"pv-{ns}-{name}-{ordinal}"
            claim = scenario.pvc_for(pvc, ns, name, "1Gi", "standard", "kubernetes.io/vsphere-volume")
            claim["spec"]["volumeName"] = pv
            volume = scenario.in_tree_pv(pv, f"[{cluster.DATASTORE}] kubevols/{pv}.vmdk", ns, pvc, "1Gi")
            volume["metadata"]["labels"] = {"csi-migrate-bench": ns}
            docs += [claim, volume]
    try:
        docs += stss
        created = time.monotonic()
        for start in range(0, len(docs), 500):
            cluster.kubectl(
                env,
                "create",
                "-f",
                "-",
                stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs[start : start + 500]}),
            )
        print(f"(a) survey: {statefulsets} StatefulSets, {statefulsets * replicas} in-tree claims and PVs "
              f"(created in {time.monotonic() - created:.0f} s); 3 runs each, median:")  # fmt: skip
        path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.exports()['PATH']}"
        environ = {**os.environ, **env.exports(), "PATH": path}
        times: dict[str, list[float]] = {}
        for label_, argv in (
            ("kubectl get sts,pvc,pv -A -o json", ["kubectl", "get", "sts,pvc,pv", "-A", "-o", "json"]),
            ("kubectl csi-migrate preflight -A -o json", ["kubectl", "csi-migrate", "preflight", "-A", "-o", "json"]),
        ):
            for _ in range(3):
                started = time.monotonic()
                proc = subprocess.run(argv, env=environ, capture_output=True, text=True)
                times.setdefault(label_, []).append(time.monotonic() - started)
                if proc.returncode != 0:
                    raise SystemExit(f"benchmark: {' '.join(argv)} failed:\n{proc.stderr}")
        rows = json.loads(proc.stdout)["items"]
        found = sum(r["inTreeVolumes"] for r in rows if r["namespace"] == ns)
        assert found == statefulsets * replicas, f"the survey found {found} claims"
        for label_, values in times.items():
            print(f"  {label_:42} {statistics.median(values):6.2f} s ({min(values):.2f}-{max(values):.2f})")
        medians = [statistics.median(v) for v in times.values()]
        print(f"  the survey takes {medians[1] / medians[0]:.2f}x kubectl's time")
    finally:
        cluster.kubectl(env, "delete", "namespace", ns, "--wait=false")
        cluster.kubectl(env, "delete", "pv", "-l", label, "--wait=false")


WAITS = (
    ("Pod gone", "pod gone (evicted)"),
    ("detach", "detach (VolumeAttachment gone)"),
    ("PersistentVolumeClaim gone", "old claim gone"),
    ("PersistentVolume gone", "old PV gone"),
    ("the driver's release", "the driver's release of the disk"),
    ("PersistentVolumeClaim Bound", "new claim Bound"),
    ("Pod Ready", "pod Ready"),
    ("pause", "pauses between tries"),
)
"""The report's waitSecondsByKind entries the populated benchmark prints, and their labels."""


def _detailed_run(env: cluster.Env, replicas: int = 3) -> dict[str, float]:
    """One rolling migration of `replicas` replicas and its rollback; per replica: wall time, the
    tool's own time, API requests, and each kind of wait."""
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    scenario.create(env, "web", ns, replicas=replicas)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = ["-n", ns, "--yes", "--working-directory", f"{tmp}/run"]
        for prefix, args in (
            ("", ["sts", "web", "--csi-storageclass", "standard-rwo"]),
            ("rollback ", ["rollback", "web"]),
        ):
            _, report = _timed(env, *args, *workdir)
            timing = report["timing"]
            assert isinstance(timing, dict)
            figures[f"{prefix}wall"] = timing["wallSeconds"] / replicas
            figures[f"{prefix}tool"] = timing["toolSeconds"] / replicas
            figures[f"{prefix}vcenter"] = timing["vcenterSeconds"] / replicas
            figures[f"{prefix}requests"] = float(report["apiRequests"]) / replicas  # type: ignore[arg-type]
            for what, seconds in timing.get("waitSecondsByKind", {}).items():
                figures[f"{prefix}wait {what}"] = seconds / replicas
    cluster.kubectl(env, "delete", "namespace", ns, "--wait=false")
    return figures


def _populate(env: cluster.Env, namespace: str, first: int, count: int) -> None:
    """`count` more attached volumes in `namespace`, half in-tree, half CSI: StatefulSets of 10
    replicas whose pods mount one in-tree and one CSI claim each (20 volumes), named from `first`;
    waits until every pod is Ready (so every volume attached) and the syncer has registered each
    in-tree disk."""
    made = []
    for i in range(first // 20, (first + count) // 20):
        made.append(
            scenario.create(env, f"p{i:03d}", namespace, replicas=10, csi_templates=("csi",), pdb=False, wait=False)
        )
    for made_one in made:
        scenario.wait_registered(env, [v for v in made_one.volumes if not v.csi], timeout=600)
        scenario.wait_ready(env, made_one.name, namespace, 10, timeout="600s")
        scenario.wait_attached(env, made_one.volumes, timeout=600)


def _present(env: cluster.Env) -> str:
    """Pods (every namespace), PVs, VolumeAttachments attached."""
    pods = len(cluster.kubectl(env, "get", "pods", "-A", "-o", "name").split())
    pvs = len(api.get(env, "persistentvolumes")["items"])
    attached = sum(1 for va in api.get(env, "volumeattachments")["items"] if va.get("status", {}).get("attached"))
    return f"{pods}/{pvs}/{attached}"


def populated(env: cluster.Env, sizes: list[int], runs: int = 3) -> None:
    """The 3-replica rolling migration and its rollback with N other attached volumes (half
    in-tree, half CSI) and their pods present, for each N, side by side; each wait of the run by
    kind (the report's waitSecondsByKind)."""
    nodes = len(api.get(env, "nodes")["items"])
    if nodes * 59 < max(sizes) + 20:
        raise SystemExit(
            f"benchmark: the environment that is up has {nodes} nodes, too few for {max(sizes)} attached volumes "
            "(59 each): stop it (scripts/testenv down) and run this again, which starts one with enough"
        )
    background = f"bench-populated-{uuid.uuid4().hex[:6]}"
    cluster.kubectl(env, "create", "namespace", background)
    columns: dict[int, dict[str, list[float]]] = {}
    present: dict[int, str] = {}
    have = 0
    try:
        for n in sizes:
            if n > have:
                started = time.monotonic()
                _populate(env, background, have, n - have)
                print(f"  ({n - have} volumes added in {time.monotonic() - started:.0f} s)", flush=True)
                have = n
            _settle()
            present[n] = _present(env)
            results = [_detailed_run(env) for _ in range(runs)]
            columns[n] = {k: [r.get(k, 0.0) for r in results] for k in {k for r in results for k in r}}
    finally:
        cluster.kubectl(env, "delete", "namespace", background, "--wait=false")
    print(
        f"rolling migration of 3 replicas beside N other attached volumes (half in-tree, half CSI, on "
        f"{len(cluster.NODES)} nodes); per replica, median of {runs} runs (min-max):"
    )
    header = "".join(f"{'N=' + str(n):>22}" for n in sizes)
    print(f"  {'':44}{header}")
    print(f"  {'pods / PVs / attached VolumeAttachments':44}" + "".join(f"{present[n]:>22}" for n in sizes))
    rows = [("wall", "wall time"), ("tool", "  the tool's own time"), ("vcenter", "  waiting on vCenter")]
    rows += [(f"wait {what}", f"  waiting: {label}") for what, label in WAITS]
    rows += [("requests", "API requests")]
    rows += [("rollback " + key, "rollback: " + label.strip()) for key, label in rows[:2]]
    for key, label in rows:
        cells = []
        for n in sizes:
            values = columns[n].get(key, [0.0])
            unit = "" if key.endswith("requests") else " s"
            cells.append(f"{statistics.median(values):.2f}{unit} ({min(values):.2f}-{max(values):.2f})")
        print(f"  {label:44}" + "".join(f"{c:>22}" for c in cells))
    base, top = columns[sizes[0]], columns[sizes[-1]]
    ratio = statistics.median(top["wall"]) / max(statistics.median(base["wall"]), 1e-9)
    print(f"  wall time per replica at N={sizes[-1]} over N={sizes[0]}: {ratio:.2f}x")


TASK_LATENCY_MS = {"CnsAttachVolume": 3000, "CnsDetachVolume": 3000}
METHOD_LATENCY_MS = {
    "RegisterDisk": 1000, "SetVStorageObjectControlFlags": 500, "CnsCreateVolume": 1500, "CnsDeleteVolume": 1500,
}  # fmt: skip
"""A real vCenter's latencies as `scripts/benchmark latency` models them (docs/development.md names
the sources): tasks (the CSI driver's attach, detach, create and delete of CNS volumes) and the
synchronous calls the tool makes (registering a disk, keepAfterDeleteVm)."""


def _floor(strategy: str, volumes: int) -> float:
    """The seconds of a migration of `volumes` replicas (one volume each) nothing can avoid: the
    modelled vCenter operations a run must wait for, one after another. Each volume is detached
    (CnsDetachVolume, by the driver once its pod is gone) and released by the driver's syncer
    (CnsDeleteVolume of the in-tree volume, once its PV is gone) before the tool registers it; the
    disk is already an FCD (the syncer registered it) with keepAfterDeleteVm at 8.0.3, so the
    tool's own RegisterDisk and flag calls are not on the path; the new pod's attach is not waited
    for here (kwok marks a pod Ready without it). Rolling: one replica after another. Offline:
    every volume at once, were the driver to detach and release them side by side."""
    ms = TASK_LATENCY_MS["CnsDetachVolume"] + METHOD_LATENCY_MS["CnsDeleteVolume"]
    return ms / 1000 * (volumes if strategy == "rolling" else 1)


def _driver_floor(volumes: int) -> float:
    """Offline's floor with the real driver as it is: the volumes detach side by side, but the
    syncer releases them one after another. It handles a PV's deletion (`PVDeleted`, the
    CnsDeleteVolume of the in-tree volume) and a static CSI PV's registration (`PVUpdated`, its
    CnsCreateVolume) under one lock per vCenter (`volumeOperationsLock[vcHost]`,
    pkg/syncer/metadatasyncer.go in v3.7.3), from its PV informer's one handler goroutine. A lower
    bound: every release one after another, none of the new PVs' registrations between them."""
    return (TASK_LATENCY_MS["CnsDetachVolume"] + volumes * METHOD_LATENCY_MS["CnsDeleteVolume"]) / 1000


def latency(env: cluster.Env, volumes: int = 10) -> None:
    """Rolling against offline on `volumes` replicas with a real vCenter's latencies modelled,
    each beside its physical floor."""
    print(
        f"{volumes} replicas (one in-tree volume each) with vCenter latencies modelled (tasks: "
        + ", ".join(f"{k} {v / 1000:g} s" for k, v in TASK_LATENCY_MS.items())
        + "; calls: "
        + ", ".join(f"{k} {v / 1000:g} s" for k, v in METHOD_LATENCY_MS.items())
        + "):"
    )
    walls = {}
    for strategy in ("rolling", "offline"):
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        scenario.create(env, "big", ns, replicas=volumes)
        with tempfile.TemporaryDirectory() as tmp:
            _, report = _timed(
                env, "sts", "big", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes", "--strategy", strategy,
                "--working-directory", f"{tmp}/run",
            )  # fmt: skip
        cluster.kubectl(env, "delete", "namespace", ns, "--wait=false")
        timing = report["timing"]
        assert isinstance(timing, dict)
        walls[strategy] = wall = float(timing["wallSeconds"])
        floor = _floor(strategy, volumes)
        waits = ", ".join(
            f"{k} {v:.1f}" for k, v in sorted(timing.get("waitSecondsByKind", {}).items(), key=lambda i: -i[1])
        )
        print(
            f"  {strategy:8} {wall:7.2f} s wall; floor {floor:6.2f} s; over the floor {wall - floor:6.2f} s "
            f"({(wall - floor) / floor:.0%}); the tool's own {timing['toolSeconds']:.2f} s, vCenter calls "
            f"{timing['vcenterSeconds']:.2f} s; waits (s): {waits}"
        )
    print(f"  offline is {walls['rolling'] / walls['offline']:.1f}x faster than rolling")
    driver = _driver_floor(volumes)
    print(
        f"  offline's floor with the driver's releases one after another (its per-vCenter lock): {driver:.2f} s; "
        f"offline {walls['offline']:.2f} s is {(walls['offline'] - driver) / driver:.0%} over it; no offline run "
        f"can be more than {walls['rolling'] / driver:.1f}x faster than this rolling one"
    )


def everything(env: cluster.Env, statefulsets: int) -> None:
    """Issue 10's figures side by side, in one run: (a) the survey against kubectl, (b) --all
    --parallel 1 vs 4, (c) requests per volume for sts, deploy and pvc, (d) offline vs rolling."""
    survey(env, statefulsets * 10)
    fleet(env, statefulsets)
    owners(env)


def main() -> int:
    if sys.argv[1:2] == ["fleet"]:
        return with_env(lambda env: everything(env, int(sys.argv[2]) if len(sys.argv) > 2 else 20))
    if sys.argv[1:2] == ["owners"]:
        return with_env(lambda env: owners(env, int(sys.argv[2]) if len(sys.argv) > 2 else 3))
    if sys.argv[1:2] == ["populated"]:
        sizes = [int(a) for a in sys.argv[2:]] or [0, 100, 500]
        if not os.environ.get("CSI_MIGRATE_TESTENV_NODES"):
            # Each node VM holds 59 volumes: enough nodes for the largest N and the run's own, read
            # by testenv.cluster when it is imported, so this process starts again with it set.
            nodes = str(max(3, -(-(max(sizes) + 20) // 50)))
            argv = [sys.executable, "-m", "testenv.benchmark", *sys.argv[1:]]
            os.execve(sys.executable, argv, {**os.environ, "CSI_MIGRATE_TESTENV_NODES": nodes})
        return with_env(lambda env: populated(env, sizes))
    if sys.argv[1:2] == ["latency"]:
        for name, delays in (("TASK", TASK_LATENCY_MS), ("METHOD", METHOD_LATENCY_MS)):
            os.environ[f"CSI_MIGRATE_VCSIM_{name}_DELAY"] = ",".join(f"{k}={v}" for k, v in delays.items())
        if cluster.Env().exists():
            raise SystemExit("benchmark: vcsim takes its latencies when it starts: stop the environment first")
        return with_env(lambda env: latency(env, int(sys.argv[2]) if len(sys.argv) > 2 else 10))
    if sys.argv[1:2] == ["survey"]:
        return with_env(lambda env: survey(env, int(sys.argv[2]) if len(sys.argv) > 2 else 200))
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    return with_env(lambda env: single(env, runs))


def with_env(work: Callable[[cluster.Env], None]) -> int:
    env = cluster.Env()
    procs = env.processes() if env.exists() else {}
    started_here = not (procs and all(procs.values()))
    if started_here:
        if env.root.exists():
            cluster.down(env)
        cluster.up(build.build(verbose=False), env)
    try:
        work(env)
    finally:
        if started_here:
            cluster.down(env)
    return 0


def single(env: cluster.Env, runs: int) -> None:
    results = [one_run(env) for _ in range(runs)]
    print(f"rolling migration of 3 replicas (1 in-tree volume each), then its rollback; {runs} runs (median, min-max):")
    print(f"  {'':52} {'migration':>16}    {'rollback':>16}")
    for key, label in (
        ("process", "whole command (incl. Python start-up and imports)"),
        ("wall", "wall time"),
        ("tool", "  the tool's own time"),
        ("wait", "  waiting on the cluster (watches)"),
        ("vcenter", "  waiting on vCenter"),
        ("requests_per_replica", "API requests per replica"),
    ):
        cells = []
        for prefix in ("", "rollback_"):
            values = [r[prefix + key] for r in results]
            unit = "" if key == "requests_per_replica" else " s"
            cells.append(f"{statistics.median(values):6.2f}{unit:2} ({min(values):.2f}-{max(values):.2f})")
        print(f"  {label:52} {cells[0]:>16}    {cells[1]:>16}")


if __name__ == "__main__":
    sys.exit(main())
