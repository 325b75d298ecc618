from pathlib import Path

import pytest

from cluster.topology import Cpu, format_cpulist, load_topology, parse_cpulist, parse_lscpu, read_sysfs
from data.errors import InputError
from tests.support.topology import FIXTURES


def ids(cpus):
    return [cpu.id for cpu in cpus]


def test_cpulist_round_trip():
    assert parse_cpulist("0-5,12-17\n") == [*range(6), *range(12, 18)]
    assert parse_cpulist("3") == [3] and parse_cpulist("") == [] and parse_cpulist("\n") == []
    assert format_cpulist([17, 0, 1, 2, 5, 12, 13]) == "0-2,5,12-13,17"
    assert format_cpulist([]) == ""
    for bad in ("0-", "a", "5-3", "1,,x"):
        with pytest.raises(InputError, match="node0/cpulist"):
            parse_cpulist(bad, "node0/cpulist")


def test_xeon_gold_6128():
    topo = load_topology(FIXTURES / "xeon_gold_6128.lscpu")
    assert len(topo.cpus) == 24 and all(cpu.online for cpu in topo.cpus)
    assert topo.source.endswith("xeon_gold_6128.lscpu")
    numa = topo.domains("numa")
    assert {d: ids(cpus) for d, cpus in numa.items()} == {0: [*range(6), *range(12, 18)],
                                                         1: [*range(6, 12), *range(18, 24)]}
    assert ids(topo.physical(numa[0])) == list(range(6)) and ids(topo.siblings(numa[0])) == list(range(12, 18))
    assert ids(topo.physical(numa[1])) == list(range(6, 12))
    assert topo.domains("socket") == numa
    with pytest.raises(InputError, match="numa or socket"):
        topo.domains("core")


def test_snc2_has_two_nodes_per_socket():
    topo = load_topology(FIXTURES / "snc2_2socket.lscpu")
    numa, sockets = topo.domains("numa"), topo.domains("socket")
    assert {d: ids(topo.physical(cpus)) for d, cpus in numa.items()} == {
        0: [0, 1, 2, 3], 1: [4, 5, 6, 7], 2: [8, 9, 10, 11], 3: [12, 13, 14, 15]}
    assert ids(numa[1]) == [4, 5, 6, 7, 20, 21, 22, 23]
    assert {d: ids(topo.physical(cpus)) for d, cpus in sockets.items()} == {0: list(range(8)), 1: list(range(8, 16))}


def test_smt_off_has_no_siblings():
    topo = load_topology(FIXTURES / "smt_off.lscpu")
    for cpus in topo.domains("numa").values():
        assert topo.physical(cpus) == cpus and topo.siblings(cpus) == []


def test_offline_cpus_are_left_out_of_domains():
    topo = load_topology(FIXTURES / "offline.lscpu")
    assert [cpu.id for cpu in topo.cpus if not cpu.online] == [3, 6]
    assert Cpu(3, -1, -1, -1, online=False) in topo.cpus
    (domain,) = topo.domains("numa").values()
    assert ids(domain) == [0, 1, 2, 4, 5, 7]
    assert ids(topo.physical(domain)) == [0, 1, 2, 7] and ids(topo.siblings(domain)) == [4, 5]
    # `lscpu -a -p=CPU,CORE,SOCKET,NODE` (no ONLINE column) says offline with empty fields only.
    no_flag = parse_lscpu("# CPU,Core,Socket,Node\n0,0,0,0\n1,,,\n", "x")
    assert [cpu.online for cpu in no_flag.cpus] == [True, False]


def test_no_numa_means_node_is_socket():
    topo = load_topology(FIXTURES / "no_numa.lscpu")
    assert all(cpu.node == cpu.socket for cpu in topo.cpus)
    assert {d: ids(cpus) for d, cpus in topo.domains("numa").items()} == {0: [0, 1, 4, 5], 1: [2, 3, 6, 7]}


def test_this_machine():
    topo = load_topology(FIXTURES / "this_machine.lscpu")
    assert topo.cpus == (Cpu(0, 0, 0, 0), Cpu(1, 1, 0, 0))
    assert list(topo.domains("numa")) == [0]


def test_other_lscpu_layouts():
    # No header: the columns we ask for, in order. Plain `lscpu -p` adds cache columns after an empty one.
    assert parse_lscpu("0,0,0,0\n1,0,0,0\n", "x").cpus == (Cpu(0, 0, 0, 0), Cpu(1, 0, 0, 0))
    plain = "# CPU,Core,Socket,Node,,L1d,L1i,L2,L3\n0,0,0,0,,0,0,0,0\n1,1,0,0,,1,1,1,0\n"
    assert parse_lscpu(plain, "x").cpus == (Cpu(0, 0, 0, 0), Cpu(1, 1, 0, 0))
    # --physical prints "-" for unknown ids.
    assert parse_lscpu("# CPU,Core,Socket,Node\n0,0,0,-\n", "x").cpus == (Cpu(0, 0, 0, 0),)


