import json
import logging
import os

import pytest

from cluster.placement import RankBinding, bind_local_rank, plan_json, plan_ranks
from cluster.topology import Cpu, Topology, load_topology
from data.errors import InputError
from tests.support.commands import assert_one_line_error, fightwatch
from tests.support.topology import FIXTURES

XEON = FIXTURES / "xeon_gold_6128.lscpu"


def topology(name: str) -> Topology:
    return load_topology(FIXTURES / f"{name}.lscpu")


def layout(bindings):
    return [(b.domain, list(b.cpus), list(b.ccl_worker_cpus)) for b in bindings]


def test_xeon_one_rank_per_numa_node_on_physical_cores():
    bindings = plan_ranks(topology("xeon_gold_6128"))
    assert layout(bindings) == [(0, [0, 1, 2, 3, 4, 5], []), (1, [6, 7, 8, 9, 10, 11], [])]
    assert [b.local_rank for b in bindings] == [0, 1]
    assert bindings[1].env() == {"OMP_NUM_THREADS": "6", "CCL_WORKER_COUNT": "1"}
    assert plan_ranks(topology("xeon_gold_6128"), per="socket") == bindings


def test_xeon_logical_cores_add_the_siblings():
    bindings = plan_ranks(topology("xeon_gold_6128"), use_logical_cores=True)
    assert layout(bindings) == [(0, [*range(6), *range(12, 18)], []), (1, [*range(6, 12), *range(18, 24)], [])]
    assert bindings[0].env()["OMP_NUM_THREADS"] == "12"


def test_a_cpuset_keeps_ranks_on_the_cpus_the_job_may_use():
    """A Slurm job given cores 3-8 of the Xeon: node0 keeps 3-5, node1 6-8, and nothing outside is bound."""
    topo = load_topology(XEON).within(range(3, 9))
    assert [b.cpus for b in plan_ranks(topo)] == [(3, 4, 5), (6, 7, 8)]
    assert [b.cpus for b in plan_ranks(load_topology(XEON).within(range(6, 12)))] == [(6, 7, 8, 9, 10, 11)]
    assert "within the 6 CPUs" in topo.source


def test_ccl_workers_take_the_last_cores():
    bindings = plan_ranks(topology("xeon_gold_6128"), ccl_workers=2)
    assert layout(bindings) == [(0, [0, 1, 2, 3], [4, 5]), (1, [6, 7, 8, 9], [10, 11])]
    env = bindings[1].env()
    assert (env["OMP_NUM_THREADS"], env["CCL_WORKER_COUNT"], env["CCL_WORKER_AFFINITY"]) == ("4", "2", "10,11")
    # With siblings, a reserved core's siblings stay idle: the worker spins on its first thread.
    logical = plan_ranks(topology("xeon_gold_6128"), use_logical_cores=True, ccl_workers=1)
    assert layout(logical)[0] == (0, [0, 1, 2, 3, 4, 12, 13, 14, 15, 16], [5])


def test_other_rank_counts_split_the_cores():
    xeon = topology("xeon_gold_6128")
    # A multiple of the domains: chunks stay inside them.
    assert layout(plan_ranks(xeon, nproc_per_node=4)) == [
        (0, [0, 1, 2], []), (0, [3, 4, 5], []), (1, [6, 7, 8], []), (1, [9, 10, 11], [])]
    assert layout(plan_ranks(xeon, nproc_per_node=12))[-1] == (1, [11], [])
    # Otherwise contiguous over the node; a straddling rank is filed under its larger share.
    assert layout(plan_ranks(xeon, nproc_per_node=5)) == [
        (0, [0, 1, 2], []), (0, [3, 4, 5], []), (1, [6, 7], []), (1, [8, 9], []), (1, [10, 11], [])]
    assert layout(plan_ranks(xeon, nproc_per_node=1)) == [(0, list(range(12)), [])]


def test_snc2_numa_and_socket_domains():
    snc = topology("snc2_2socket")
    assert layout(plan_ranks(snc)) == [(d, list(range(4 * d, 4 * d + 4)), []) for d in range(4)]
    assert layout(plan_ranks(snc, per="socket")) == [(0, list(range(8)), []), (1, list(range(8, 16)), [])]
    assert plan_ranks(snc, use_logical_cores=True)[3].cpus == (12, 13, 14, 15, 28, 29, 30, 31)


