"""Where Ray Train's workers go: one per NUMA domain of each node, pinned by node label (cluster/ray_workers.py)."""

import pytest

from cluster.ray_workers import NODE_ID_LABEL, plan_workers
from data.errors import InputError


def nodes_of(plan):
    return [selector[NODE_ID_LABEL] for selector in plan.label_selector]


def test_one_worker_per_domain_of_every_node_with_the_smallest_domain_s_cores():
    # two 2-socket nodes of 16 + 16 cores, one 1-socket node of 8 cores
    plan = plan_workers({"a": 32, "b": 32, "c": 8}, {"a": [16, 16], "b": [16, 16], "c": [8]}, "numa", None, None)
    assert plan.cpus_per_worker == 8 and nodes_of(plan) == ["a", "a", "b", "b", "c"]
    assert plan.line() == "5 worker(s) x 8 CPU (2 on node a, 2 on node b, 1 on node c)"


def test_a_node_offering_fewer_cpus_than_its_domains_gets_what_fits(caplog):
    plan = plan_workers({"a": 16, "b": 24}, {"a": [16, 16], "b": [16, 16]}, "numa", None, 16)
    assert nodes_of(plan) == ["a", "b"]
    assert "room for 1 worker(s)" in caplog.text


def test_explicit_workers_are_placed_by_ray():
    plan = plan_workers({"a": 2}, {}, "numa", 2, 1)
    assert (plan.num_workers, plan.cpus_per_worker, plan.label_selector) == (2, 1, None)


@pytest.mark.parametrize("node_cpus, layout, workers, cpus, message", [
    ({}, {}, None, None, "no alive node with CPUs"),
    ({"a": 2}, {}, 0, 1, "at least 1"),
    ({"a": 2}, {}, 1, 4, "no Ray node has 4 CPUs"),
    ({"a": 2, "b": 2}, {}, 3, 2, "3 workers x 2 CPUs need more than the cluster's 4 CPUs"),
    ({"a": 4}, {"a": [8]}, None, None, "no Ray node has 8 CPUs"),
])
def test_plans_that_cannot_run_are_one_line_errors(node_cpus, layout, workers, cpus, message):
    with pytest.raises(InputError, match=message):
        plan_workers(node_cpus, layout, "numa", workers, cpus)
