"""What keeps a coordinator's cost in step with a fleet of thousands: the dominance
filter (checked against the all-pairs definition), the registry's views of a few agents
and its speed figures (each agent's own)."""

from __future__ import annotations

import numpy as np
import pytest

from splitmq.coordinator.partition.kernels import _undominated
from splitmq.coordinator.registry import Registry
from splitmq.wire import AgentState, AgentStatus, ShardReady


def all_pairs(attributes: np.ndarray, depth: int) -> np.ndarray:
    """The definition: rows that fewer than ``depth`` others beat (no worse anywhere;
    of identical rows the first listed beats the others)."""
    count = len(attributes)
    if count <= depth:
        return np.ones(count, dtype=np.bool_)
    no_worse = (attributes[:, None, :] <= attributes[None, :, :]).all(axis=-1)
    earlier = np.arange(count)[:, None] < np.arange(count)[None, :]
    beats = no_worse & (~no_worse.T | earlier)
    return np.asarray(beats.sum(axis=0) < depth)


@pytest.mark.parametrize("seed", range(40))
def test_the_blocked_dominance_filter_keeps_what_the_definition_keeps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    count, columns, depth = (
        int(rng.integers(1, 900)),
        int(rng.integers(1, 6)),
        int(rng.integers(1, 6)),
    )
    if seed % 2:  # few distinct values: many ties and identical rows
        attributes = rng.integers(0, 4, (count, columns)).astype(float)
    else:
        attributes = rng.random((count, columns))
    if seed % 5 == 0:
        attributes[rng.random((count, columns)) < 0.1] = np.inf
    assert np.array_equal(_undominated(attributes, depth), all_pairs(attributes, depth))


def registry_of(size: int) -> Registry:
    registry = Registry(clock=lambda: 0.0)
    for index in range(size):
        registry.on_status(AgentStatus(f"a{index}", AgentState.ONLINE, speed_gflops=10.0 + index))
    return registry


def test_views_of_some_agents_skip_the_unknown_ones() -> None:
    registry = registry_of(50)
    views = registry.views(["a3", "a7", "nobody"])
    assert set(views) == {"a3", "a7"}
    assert views["a3"] == registry.views()["a3"]


def test_an_unmeasured_agent_keeps_its_own_figure_whatever_others_measure() -> None:
    registry = registry_of(3)
    assert registry.speed_gflops("a1") == pytest.approx(11.0)  # nothing measured yet
    # a0 (calibrated 10 GFLOP/s) runs 1e9 FLOPs in 50 ms: 20 GFLOP/s, twice its figure.
    registry.on_shard_ready(ShardReady("c", "a0", "d", 0, "ab" * 32, "litert", 50.0), 10**9)
    assert registry.speed_gflops("a0") == pytest.approx(20.0)
    assert registry.speed_gflops("a1") == pytest.approx(11.0)  # not measured on a1
    registry.on_status(AgentStatus("a1", AgentState.ONLINE, speed_gflops=40.0))
    assert registry.speed_gflops("a1") == pytest.approx(40.0)