@pytest.mark.parametrize("text, needle", [
    ("0,0,0,0\n1,x,0,0\n", "f:2: CORE 'x' is not a number"),
    ("0,0,0,0\n0,1,0,0\n", "f:2: duplicate CPU"),
    ("0,0\n", "f:1: expected CPU,CORE,SOCKET,NODE"),
    ("# CPU,Node\n0,0\n", "f:1: the header needs CPU, Core and Socket"),
    ("# CPU,Core,Socket,Node\n0,0,0,0\n1,1,0,\n", "f: CPUs 1 have no NODE"),
    ("# CPU,Core,Socket,Node,Online\n0,0,0,0,maybe\n", "f:2: ONLINE 'maybe'"),
    ("# CPU,Core,Socket,Node,Online\n0,,,,Y\n", "f:2: online CPU 0 has no CORE"),
    ("# CPU,Core,Socket,Node\n0,,,\n", "f: no online CPU"),
    ("# just comments\n", "f: no CPU lines"),
])
def test_bad_lscpu_names_the_line(text, needle):
    with pytest.raises(InputError) as e:
        parse_lscpu(text, "f")
    assert needle in str(e.value)


def test_garbage_and_missing_files():
    with pytest.raises(InputError, match=r"garbage\.lscpu:1: .*lscpu -p=CPU,CORE,SOCKET,NODE"):
        load_topology(FIXTURES / "garbage.lscpu")
    with pytest.raises(InputError, match="none.lscpu: topology file not found"):
        load_topology(FIXTURES / "none.lscpu")


def fake_sysfs(root: Path, cpus: dict[int, tuple[int, int] | None], online: str, nodes: dict[int, str] | None):
    """cpus: id -> (core_id, physical_package_id), None for an offline CPU without a topology dir."""
    system = root / "devices" / "system"
    for cpu, topo in cpus.items():
        (system / "cpu" / f"cpu{cpu}").mkdir(parents=True)
        if topo:
            (system / "cpu" / f"cpu{cpu}" / "topology").mkdir()
            (system / "cpu" / f"cpu{cpu}" / "topology" / "core_id").write_text(f"{topo[0]}\n")
            (system / "cpu" / f"cpu{cpu}" / "topology" / "physical_package_id").write_text(f"{topo[1]}\n")
    (system / "cpu" / "cpufreq").mkdir()  # not a CPU
    (system / "cpu" / "online").write_text(online + "\n")
    for node, cpulist in (nodes or {}).items():
        (system / "node" / f"node{node}").mkdir(parents=True)
        (system / "node" / f"node{node}" / "cpulist").write_text(cpulist + "\n")
    if nodes is not None:
        (system / "node" / "node2").mkdir()  # a memory-only node: no CPUs
        (system / "node" / "node2" / "cpulist").write_text("\n")
    return system


def test_read_sysfs(tmp_path):
    # 2 sockets x 2 cores x 2 threads; sysfs numbers cores per socket (and not always from 0).
    layout = {0: (0, 0), 1: (4, 0), 2: (0, 1), 3: (4, 1), 4: (0, 0), 5: (4, 0), 6: (0, 1), 7: None}
    system = fake_sysfs(tmp_path, layout, "0-6", {0: "0-1,4-5", 1: "2-3,6"})
    topo = read_sysfs(tmp_path)
    assert topo.source == str(system)
    assert topo.cpus[7] == Cpu(7, -1, -1, -1, online=False)
    numa = topo.domains("numa")
    assert {d: ids(cpus) for d, cpus in numa.items()} == {0: [0, 1, 4, 5], 1: [2, 3, 6]}
    assert ids(topo.physical(numa[1])) == [2, 3] and ids(topo.siblings(numa[1])) == [6]


def test_read_sysfs_without_numa(tmp_path):
    fake_sysfs(tmp_path, {0: (0, 0), 1: (0, 1)}, "0-1", None)
    assert {d: ids(cpus) for d, cpus in read_sysfs(tmp_path).domains("numa").items()} == {0: [0], 1: [1]}


def test_read_sysfs_errors(tmp_path):
    with pytest.raises(InputError, match="no cpuN directories"):
        read_sysfs(tmp_path)
    fake_sysfs(tmp_path, {0: (0, 0), 1: (1, 0)}, "0-1", {0: "0"})
    with pytest.raises(InputError, match="online CPU 1 is in no node"):
        read_sysfs(tmp_path)


def test_read_sysfs_of_this_machine():
    if not Path("/sys/devices/system/cpu/online").exists():
        pytest.skip("no sysfs")
    topo = load_topology()
    assert topo.source.startswith("/sys/devices/system within the") and topo.domains("numa")
