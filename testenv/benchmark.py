"""scripts/benchmark: time the rolling migration of the 3-replica scenario (see scripts/benchmark)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from testenv import build, cluster, scenario

REPO = Path(__file__).resolve().parents[1]


def one_run(env: cluster.Env) -> dict[str, float]:
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    scenario.create(env, "web", ns, replicas=3)
    path = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.exports()['PATH']}"
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        proc = subprocess.run(
            ["kubectl", "csi-migrate", "sts", "web", "-n", ns, "--csi-storageclass", "standard-rwo", "--yes",
             "--working-directory", f"{tmp}/run", "-o", "json"],
            env={**os.environ, **env.exports(), "PATH": path}, capture_output=True, text=True,
        )  # fmt: skip
        elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"benchmark: the migration failed:\n{proc.stderr}")
    report = json.loads(proc.stdout)
    timing = report["timing"]
    cluster.kubectl(env, "delete", "namespace", ns, "--wait=false")
    return {
        "process": elapsed,
        "wall": timing["wallSeconds"],
        "tool": timing["toolSeconds"],
        "wait": timing["waitSeconds"],
        "vcenter": timing["vcenterSeconds"],
        "requests_per_replica": report["apiRequests"] / 3,
    }


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    env = cluster.Env()
    procs = env.processes() if env.exists() else {}
    started_here = not (procs and all(procs.values()))
    if started_here:
        if env.root.exists():
            cluster.down(env)
        cluster.up(build.build(verbose=False), env)
    try:
        results = [one_run(env) for _ in range(runs)]
    finally:
        if started_here:
            cluster.down(env)
    print(f"rolling migration, 3 replicas, 1 in-tree volume each, {runs} runs (median, min-max):")
    for key, label in (
        ("process", "whole command (incl. Python start-up and imports)"),
        ("wall", "migration wall time"),
        ("tool", "  the tool's own time"),
        ("wait", "  waiting on the cluster (watches)"),
        ("vcenter", "  waiting on vCenter"),
    ):
        values = [r[key] for r in results]
        print(f"  {label:52} {statistics.median(values):6.2f} s  ({min(values):.2f}-{max(values):.2f})")
    per_replica = [r["requests_per_replica"] for r in results]
    print(f"  {'API requests per replica':52} {statistics.median(per_replica):6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
