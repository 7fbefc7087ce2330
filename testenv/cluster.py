"""Start, describe and stop the test environment on loopback.

USER cluster: etcd, kube-apiserver, kube-controller-manager (all default controllers),
kube-scheduler, kwok driving 3 fake nodes, and the vSphere CSI driver's controller, syncer and
sidecars (testenv/csidriver.py). ADMIN cluster: a second kube-apiserver on the same etcd under
another prefix, holding the user cluster's kubeconfig as GKE on VMware does. vCenter: our vcsim
(testenv/vcsim) over TLS. Every process is started in its own session, its pid written to the state
folder, its output to `logs/`; `down` stops exactly those pids.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from testenv import build as build_mod
from testenv import legs, pki

USER_CLUSTER = "user-cluster-1"
NODES = tuple(f"node-{i}" for i in range(int(os.environ.get("CSI_MIGRATE_TESTENV_NODES") or 3)))
"""The kwok nodes, one node VM in vcsim each (59 volumes attach to each): 3, or
CSI_MIGRATE_TESTENV_NODES for an environment that must hold more attached volumes (scripts/benchmark
populated starts one with more); set it alike for `up` and whatever runs on that environment."""
# The CSI driver refuses a user name without a domain (user@domain or DOMAIN\\user).
VC_USER = "csi-migrate@vsphere.local"
VC_PASSWORD = "testenv-Passw0rd!"
DATACENTER = "DC0"
DATASTORE = "LocalDS_0"
LIMITED_TOKEN_USERS = ("viewer", "reader", "verbs", "revoker")
"""Token users with no RBAC grants, one per permission test that grants some (so that those tests
run side by side: grants to one user add up); `viewer` is never granted anything."""


def state_dir() -> Path:
    """The state folder of the leg CSI_MIGRATE_TESTENV_LEG names (one per leg, so one leg's state
    does not hide another's; one can run per network namespace, see `up`); CSI_MIGRATE_TESTENV_STATE
    overrides it."""
    leg = legs.resolve().name.split("+")[0]
    suffix = "" if leg == "current" else f"-{leg}"
    default = Path(os.environ.get("TMPDIR", "/tmp")) / f"csi-migrate-testenv-{os.getuid()}{suffix}"
    return Path(os.environ.get("CSI_MIGRATE_TESTENV_STATE", default))


def network_namespace() -> str:
    """The network namespace this process runs in (its loopback and ports), e.g. `net:[4026531840]`."""
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return "net"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Env:
    """The state folder of a running (or starting) environment."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or state_dir()
        self.pki = self.root / "pki"
        self.logs = self.root / "logs"
        self.pids = self.root / "pids"
        self.info_file = self.root / "env.json"

    # -- description ---------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return json.loads(self.info_file.read_text())

    def exists(self) -> bool:
        return self.info_file.exists()

    def leg(self) -> legs.Leg:
        """The versions this environment runs (testenv/legs.py)."""
        return legs.from_json(self.info().get("leg"))

    def exports(self) -> dict[str, str]:
        info = self.info()
        return {
            "KUBECONFIG": info["user_kubeconfig"],
            "CSI_MIGRATE_ADMIN_KUBECONFIG": info["admin_kubeconfig"],
            "CSI_MIGRATE_USER_CLUSTER": USER_CLUSTER,
            "GOVC_URL": f"https://127.0.0.1:{info['vcsim_port']}/sdk",
            "GOVC_USERNAME": VC_USER,
            "GOVC_PASSWORD": VC_PASSWORD,
            "GOVC_INSECURE": "true",
            "GOVC_DATACENTER": DATACENTER,
            "GOVC_DATASTORE": DATASTORE,
            "PATH": f"{info['bin']}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    # -- processes -----------------------------------------------------------------------

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pids.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        (self.pids / f"{name}.pid").write_text(f"{proc.pid}\n{argv[0]}\n")
        # Until it has exec'd, the child still shows our own command line: wait for the switch.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[0].decode() == argv[0]:
                    break
            except OSError:
                break
            time.sleep(0.005)
        return proc.pid

    def restart(self, name: str) -> int:
        """Stop process `name` (SIGTERM, its whole group) and start it again with the same
        command line and environment, as a restarted static pod or service; its new pid."""
        pid = self.processes()[name]
        if pid is None:
            raise RuntimeError(f"{name} is not running")
        argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]
        environ = dict(
            item.decode().split("=", 1)
            for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if b"=" in item
        )
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while self.processes()[name] is not None:
            if time.monotonic() > deadline:
                os.killpg(pid, signal.SIGKILL)
            time.sleep(0.05)
        return self.start(name, argv, environ)

    def processes(self) -> dict[str, int | None]:
        """name -> pid if that pid still runs the binary we started, else None."""
        result: dict[str, int | None] = {}
        for pid_file in sorted(self.pids.glob("*.pid")) if self.pids.exists() else []:
            pid_text, binary = pid_file.read_text().split("\n")[:2]
            pid = int(pid_text)
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
                stat = Path(f"/proc/{pid}/stat").read_text()
                alive = cmdline == binary and ") Z" not in stat
            except OSError:
                alive = False
            result[pid_file.stem] = pid if alive else None
        return result

    def how_it_ended(self, name: str) -> str:
        """The part of a component's log that tells how it ended: from a Go panic or fatal error
        on (the first 80 lines), else its last 40 lines."""
        log = self.logs / f"{name}.log"
        if not log.exists():
            return "(no log)\n"
        lines = log.read_text(errors="replace").splitlines(True)
        crash = next((i for i, line in enumerate(lines) if line.startswith(("panic:", "fatal error:"))), None)
        return "".join(lines[crash : crash + 80] if crash is not None else lines[-40:])

    def stop_all(self) -> None:
        running = {n: p for n, p in self.processes().items() if p}
        for pid in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(self.processes().values()):
            time.sleep(0.1)
        for pid in (p for p in self.processes().values() if p):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(self.processes().values()):
            time.sleep(0.1)


# -- helpers ---------------------------------------------------------------------------------


def _wait_https(url: str, env: Env, timeout: float, name: str, client_cert: bool = True) -> None:
    ctx = ssl.create_default_context(cafile=str(env.pki / "ca.crt"))
    if client_cert:
        ctx.load_cert_chain(env.pki / "admin.crt", env.pki / "admin.key")
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        check_alive(env, name)
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
                if resp.status == 200:
                    return
        except Exception as exc:
            last = exc
        time.sleep(0.2)
    raise SystemExit(f"testenv: {name} not ready at {url} after {timeout:.0f}s: {last}")


def check_alive(env: Env, name: str) -> None:
    if env.processes().get(name) is None:
        log = env.logs / f"{name}.log"
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-25:]) if log.exists() else ""
        raise SystemExit(f"testenv: {name} exited; the end of {log}:\n{tail}")


