"""The interval arrays the search reads: per candidate stage ``[i, j)`` of a variant its
FLOPs, parameter and frontier bytes; per usable agent its speed, link and power; the
latency and energy of every (stage, agent) pair at once."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from splitmq.coordinator.partition.reference import _frontier_bytes, boundaries
from splitmq.coordinator.partition.types import PartitionConfig
from splitmq.coordinator.planner import (
    MB,
    AgentView,
    battery_weight,
    hop_ms,
)
from splitmq.wire.manifest import Variant

Floats = NDArray[np.float64]


Indices = NDArray[np.intp]


Flags = NDArray[np.bool_]


# --- The search's inputs, in array form ----------------------------------------------


@dataclass(frozen=True)
class _Intervals:
    """Every candidate stage ``[positions[i], positions[j])``, as ``(m, m)`` arrays.

    Attributes:
        positions: the boundaries (see :func:`boundaries`), ``m`` of them.
        flops_before: FLOPs of the operators before each boundary.
        params_before: parameter bytes of the operators before each boundary.
        frontier: bytes crossing each boundary (model inputs at 0, outputs at the end).
        flops, param_bytes: of each candidate stage.
        need_bytes: shard + input + output bytes: the memory a host needs.
        under_shard_limit: ``i < j`` and the shard within ``max_shard_bytes``.
    """

    positions: tuple[int, ...]
    flops_before: tuple[int, ...]
    params_before: tuple[int, ...]
    frontier: tuple[int, ...]
    flops: Floats
    param_bytes: Floats
    need_bytes: Floats
    under_shard_limit: Flags

    @classmethod
    def of(cls, variant: Variant, max_shard_bytes: int | None) -> _Intervals:
        positions = boundaries(variant)
        flops = list(itertools.accumulate((op.flops for op in variant.operators), initial=0))
        params = list(itertools.accumulate((op.param_bytes for op in variant.operators), initial=0))
        flops_before = tuple(flops[p] for p in positions)
        params_before = tuple(params[p] for p in positions)
        frontier = tuple(_frontier_bytes(variant, p) for p in positions)
        f = np.asarray(flops_before, dtype=np.float64)
        p = np.asarray(params_before, dtype=np.float64)
        edge = np.asarray(frontier, dtype=np.float64)
        param_bytes = p[None, :] - p[:, None]
        ordered = np.triu(np.ones((len(positions),) * 2, dtype=np.bool_), k=1)
        limit = np.inf if max_shard_bytes is None else float(max_shard_bytes)
        return cls(
            positions=positions,
            flops_before=flops_before,
            params_before=params_before,
            frontier=frontier,
            flops=f[None, :] - f[:, None],
            param_bytes=param_bytes,
            need_bytes=param_bytes + edge[:, None] + edge[None, :],
            under_shard_limit=ordered & (param_bytes <= limit),
        )

    @property
    def count(self) -> int:
        return len(self.positions)

    def input_bytes(self) -> Floats:
        """Bytes entering a stage that starts at each boundary, as a column."""
        return np.asarray(self.frontier, dtype=np.float64)[:, None, None]

    def output_bytes(self) -> Floats:
        """Bytes leaving a stage that ends at each boundary, as a row."""
        return np.asarray(self.frontier, dtype=np.float64)[None, :, None]


@dataclass(frozen=True)
class _Fleet:
    """The eligible agents' figures as arrays, one entry per agent."""

    agents: tuple[AgentView, ...]
    ms_per_flop: Floats
    link_ms: Floats  # the link's latency and the agent's broker hop
    ms_per_byte: Floats
    capacity_bytes: Floats  # inf when the agent's free memory is unknown
    weight: Floats
    active_w: Floats
    radio_j_per_byte: Floats

    @classmethod
    def of(cls, agents: Sequence[AgentView], config: PartitionConfig) -> _Fleet:
        def column(values: list[float]) -> Floats:
            return np.asarray(values, dtype=np.float64).reshape(-1)

        planner = config.planner
        return cls(
            agents=tuple(agents),
            ms_per_flop=column([a.compute_ms(1) for a in agents]),
            link_ms=column([a.send_ms(0) + hop_ms(a, planner) for a in agents]),
            # send_ms is affine in the bytes: its slope, from the function itself.
            ms_per_byte=column([(a.send_ms(MB) - a.send_ms(0)) / MB for a in agents]),
            capacity_bytes=column(
                [
                    np.inf
                    if a.mem_free_bytes is None
                    else a.mem_free_bytes * config.memory_headroom
                    for a in agents
                ]
            ),
            weight=column([battery_weight(a, planner) for a in agents]),
            active_w=column([a.active_w for a in agents]),
            radio_j_per_byte=column([a.radio_j_per_mb / MB for a in agents]),
        )

    def index(self, agent_id: str | None) -> int | None:
        for i, agent in enumerate(self.agents):
            if agent.agent_id == agent_id:
                return i
        return None

    def holders(self, need_bytes: Floats) -> NDArray[np.int64]:
        """How many agents have room for each entry of ``need_bytes``."""
        ordered = np.sort(self.capacity_bytes)
        return len(ordered) - np.searchsorted(ordered, need_bytes, side="left")


def _latency_ms(
    fleet: _Fleet,
    members: Indices,
    flops: Floats | float,
    output_bytes: Floats | float,
    config: PartitionConfig,
) -> Floats:
    """Compute + send of the output (its hop included), for ``members`` (the last axis)."""
    return (
        flops * fleet.ms_per_flop[members]
        + config.stage_overhead_ms
        + fleet.link_ms[members]
        + output_bytes * fleet.ms_per_byte[members]
    )


def _energy_j(
    fleet: _Fleet,
    members: Indices,
    flops: Floats | float,
    moved_bytes: Floats | float,
    config: PartitionConfig,
) -> Floats:
    """Battery-weighted energy of computing and of receiving and sending ``moved_bytes``."""
    compute_ms = flops * fleet.ms_per_flop[members] + config.stage_overhead_ms
    return fleet.weight[members] * (
        fleet.active_w[members] * compute_ms / 1e3 + fleet.radio_j_per_byte[members] * moved_bytes
    )
