"""CPU topology of a compute node: which logical CPUs share a physical core, a socket, a NUMA node.

Read from sysfs on the node itself (`read_sysfs`) or from `lscpu -p=CPU,CORE,SOCKET,NODE` output
recorded there (`parse_lscpu`), so a placement can be planned and tested away from the cluster.

- SMT: logical CPUs with the same (socket, core) are threads of one physical core. lscpu numbers
  cores across the machine, sysfs per socket; the pair is unique in both.
- Offline CPUs (`lscpu -a -p`, or `/sys/devices/system/cpu/online`) are kept with `online=False`
  and core/socket/node -1 when unknown (the kernel drops an offline CPU's topology); domains
  leave them out.
- No NUMA information (empty NODE column, no /sys/devices/system/node): node = socket.
- Sub-NUMA clustering (SNC, NPS): several nodes per socket, each its own domain.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from data.errors import InputError

LSCPU_HINT = "record it on the compute node with: lscpu -p=CPU,CORE,SOCKET,NODE"
DEFAULT_COLUMNS = ("cpu", "core", "socket", "node", "online")  # header-less files: the order we ask lscpu for


@dataclass(frozen=True)
class Cpu:
    id: int  # logical CPU number
    core: int  # physical core id, unique per socket: (socket, core) is the key of a physical core
    socket: int
    node: int  # NUMA node; equals socket when the machine reports no NUMA info
    online: bool = True


@dataclass(frozen=True)
class Topology:
    cpus: tuple[Cpu, ...]
    source: str  # where it was read, for errors and the plan JSON

    def domains(self, per: str) -> dict[int, list[Cpu]]:
        """Online CPUs grouped by NUMA node (per="numa") or socket (per="socket"), ids ascending."""
        if per not in ("numa", "socket"):
            raise InputError(f"per must be numa or socket, got {per!r}")
        groups: dict[int, list[Cpu]] = {}
        for cpu in sorted(self.cpus, key=lambda c: c.id):
            if cpu.online:
                groups.setdefault(cpu.node if per == "numa" else cpu.socket, []).append(cpu)
        return dict(sorted(groups.items()))

    def physical(self, cpus: Iterable[Cpu]) -> list[Cpu]:
        """The first (lowest id) logical CPU of each physical core among `cpus`."""
        first: dict[tuple[int, int], Cpu] = {}
        for cpu in sorted(cpus, key=lambda c: c.id):
            first.setdefault((cpu.socket, cpu.core), cpu)
        return list(first.values())

    def within(self, allowed: Iterable[int]) -> "Topology":
        """The CPUs outside `allowed` (a Slurm or container cpuset) taken as offline: no rank is placed there."""
        allowed = set(allowed)
        cpus = tuple(cpu if cpu.id in allowed else dataclasses.replace(cpu, online=False) for cpu in self.cpus)
        return Topology(cpus, f"{self.source} within the {len(allowed)} CPUs this process may use")

    def siblings(self, cpus: Iterable[Cpu]) -> list[Cpu]:
        """The other SMT threads among `cpus`: all but the first of each physical core."""
        cpus = list(cpus)
        firsts = {cpu.id for cpu in self.physical(cpus)}
        return sorted((cpu for cpu in cpus if cpu.id not in firsts), key=lambda c: c.id)


def parse_cpulist(text: str, where: str = "cpulist") -> list[int]:
    """Linux cpulist ("0-5,12-17", "" for none) -> sorted CPU numbers."""
    ids: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not m or (m[2] and int(m[2]) < int(m[1])):
            raise InputError(f"{where}: {text.strip()!r} is not a CPU list like 0-5,12-17")
        ids.update(range(int(m[1]), int(m[2] or m[1]) + 1))
    return sorted(ids)


def format_cpulist(ids: Iterable[int]) -> str:
    """CPU numbers -> the shortest Linux cpulist, e.g. [0, 1, 2, 5] -> "0-2,5"."""
    runs: list[list[int]] = []
    for i in sorted(set(ids)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def _header(line: str) -> list[str] | None:
    """The column names of lscpu's last comment line ("# CPU,Core,Socket,Node"), else None."""
    names = [name.strip().lower() for name in line.lstrip("#").split(",")]
    return names if names[0] == "cpu" else None