def _kubeconfig(env: Env, port: int, cluster: str, user_cert: bool = True) -> dict[str, Any]:
    def b64(name: str) -> str:
        return base64.b64encode((env.pki / name).read_bytes()).decode()

    user: dict[str, str] = {
        "client-certificate-data": b64("admin.crt"),
        "client-key-data": b64("admin.key"),
    }
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {
                    "server": f"https://127.0.0.1:{port}",
                    "certificate-authority-data": b64("ca.crt"),
                },
            }
        ],
        "users": [{"name": f"{cluster}-admin", "user": user}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": f"{cluster}-admin"}}],
        "current-context": cluster,
    }


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def kubectl(env: Env, *args: str, stdin: str | None = None, kubeconfig: str | None = None) -> str:
    info = env.info()
    argv = [
        str(Path(info["bin"]) / "kubectl"),
        "--kubeconfig",
        kubeconfig or info["user_kubeconfig"],
        *args,
    ]
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


# -- up / down -------------------------------------------------------------------------------


def apiserver_args(env: Env, etcd_port: int, port: int, prefix: str) -> list[str]:
    p = env.pki
    return [
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        f"--etcd-prefix={prefix}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={p / 'serving.crt'}",
        f"--tls-private-key-file={p / 'serving.key'}",
        f"--client-ca-file={p / 'ca.crt'}",
        f"--token-auth-file={p / 'tokens.csv'}",
        "--authorization-mode=RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={p / 'sa.pub'}",
        f"--service-account-signing-key-file={p / 'sa.key'}",
        "--service-cluster-ip-range=10.96.0.0/16",
        "--allow-privileged=true",
        "--enable-priority-and-fairness=false",
        "--profiling=false",
    ]


