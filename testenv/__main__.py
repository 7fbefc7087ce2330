"""scripts/testenv: build | up | env | scenario | status | logs | down."""

from __future__ import annotations

import argparse
import json
import sys
import time

from testenv import build, cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/testenv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build or find the binaries (cached by version)")
    sub.add_parser("up", help="start the clusters, kwok nodes and vcsim")
    sub.add_parser("env", help="print export lines for a shell to eval")
    sub.add_parser("status", help="show the processes and their memory")
    logs = sub.add_parser("logs", help="print a component's log (without NAME: list them)")
    logs.add_argument("name", nargs="?")
    logs.add_argument("--tail", type=int, default=0, help="only the last N lines")
    sub.add_parser("down", help="stop every process started by `up` and remove the state")
    scen = sub.add_parser("scenario", help="create a StatefulSet on in-tree vSphere volumes")
    scen.add_argument("name")
    scen.add_argument("-n", "--namespace", default="default")
    scen.add_argument("--replicas", type=int, default=3)
    scen.add_argument("--template", action="append", help="in-tree volumeClaimTemplate (default: data)")
    scen.add_argument("--csi-template", action="append", default=[], help="a template already on CSI")
    scen.add_argument("--no-pdb", action="store_true")
    scen.add_argument("-o", "--output", choices=["json"], help="print what was created")
    args = parser.parse_args(argv)

    env = cluster.Env()
    if args.command == "build":
        started = time.monotonic()
        build.build()
        print(f"testenv: binaries ready in {time.monotonic() - started:.1f}s")
    elif args.command == "up":
        cluster.up(build.build(), env)
    elif args.command == "env":
        cluster.print_exports(env)
    elif args.command == "status":
        return cluster.status(env)
    elif args.command == "logs":
        return cluster.print_log(env, args.name, args.tail)
    elif args.command == "down":
        cluster.down(env)
    elif args.command == "scenario":
        from testenv import scenario

        if not env.exists():
            print("testenv: not up; run `scripts/testenv up`", file=sys.stderr)
            return 1
        made = scenario.create(
            env,
            args.name,
            args.namespace,
            args.replicas,
            tuple(args.template or ["data"]),
            tuple(args.csi_template),
            pdb=not args.no_pdb,
        )
        if args.output == "json":
            print(json.dumps(made.to_json(), indent=2))
        else:
            print(f"statefulset/{made.name} ready in namespace {made.namespace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