def test_smt_off_offline_and_no_numa():
    smt_off = topology("smt_off")
    assert plan_ranks(smt_off, use_logical_cores=True) == plan_ranks(smt_off)
    assert layout(plan_ranks(smt_off)) == [(0, [0, 1, 2, 3], []), (1, [4, 5, 6, 7], [])]
    assert layout(plan_ranks(topology("offline"))) == [(0, [0, 1, 2, 7], [])]
    assert layout(plan_ranks(topology("offline"), use_logical_cores=True)) == [(0, [0, 1, 2, 4, 5, 7], [])]
    assert layout(plan_ranks(topology("no_numa"))) == [(0, [0, 1], []), (1, [2, 3], [])]


def test_this_machine():
    here = topology("this_machine")
    assert layout(plan_ranks(here)) == [(0, [0, 1], [])]
    assert layout(plan_ranks(here, nproc_per_node=2)) == [(0, [0], []), (0, [1], [])]
    with pytest.raises(InputError, match=r"3 ranks per node but .*this_machine.lscpu has 2 physical cores.*"
                                         r"--nproc-per-node"):
        plan_ranks(here, nproc_per_node=3)


def test_impossible_plans():
    here = topology("this_machine")
    with pytest.raises(InputError, match="--nproc-per-node must be at least 1"):
        plan_ranks(here, nproc_per_node=0)
    with pytest.raises(InputError, match="--ccl-workers 2 leaves local rank 0 no compute core"):
        plan_ranks(here, ccl_workers=2)
    with pytest.raises(InputError, match="--ccl-workers must be 0 or more"):
        plan_ranks(here, ccl_workers=-1)
    # 4 ranks fit the node's 4 cores, but 2 per domain do not fit its 1-core domain.
    lopsided = Topology((Cpu(0, 0, 0, 0), Cpu(1, 1, 0, 0), Cpu(2, 2, 0, 0), Cpu(3, 0, 1, 1)), "lopsided")
    with pytest.raises(InputError, match="2 per numa domain, but the smallest domain of lopsided has 1"):
        plan_ranks(lopsided, nproc_per_node=4)
    with pytest.raises(InputError, match="--nnodes must be at least 1"):
        plan_json(here, plan_ranks(here), nnodes=0)


def test_plan_json():
    xeon = topology("xeon_gold_6128")
    plan = plan_json(xeon, plan_ranks(xeon, use_logical_cores=True), nnodes=3)
    assert {k: plan[k] for k in ("source", "per", "nnodes", "ranks_per_node", "world_size")} == {
        "source": str(XEON), "per": "numa", "nnodes": 3, "ranks_per_node": 2, "world_size": 6}
    assert plan["ranks"][1]["cpulist"] == "6-11,18-23" and plan["ranks"][1]["domain"] == 1
    assert plan["ranks"][1]["env"]["OMP_NUM_THREADS"] == "12"
    json.dumps(plan)


def test_bind_local_rank(monkeypatch, caplog):
    torch = pytest.importorskip("torch")
    allowed, threads = os.sched_getaffinity(0), torch.get_num_threads()
    binding = RankBinding(0, 0, (min(allowed),), ())
    for key in binding.env():
        monkeypatch.delenv(key, raising=False)  # restored after the test
    try:
        with caplog.at_level(logging.INFO, logger="cluster.placement"):
            bind_local_rank(binding)
        assert os.sched_getaffinity(0) == {min(allowed)} and torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"
        assert [r.message for r in caplog.records] == [f"local rank 0: 1 threads on CPUs {min(allowed)} (domain 0)"]
    finally:
        os.sched_setaffinity(0, allowed)
        torch.set_num_threads(threads)


@pytest.mark.slow  # the installed command
def test_cli_plan():
    result = fightwatch("plan", "--topology", str(XEON), "--nnodes", "2")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert (plan["world_size"], [r["cpulist"] for r in plan["ranks"]]) == (4, ["0-5", "6-11"])
    assert plan == plan_json(topology("xeon_gold_6128"), plan_ranks(topology("xeon_gold_6128")), 2)


@pytest.mark.slow  # the installed command
def test_cli_plan_errors():
    garbage = FIXTURES / "garbage.lscpu"
    assert_one_line_error(fightwatch("plan", "--topology", str(garbage)), f"{garbage}:1:")
    assert_one_line_error(fightwatch("plan", "--topology", str(FIXTURES / "this_machine.lscpu"),
                                     "--nproc-per-node", "3"), "2 physical cores", "--nproc-per-node")