def up(bins: build_mod.Bin, env: Env) -> None:
    if env.exists() and any(env.processes().values()):
        raise SystemExit(f"testenv: already up (state {env.root}); run `scripts/testenv down` first")
    # The driver's controller and syncer listen on fixed metrics ports (:2112, :2113): a second
    # environment's would fail to start, so one environment runs per network namespace (scripts/test
    # starts the serial tests' own environment in a namespace of its own, `unshare --net`).
    for other in sorted(env.root.parent.glob(f"csi-migrate-testenv-{os.getuid()}*")):
        running = Env(other)
        if other == env.root or not running.info_file.exists() or not any(running.processes().values()):
            continue
        if running.info().get("netns", network_namespace()) != network_namespace():
            continue  # its ports are not ours
        leg = running.info().get("leg", {}).get("name", "current")
        raise SystemExit(f"testenv: leg {leg} is up (state {other}); run `scripts/testenv down --leg {leg}` first")
    shutil.rmtree(env.root, ignore_errors=True)
    env.root.mkdir(parents=True, mode=0o700)
    started = time.monotonic()
    pki.make(env.pki)
    tokens = [f"{secrets_token()},{u},{u}-uid" for u in LIMITED_TOKEN_USERS]
    write_private(env.pki / "tokens.csv", "\n".join(tokens) + "\n")

    ports = {name: free_port() for name in ("etcd", "etcd_peer", "user", "admin", "kcm", "sched", "kwok", "vcsim")}
    bin_dir = bins.folder
    info = {
        "leg": bins.leg.to_json(),
        "netns": network_namespace(),
        "bin": str(bin_dir),
        "kwok": str(bins.kwok),
        "vcsim": str(bins.vcsim),
        "user_kubeconfig": str(env.root / "user.kubeconfig"),
        "admin_kubeconfig": str(env.root / "admin.kubeconfig"),
        "vcsim_port": ports["vcsim"],
        "ports": ports,
        "tokens": {u: t.split(",")[0] for u, t in zip(LIMITED_TOKEN_USERS, tokens, strict=True)},
    }
    write_private(env.info_file, json.dumps(info, indent=1))

    # vcsim first: it is independent and its start overlaps with etcd's.
    print(f"testenv: starting {bins.leg.describe()}", flush=True)
    _start_vcsim(env, bins, ports["vcsim"])

    env.start(
        "etcd",
        [
            str(bin_dir / "etcd"),
            "--data-dir", str(env.root / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{ports['etcd']}",
            "--advertise-client-urls", f"http://127.0.0.1:{ports['etcd']}",
            "--listen-peer-urls", f"http://127.0.0.1:{ports['etcd_peer']}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{ports['etcd_peer']}",
            "--initial-cluster", f"default=http://127.0.0.1:{ports['etcd_peer']}",
            "--unsafe-no-fsync",
            "--quota-backend-bytes", str(2 << 30),
        ],
    )  # fmt: skip
    _wait_http(f"http://127.0.0.1:{ports['etcd']}/health", env, "etcd", 30)

    env.start(
        "kube-apiserver",
        [
            str(bin_dir / "kube-apiserver"),
            *apiserver_args(env, ports["etcd"], ports["user"], "/user"),
        ],
    )
    env.start(
        "admin-apiserver",
        [
            str(bin_dir / "kube-apiserver"),
            *apiserver_args(env, ports["etcd"], ports["admin"], "/admin"),
            # The admin cluster stands for an API server before 1.34, where a watch does not
            # stream its initial state (WatchList: alpha until 1.32, off by default in 1.33): the
            # tool's waits fall back to a list and a watch there (tests/e2e/test_kube_client.py).
            "--feature-gates=WatchList=false",
        ],
    )
    for name, port in (("user.kubeconfig", ports["user"]), ("admin.kubeconfig", ports["admin"])):
        cluster = USER_CLUSTER if name.startswith("user") else "admin-cluster"
        write_private(env.root / name, json.dumps(_kubeconfig(env, port, cluster), indent=1))
    _wait_https(f"https://127.0.0.1:{ports['user']}/readyz", env, 90, "kube-apiserver")

    user_kc = str(info["user_kubeconfig"])
    env.start(
        "kube-controller-manager",
        [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={user_kc}",
            f"--authentication-kubeconfig={user_kc}",
            f"--authorization-kubeconfig={user_kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kcm']}",
            f"--service-account-private-key-file={env.pki / 'sa.key'}",
            f"--root-ca-file={env.pki / 'ca.crt'}",
            "--use-service-account-credentials=false",
            "--controllers=*",
            "--concurrent-statefulset-syncs=5",
            # Seen here under load: a StatefulSet's status kept readyReplicas one short of its
            # Ready pods until the next full resync (12h by default). Resync often instead.
            "--min-resync-period=20s",
            # kwok heartbeats nodes every 20-25 s; on a loaded 2-core machine a late heartbeat
            # must not mark nodes (and with them every pod) NotReady in the middle of a test.
            "--node-monitor-grace-period=2m",
        ],
    )
    env.start(
        "kube-scheduler",
        [
            str(bin_dir / "kube-scheduler"),
            f"--kubeconfig={user_kc}",
            f"--authentication-kubeconfig={user_kc}",
            f"--authorization-kubeconfig={user_kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['sched']}",
        ],
    )
    _start_kwok(env, bins, user_kc, ports["kwok"])
    _wait_https(f"https://127.0.0.1:{ports['admin']}/readyz", env, 60, "admin-apiserver")
    _wait_https(
        f"https://127.0.0.1:{ports['kcm']}/healthz",
        env,
        60,
        "kube-controller-manager",
        client_cert=False,
    )
    _wait_https(f"https://127.0.0.1:{ports['sched']}/healthz", env, 60, "kube-scheduler", client_cert=False)
    _wait_vcsim(env, ports["vcsim"])

    from testenv import csidriver, objects

    objects.populate(env, bins)
    csidriver.start(env, bins)
    csidriver.wait_ready(env)
    print(f"testenv: up in {time.monotonic() - started:.1f}s (state {env.root})", flush=True)


def secrets_token() -> str:
    import secrets

    return secrets.token_hex(16)


def _wait_http(url: str, env: Env, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_alive(env, name)
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"testenv: {name} not ready at {url}")


def _start_vcsim(env: Env, bins: build_mod.Bin, port: int) -> None:
    (env.root / "vcsim").mkdir()
    env.start(
        "vcsim",
        [
            str(bins.vcsim),
            "-l", f"127.0.0.1:{port}",
            "-username", VC_USER,
            "-password", VC_PASSWORD,
            "-dc", "1",
            "-cluster", "1",
            "-host", "1",
            "-standalone-host", "0",
            "-pod", "0",
            "-pg", "0",
            "-ds", "1",
            "-vm", str(len(NODES)),
            "-app", "0",
            "-folder", "0",
            "-api-version", f"{bins.leg.vcenter}.0",
            # A real vCenter's latencies, modelled where asked (scripts/benchmark latency): SOAP
            # methods answered later, tasks taking longer ("Name=ms,...").
            "-method-delay", os.environ.get("CSI_MIGRATE_VCSIM_METHOD_DELAY", ""),
            "-task-delay", os.environ.get("CSI_MIGRATE_VCSIM_TASK_DELAY", ""),
        ],
        env={"TMPDIR": str(env.root / "vcsim")},
    )  # fmt: skip


def _wait_vcsim(env: Env, port: int) -> None:
    _wait_https(f"https://127.0.0.1:{port}/about", env, 30, "vcsim", client_cert=False)


def _start_kwok(env: Env, bins: build_mod.Bin, kubeconfig: str, port: int) -> None:
    # kwok has no built-in stages: use the ones it ships (nodes Ready with heartbeats, pods
    # Running and Ready, pods being deleted removed), read from its module source.
    stages = [f"--config={bins.kwok_stages / s}" for s in ("node/fast", "node/heartbeat", "pod/fast")]
    env.start(
        "kwok",
        [
            str(bins.kwok),
            f"--kubeconfig={kubeconfig}",
            *stages,
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--server-address=127.0.0.1:{port}",
            "--node-lease-duration-seconds=40",
            "--node-ip=10.0.0.1",
        ],
    )


def down(env: Env) -> None:
    if not env.root.exists():
        print("testenv: not up")
        return
    for name in [n for n, pid in env.processes().items() if pid is None]:
        # A component that died while the environment was up: its log goes with the folder, so
        # say how it ended (a CI log is all that is left of a CI machine).
        print(f"testenv: {name} had exited before `down`; from its log:\n{env.how_it_ended(name)}", end="")
    env.stop_all()
    left = [n for n, p in env.processes().items() if p]
    if left:
        raise SystemExit(f"testenv: could not stop {', '.join(left)}")
    shutil.rmtree(env.root, ignore_errors=True)
    print("testenv: down")


def status(env: Env) -> int:
    if not env.exists():
        print("testenv: not up")
        return 1
    procs = env.processes()
    print(env.leg().describe())
    for name, pid in procs.items():
        rss = _rss_mib(pid) if pid else 0
        print(f"{name:26} {'running pid ' + str(pid) if pid else 'NOT RUNNING':22} {rss:7.0f} MiB")
    total = sum(_rss_mib(p) for p in procs.values() if p)
    print(f"{'total':26} {'':22} {total:7.0f} MiB")
    return 0 if all(procs.values()) else 1


def print_log(env: Env, name: str | None, tail: int = 0) -> int:
    """`scripts/testenv logs [NAME]`: a component's log, or the names there are."""
    names = sorted(p.stem for p in env.logs.glob("*.log")) if env.logs.exists() else []
    if not name:
        print("\n".join(names) if names else "testenv: no logs (not up?)")
        return 0 if names else 1
    if name not in names:
        print(f"testenv: no log named {name!r}; there are: {', '.join(names) or 'none'}", file=sys.stderr)
        return 1
    with open(env.logs / f"{name}.log", errors="replace") as handle:
        lines = handle.readlines()
    sys.stdout.writelines(lines[-tail:] if tail else lines)
    return 0


def _rss_mib(pid: int) -> float:
    """Resident memory of the process group `pid` leads (a component and, where it runs under a
    restart loop, its shell)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pid:  # pgrp
                continue
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1024


def print_exports(env: Env) -> None:
    import shlex

    if not env.exists():
        print("testenv: not up; run `scripts/testenv up`", file=sys.stderr)
        raise SystemExit(1)
    print(f"# {env.leg().describe()}")
    for key, value in env.exports().items():
        print(f"export {key}={shlex.quote(value)}")
