"""A throwaway Slurm for tests: munged, slurmctld and slurmd from Debian's packages, all state in a temp dir; one
node on this machine, or one node per network namespace (tests/support/netns.py hosts).

What made slurmd run in a container without systemd, cgroup write access or a Slurm install of its own:
proctrack/linuxproc, task/none, jobacct_gather/none and no accounting (nothing touches cgroups); the daemons in the
foreground (`munged -F`, `slurmctld -D -i`, `slurmd -D`) as children of the test; a private munge key and socket
(`AuthInfo=socket=...`); free ports; `SLURM_CONF` pointing every command at the generated slurm.conf. The node is
the real short hostname (what slurmd looks up, and what `scontrol show hostnames` hands to torchrun) with
NodeAddr=127.0.0.1.

On hosts (network namespaces, which share the file system, process table and hostname) the nodes are n1..nN at
the hosts' addresses, slurmctld runs on n1 and clients run there too (the namespaces are not reachable from this
machine's own network). Each daemon and client starts in its host's namespace under `unshare --uts --mount` with
the hostname set to its node name and a generated hosts file (every node's address) bound over /etc/hosts, so
the name slurmctld checks (SlurmctldHost), `scontrol show hostnames` and torchrun's rendezvous resolve to the
namespace addresses, and torchrun on n1 recognises n1 as itself and hosts the c10d store. Debian builds slurmd
with multiple-slurmd support (`scontrol show config`: MULTIPLE_SLURMD = Yes): `slurmd -N <node>` runs as that
node, and the node name (%n) in the spool dir, pid and log file keeps the nodes' files apart on the shared file
system. On one network each would need its own Port= (a second slurmd fails with "Unable to bind listen port
(...): Address already in use"); each namespace has its own, so all share SlurmdPort. (The namespaces start
with nsenter, not `ip netns exec`: that remounts /sys, which hides /sys/fs/cgroup, and slurmd then stops with
"No filesystem mounted on /sys/fs/cgroup".) munged runs on n1 and serves every host: its socket is a file,
reachable from any network namespace, as a key shared by all nodes would be. CommunicationParameters=NoInAddrAny
binds each slurmd to its node's address as the hosts file gives it (slurmctld 22.05 still listens on every
address of n1's namespace: its loopback and eth0).

Cleanup: jobs are cancelled, the daemons terminated, then any process still carrying this cluster's SLURM_CONF in
its environment (slurmstepd and the job's processes inherit it) is killed by pid. The daemons also get
PR_SET_PDEATHSIG, so they die with the test process even if it is killed.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.commands import free_port
from tests.support.netns import Host

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("munge", "sbatch", "sinfo", "squeue", "scancel", "scontrol", "srun")
PACKAGES = ("slurm-wlm", "munge")


class Unavailable(Exception):
    """Slurm cannot run here; the message says exactly why (for pytest.skip)."""


def _which(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)),
                                      None)


def missing_binaries() -> list[str]:
    return [name for name in DAEMONS + CLIENTS if _which(name) is None]


def ensure_installed() -> None:
    """Install Debian's slurm-wlm and munge when missing: only as root with apt-get; otherwise Unavailable."""
    missing = missing_binaries()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable(f"Slurm is not installed (missing {', '.join(missing)}) and installing it needs root and "
                          f"apt-get: apt-get install {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        try:
            result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"{' '.join(command)} timed out") from None
        if result.returncode != 0:
            raise Unavailable(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-1500:]}")
    if missing := missing_binaries():
        raise Unavailable(f"after apt-get install {' '.join(PACKAGES)}, still missing: {', '.join(missing)}")


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


