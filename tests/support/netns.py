"""Test hosts on one machine: Linux network namespaces joined by veth pairs to a switch, links shaped with tc.

    with Network(2, Link(gbit=1)) as net:
        a, b = net.hosts
        b.run(["ping", "-c", "1", a.address])
        server = a.popen([...])                 # a process on host A, reachable at a.address

Each host is a namespace with its own loopback and one interface, `eth0`, at 10.88.0.<i + 1>/24. Its veth peer
sits in a switch namespace holding a bridge, so no host's traffic crosses the machine's own network stack (its
firewall or container rules) and several networks can exist at once (every name carries a random tag). Shaping
is the egress qdisc of each host's eth0 (tbf for the rate, netem for an added delay where the kernel has it), so a
link between two hosts is shaped in both directions and a delay counts twice in a round trip. Namespaces share the file system and process table:
the same run dir is at the same path on every host, as a shared mount gives a real cluster.

Needs root and iproute2 (`ip`, `tc`); `require_namespaces()` skips a test with the reason where they cannot be
made. Leaving the block kills every process still in the hosts and removes the namespaces.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass
from functools import cache

SUBNET = "10.88.0"


@dataclass(frozen=True)
class Link:
    """How each host's link to the switch is shaped: a rate in Gbit/s (a token bucket, tc's tbf) and an added
    one-way delay in microseconds (tc's netem, where the kernel has it: `netem_support()`); None leaves either
    as the veth's own (tens of Gbit/s, tens of microseconds)."""

    gbit: float | None = None
    delay_us: int | None = None

    def __str__(self) -> str:
        rate = f"{self.gbit:g} Gbit/s" if self.gbit else "unshaped rate"
        return f"{rate}, {f'+{self.delay_us} us one-way delay' if self.delay_us else 'no added delay'}"


def _ip(*args: str, namespace: str | None = None) -> None:
    command = ["ip", *(["-n", namespace] if namespace else []), *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise OSError(f"{' '.join(command)}: {result.stderr.strip()}")


@cache
def namespace_support() -> str | None:
    """None where network namespaces can be made here, else why not (one line)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not (shutil.which("ip") and shutil.which("tc")):
        return "needs iproute2 (ip and tc)"
    probe = f"fwprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
        _ip("link", "set", "lo", "up", namespace=probe)
    except OSError as e:
        return f"cannot make a network namespace: {e}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def require_namespaces() -> None:
    """Skip the calling test, with the reason, where network namespaces cannot be made."""
    import pytest

    reason = namespace_support()
    if reason:
        pytest.skip(reason)


@dataclass(frozen=True)
class Host:
    name: str  # its network namespace
    address: str  # eth0's IPv4 address
    interface: str = "eth0"

    def command(self, argv: list[str]) -> list[str]:
        """argv run on this host."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv), **kwargs)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(argv), **kwargs)

    def pids(self) -> list[int]:
        """The processes whose network namespace is this host's."""
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def shape(self, link: Link) -> None:
        """Replace this host's egress shaping (Link() removes it)."""
        tc = ["tc", "-n", self.name, "qdisc"]
        subprocess.run([*tc, "del", "dev", self.interface, "root"], capture_output=True)
        parent = ["root"]
        if link.delay_us:
            if netem_support():
                raise OSError(f"cannot add a delay: {netem_support()}")
            _tc([*tc, "add", "dev", self.interface, "root", "handle", "1:", "netem", "delay", f"{link.delay_us}us",
                 "limit", "100000"])
            parent = ["parent", "1:1"]
        if link.gbit:
            # the bucket holds 2 ms at the rate: a timer tick's worth and more, so the rate holds at 10 Gbit/s
            burst = max(64 * 1024, int(link.gbit * 1e9 / 8 * 0.002))
            _tc([*tc, "add", "dev", self.interface, *parent, "tbf", "rate", f"{link.gbit:g}gbit", "burst",
                 str(burst), "latency", "20ms"])


def _tc(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise OSError(f"{' '.join(command)}: {result.stderr.strip()}")


@cache
def netem_support() -> str | None:
    """None where tc's netem (added delay) works here, else why not: some kernels (this project's CI VMs among
    them) are built without sch_netem, and then only the rate can be shaped."""
    if namespace_support():
        return namespace_support()
    probe = f"fwprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
        _ip("link", "add", "fwa", "type", "veth", "peer", "name", "fwb", namespace=probe)
        _tc(["tc", "-n", probe, "qdisc", "add", "dev", "fwa", "root", "netem", "delay", "10us"])
    except OSError as e:
        return f"no netem qdisc in this kernel ({os.uname().release}): {e}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Network:
    """`count` hosts on one switch, each link shaped as `link`; a context manager that builds and removes them."""

    def __init__(self, count: int, link: Link = Link()):
        if not 1 <= count <= 200:
            raise ValueError(f"1 to 200 hosts, got {count}")
        self.tag = secrets.token_hex(3)
        self.switch = f"fw{self.tag}sw"
        self.hosts = [Host(f"fw{self.tag}h{i}", f"{SUBNET}.{i + 1}") for i in range(count)]
        self.link = link

    def __enter__(self) -> "Network":
        try:
            _ip("netns", "add", self.switch)
            _ip("link", "add", "br0", "type", "bridge", namespace=self.switch)
            _ip("link", "set", "br0", "up", namespace=self.switch)
            for i, host in enumerate(self.hosts):
                _ip("netns", "add", host.name)
                _ip("link", "set", "lo", "up", namespace=host.name)
                _ip("link", "add", f"p{i}", "type", "veth", "peer", "name", host.interface, "netns", host.name,
                    namespace=self.switch)
                _ip("link", "set", f"p{i}", "master", "br0", "up", namespace=self.switch)
                _ip("addr", "add", f"{host.address}/24", "dev", host.interface, namespace=host.name)
                _ip("link", "set", host.interface, "up", namespace=host.name)
                host.shape(self.link)
        except BaseException:
            self.__exit__()
            raise
        return self

    def shape(self, link: Link) -> None:
        """Reshape every host's link."""
        self.link = link
        for host in self.hosts:
            host.shape(link)

    def __exit__(self, *exc_info) -> None:
        for host in self.hosts:
            host.kill_all()
        for name in [host.name for host in self.hosts] + [self.switch]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