def parse_lscpu(text: str, source: str) -> Topology:
    """`lscpu -p=CPU,CORE,SOCKET,NODE` output (also `-a` with or without ONLINE, and plain `lscpu -p`).

    Columns are taken from lscpu's header comment, else assumed in the order above. lscpu prints
    an empty field ("-" with --physical) for what it does not know: an offline CPU's core, socket
    and node, and the node of every CPU on a machine without NUMA.
    """
    columns: list[str] = list(DEFAULT_COLUMNS)
    rows: list[tuple[int, dict[str, str]]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{source}:{lineno}"
        if not line.strip():
            continue
        if line.startswith("#"):
            columns = _header(line) or columns
            if not {"cpu", "core", "socket"} <= set(columns):
                raise InputError(f"{where}: the header needs CPU, Core and Socket columns; {LSCPU_HINT}")
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 3 or len(fields) > len(columns):
            raise InputError(f"{where}: expected {','.join(columns[:4]).upper()} fields, got {line.strip()!r}; "
                             f"{LSCPU_HINT}")
        rows.append((lineno, dict(zip(columns, fields))))
    if not rows:
        raise InputError(f"{source}: no CPU lines; {LSCPU_HINT}")

    def number(value: str, name: str, where: str) -> int | None:
        if value in ("", "-"):
            return None
        if not value.isdigit():
            raise InputError(f"{where}: {name} {value!r} is not a number; {LSCPU_HINT}")
        return int(value)

    cpus: dict[int, Cpu] = {}
    nodeless: list[int] = []  # online CPUs without a node: fine when all are, ambiguous when some are
    for lineno, row in rows:
        where = f"{source}:{lineno}"
        cpu_id = number(row["cpu"], "CPU", where)
        core, socket = number(row["core"], "CORE", where), number(row["socket"], "SOCKET", where)
        node = number(row.get("node", ""), "NODE", where)
        flag = row.get("online", "").upper()
        if flag not in ("", "Y", "N", "YES", "NO"):
            raise InputError(f"{where}: ONLINE {row['online']!r} is not Y or N")
        online = flag.startswith("Y") if flag else core is not None  # lscpu knows no core of an offline CPU
        if cpu_id is None or cpu_id in cpus:
            raise InputError(f"{where}: {'duplicate' if cpu_id is not None else 'missing'} CPU number")
        if online and (core is None or socket is None):
            raise InputError(f"{where}: online CPU {cpu_id} has no CORE or SOCKET; {LSCPU_HINT}")
        if online and node is None:
            nodeless.append(cpu_id)
        cpus[cpu_id] = Cpu(cpu_id, -1 if core is None else core, -1 if socket is None else socket,
                           -1 if node is None else node, online)
    online_ids = [c.id for c in cpus.values() if c.online]
    if not online_ids:
        raise InputError(f"{source}: no online CPU")
    if nodeless and len(nodeless) < len(online_ids):
        raise InputError(f"{source}: CPUs {format_cpulist(nodeless)} have no NODE but others do; {LSCPU_HINT}")
    if nodeless:
        cpus = {i: Cpu(c.id, c.core, c.socket, c.socket if c.online else -1, c.online) for i, c in cpus.items()}
    return Topology(tuple(sorted(cpus.values(), key=lambda c: c.id)), source)


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read a number ({e})") from None


def read_sysfs(root: Path = Path("/sys")) -> Topology:
    """The running machine's topology from sysfs (`root` is for tests: a fake tree)."""
    system = Path(root) / "devices" / "system"
    cpu_dir = system / "cpu"
    numbered = {int(p.name[3:]): p for p in cpu_dir.glob("cpu*") if re.fullmatch(r"cpu\d+", p.name)}
    if not numbered:
        raise InputError(f"{cpu_dir}: no cpuN directories")
    online_file = cpu_dir / "online"
    online = set(parse_cpulist(online_file.read_text(), str(online_file))) if online_file.exists() else set(numbered)
    node_of = {}
    for node_path in system.glob("node/node*/cpulist"):
        node = int(node_path.parent.name[4:])
        node_of.update(dict.fromkeys(parse_cpulist(node_path.read_text(), str(node_path)), node))
    cpus = []
    for cpu_id, path in sorted(numbered.items()):
        topo = path / "topology"
        if cpu_id not in online and not (topo / "core_id").exists():  # offline: the kernel removed its topology
            cpus.append(Cpu(cpu_id, -1, -1, -1, online=False))
            continue
        # Some ARM firmware reports physical_package_id -1 for a single package.
        core, socket = _read_int(topo / "core_id"), max(_read_int(topo / "physical_package_id"), 0)
        if node_of and cpu_id in online and cpu_id not in node_of:
            raise InputError(f"{system / 'node'}: online CPU {cpu_id} is in no node's cpulist")
        cpus.append(Cpu(cpu_id, core, socket, node_of.get(cpu_id, socket if not node_of else -1), cpu_id in online))
    if not any(c.online for c in cpus):
        raise InputError(f"{online_file}: no online CPU")
    return Topology(tuple(cpus), str(system))


def load_topology(path: str | Path | None = None) -> Topology:
    """This machine's topology within this process's CPU affinity (path None), or the one recorded in an lscpu -p
    file (another node's: taken whole)."""
    if path is None:
        return read_sysfs().within(os.sched_getaffinity(0))
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: topology file not found; {LSCPU_HINT}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the topology file ({e})") from None
    return parse_lscpu(text, str(path))