class SlurmCluster:
    """start() stands it up and waits for every node to be idle; stop() leaves nothing running. Use as a context.
    Without hosts, one node on this machine; with hosts, node n<i + 1> on hosts[i], slurmctld on the first."""

    def __init__(self, root: Path | None = None, hosts: list[Host] | None = None):
        # Short path: the munge socket must fit in sockaddr_un (108 bytes).
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="fwslurm-", dir="/tmp"))
        self.owns_root = root is None
        self.conf = self.root / "slurm.conf"
        self.hosts = hosts or []
        if self.hosts:
            self.nodes = [f"n{i + 1}" for i in range(len(self.hosts))]
            self.addresses = [host.address for host in self.hosts]
        else:
            self.nodes, self.addresses = [socket.gethostname().split(".")[0]], ["127.0.0.1"]
        self.node = self.nodes[0]  # slurmctld's, where the clients run
        self.cpus = os.cpu_count() or 1
        self.hardware = f"CPUs={self.cpus}"
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """The environment for Slurm commands: this cluster's SLURM_CONF, no SLURM_* from an enclosing job."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf)
        return env

    def on(self, node: int, argv: list[str]) -> list[str]:
        """argv run on nodes[node]: here, or in its host's namespace named as the node, with the cluster's hosts."""
        if not self.hosts:
            return argv
        # nsenter, not the host's `ip netns exec` (it hides /sys/fs/cgroup from slurmd: see the docstring)
        return ["nsenter", f"--net=/run/netns/{self.hosts[node].name}", "unshare", "--uts", "--mount", "sh", "-c",
                'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"',
                "sh", self.nodes[node], str(self.root / "hosts"), *argv]

    def command(self, *args, timeout=30, env=None, cwd=None) -> subprocess.CompletedProcess:
        """A client command on the first node (slurmctld's); env defaults to self.env."""
        return subprocess.run(self.on(0, list(args)), capture_output=True, text=True, env=env or self.env,
                              cwd=cwd, timeout=timeout)

    def _spawn(self, name: str, *args: str, node: int = 0) -> None:
        key = f"{name}-{self.nodes[node]}" if name == "slurmd" else name
        log = open(self.root / "log" / f"{key}.out", "wb")
        self.processes[key] = subprocess.Popen(self.on(node, [_which(name), *args]), stdout=log,
                                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                                               cwd=self.root, preexec_fn=_die_with_parent)
        log.close()

    def diagnostics(self) -> str:
        parts = []
        for name, process in self.processes.items():
            state = "running" if process.poll() is None else f"exited {process.returncode}"
            parts.append(f"--- {name} ({state}):\n{_tail(self.root / 'log' / f'{name}.out')}")
        for log in sorted((self.root / "log").glob("slurm*.log")):
            parts.append(f"--- {log.name}:\n{_tail(log)}")
        return "\n".join(parts)

    def _fail(self, what: str) -> None:
        text = f"{what}\n{self.diagnostics()}"
        self.stop()
        raise Unavailable(text)

    def start(self, timeout: float = 60) -> "SlurmCluster":
        ensure_installed()
        if os.geteuid() != 0:
            raise Unavailable("slurmd must run as root to launch jobs as the submitting user (not root here)")
        if self.hosts and not (shutil.which("nsenter") and shutil.which("unshare")):
            raise Unavailable("needs util-linux's nsenter and unshare to start each node in its host")
        if not self.hosts:
            try:
                socket.gethostbyname(self.node)
            except OSError as e:
                raise Unavailable(f"the hostname {self.node!r} does not resolve ({e}); torchrun's rendezvous needs it")
        self._detect_hardware()
        for sub in ("munge", "state", "log", *(f"spool/{node}" for node in self.nodes)):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "hosts").write_text("127.0.0.1 localhost\n" + "".join(
            f"{address} {node}\n" for node, address in zip(self.nodes, self.addresses)))
        self.root.chmod(0o755)
        (self.root / "munge").chmod(0o755)  # the socket must be reachable; the key stays 0600
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        munge_socket = self.root / "munge" / "munge.socket"
        ctld_port, slurmd_port = free_port(), free_port()
        nodes = "".join(f"NodeName={node} NodeAddr={address} {self.hardware} RealMemory=100 State=UNKNOWN\n"
                        for node, address in zip(self.nodes, self.addresses))
        self.conf.write_text(f"""\
ClusterName=fwtest
SlurmctldHost={self.node}({self.addresses[0]})
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool/%n
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd-%n.pid
SlurmctldLogFile={self.root}/log/slurmctld.log
SlurmdLogFile={self.root}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=5
InactiveLimit=0
{"CommunicationParameters=NoInAddrAny" if self.hosts else ""}
{nodes}PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        self._spawn("munged", "-F", "--force", f"--key-file={key}", f"--socket={munge_socket}",
                    f"--pid-file={self.root}/munge/munged.pid", f"--seed-file={self.root}/munge/munged.seed",
                    f"--log-file={self.root}/log/munged.log")
        deadline = time.monotonic() + 10
        while not munge_socket.exists():
            if self.processes["munged"].poll() is not None or time.monotonic() > deadline:
                self._fail("munged did not come up")
            time.sleep(0.1)
        self._spawn("slurmctld", "-D", "-i")
        for node, name in enumerate(self.nodes):
            self._spawn("slurmd", "-D", "-N", name, node=node)
        deadline = time.monotonic() + timeout
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    self._fail(f"{name} exited with {process.returncode}")
            result = self.command("sinfo", "-h", "-N", "-o", "%N %T")
            states = dict(line.split() for line in result.stdout.splitlines() if len(line.split()) == 2)
            if all(states.get(node) == "idle" for node in self.nodes):
                return self
            if time.monotonic() > deadline:
                self._fail(f"nodes {self.nodes} not all idle after {timeout:.0f}s "
                           f"(sinfo: {(result.stdout or result.stderr).strip()!r})")
            time.sleep(0.5)

    def _detect_hardware(self) -> None:
        """The node's CPUs and layout as slurmd itself sees them (`slurmd -C`): a mismatch makes the node INVAL."""
        try:
            line = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, env=self.env,
                                  timeout=30).stdout.splitlines()[0]
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
            self.cpus = int(fields["CPUs"])
            self.hardware = " ".join(f"{k}={fields[k]}" for k in keys if k in fields)
        except (subprocess.SubprocessError, OSError, IndexError, KeyError, ValueError):
            pass  # keep CPUs=os.cpu_count()

    def _our_pids(self) -> list[int]:
        """Processes whose environment carries this cluster's SLURM_CONF: what it started, and nothing else."""
        needle = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if needle in (entry / "environ").read_bytes().split(b"\0"):
                        pids.append(int(entry.name))
                except OSError:
                    pass
        return pids

    def stop(self) -> None:
        if self.processes.get("slurmctld") and self.processes["slurmctld"].poll() is None:
            try:
                jobs = self.command("squeue", "-h", "-o", "%i", timeout=10).stdout.split()
                if jobs:
                    self.command("scancel", "--full", *jobs, timeout=10)
                    deadline = time.monotonic() + 20
                    while self.command("squeue", "-h", "-o", "%i", timeout=10).stdout.split() and \
                            time.monotonic() < deadline:
                        time.sleep(0.5)
            except (subprocess.SubprocessError, OSError):
                pass
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for pid in self._our_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.processes.clear()
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
