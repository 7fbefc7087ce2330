"""scripts/testenv: build | up | env | scenario | status | logs | down.

Each leg (testenv/legs.py) has a state folder of its own, so environments of two legs can be up
at once; every command takes `--leg NAME` (default: $CSI_MIGRATE_TESTENV_LEG, else current)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from testenv import build, cluster, legs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/testenv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    leg = argparse.ArgumentParser(add_help=False)
    leg.add_argument("--leg", choices=list(legs.LEGS), help="default: $CSI_MIGRATE_TESTENV_LEG, else current")
    versions = argparse.ArgumentParser(add_help=False, parents=[leg])
    versions.add_argument("--kubernetes", metavar="VERSION", help=f"one of {', '.join(legs.KUBERNETES)}")
    versions.add_argument("--csi-driver", metavar="VERSION", help=f"one of {', '.join(legs.ATTACHERS)}")
    versions.add_argument("--vcenter", metavar="VERSION", help="the vCenter API version vcsim reports (X.Y.Z)")
    sub.add_parser("build", parents=[versions], help="build or find the binaries of a leg (cached by version)")
    sub.add_parser("up", parents=[versions], help="start the clusters, kwok nodes, vcsim and CSI driver of a leg")
    sub.add_parser("env", parents=[leg], help="print export lines for a shell to eval")
    sub.add_parser("status", parents=[leg], help="show the versions, the processes and their memory")
    logs = sub.add_parser("logs", parents=[leg], help="print a component's log (without NAME: list them)")
    logs.add_argument("name", nargs="?")
    logs.add_argument("--tail", type=int, default=0, help="only the last N lines")
    sub.add_parser("down", parents=[leg], help="stop every process started by `up` and remove the state")
    scen = sub.add_parser("scenario", parents=[leg], help="create a StatefulSet on in-tree vSphere volumes")
    scen.add_argument("name")
    scen.add_argument("-n", "--namespace", default="default")
    scen.add_argument("--replicas", type=int, default=3)
    scen.add_argument("--template", action="append", help="in-tree volumeClaimTemplate (default: data)")
    scen.add_argument("--csi-template", action="append", default=[], help="a template already on CSI")
    scen.add_argument("--no-pdb", action="store_true")
    scen.add_argument("-o", "--output", choices=["json"], help="print what was created")
    args = parser.parse_args(argv)
    if args.leg:
        os.environ["CSI_MIGRATE_TESTENV_LEG"] = args.leg  # the state folder below, and the builds

    env = cluster.Env()
    if args.command in ("build", "up"):
        chosen = legs.resolve(args.leg, args.kubernetes, args.csi_driver, args.vcenter)
    if args.command == "build":
        started = time.monotonic()
        build.build(chosen)
        print(f"testenv: binaries of {chosen.describe()} ready in {time.monotonic() - started:.1f}s")
    elif args.command == "up":
        cluster.up(build.build(chosen), env)
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
