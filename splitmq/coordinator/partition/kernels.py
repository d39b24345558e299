"""The search's kernels: dominance and Pareto filters, the relaxed lower bounds, and
the families of partial partitions the dynamic programme extends and selects from."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Container, Iterable, Iterator, Sequence
from typing import Literal, NamedTuple

import numpy as np

from splitmq.coordinator.partition.arrays import Flags, Floats, Indices

_SLACK = 1e-9  # relative: bound tests never drop a partition over a rounding error
_BLOCK = 256  # rows compared at once by the dominance filter


def _undominated(attributes: Floats, depth: int) -> Flags:
    """Rows that fewer than ``depth`` other rows beat or tie on every column.

    Lower is better; of identical rows the first listed counts as the better one, so
    the relation is a strict order and a chain of swaps ends.
    """
    count = len(attributes)
    if count <= depth:
        return np.ones(count, dtype=np.bool_)
    # In lexicographic order (ties: the first listed first) a row's beaters all come
    # before it, and a row beaten by a discarded row is beaten by that row's beaters
    # too: a row is kept iff fewer than ``depth`` rows kept so far, or earlier in its
    # block, are no worse on every column. Blocks keep it vectorised and the memory at
    # (kept + block) x block, not count x count (10,000 agents: 1 GB, seconds).
    order = np.lexsort((np.arange(count), *attributes.T[::-1]))
    kept = np.zeros(count, dtype=np.bool_)
    members = attributes[:0]
    for start in range(0, count, _BLOCK):
        rows = order[start : start + _BLOCK]
        block = attributes[rows]
        before = np.concatenate([members, block])
        no_worse = (before[:, None, :] <= block[None, :, :]).all(axis=-1)
        earlier = np.arange(len(before))[:, None] < (len(members) + np.arange(len(block)))
        keep = (no_worse & earlier).sum(axis=0) < depth
        kept[rows[keep]] = True
        members = np.concatenate([members, block[keep]])
    return kept


class _Options(NamedTuple):
    """Candidate primaries of every stage ``[i, j)``, best first, ``(m, m, width)``."""

    agent: Indices  # fleet index; -1: none
    latency_ms: Floats  # stage latency (compute + send + hop); inf: none
    energy_j: Floats  # weighted stage energy; inf: none

    def ranked(self, latency_weight: float, depth: int) -> _Options:
        """The ``depth`` best options by energy + ``latency_weight`` x latency (> 0)."""
        chosen, usable = _cheapest(self.energy_j + latency_weight * self.latency_ms, depth)
        return _Options(
            np.where(usable, np.take_along_axis(self.agent, chosen, -1), -1),
            np.where(usable, np.take_along_axis(self.latency_ms, chosen, -1), np.inf),
            np.where(usable, np.take_along_axis(self.energy_j, chosen, -1), np.inf),
        )

    def within(self, latency_ms: float) -> _Options:
        """Only the options whose stage latency is at most ``latency_ms``."""
        keep = self.latency_ms <= latency_ms
        return _Options(
            np.where(keep, self.agent, -1),
            np.where(keep, self.latency_ms, np.inf),
            np.where(keep, self.energy_j, np.inf),
        )


OptionKind = Literal["latency", "energy", "energy+latency"]


class _Labels(NamedTuple):
    """Partial partitions, one per row: ``k`` stages from boundary 0 to ``end``."""

    end: Indices  # (n,)
    ends: Indices  # (n, k): the boundary each stage ends at
    agents: Indices  # (n, k): each stage's primary (fleet index)
    latency_ms: Floats  # (n,): sum of stage latencies
    energy_j: Floats  # (n,): sum of weighted stage energies
    bottleneck_ms: Floats  # (n,): largest stage latency

    @classmethod
    def root(cls) -> _Labels:
        empty = np.zeros((1, 0), dtype=np.intp)
        zero = np.zeros(1)
        return cls(np.zeros(1, dtype=np.intp), empty, empty, zero, zero, zero)

    def take(self, rows: Indices) -> _Labels:
        return _Labels(
            self.end[rows],
            self.ends[rows],
            self.agents[rows],
            self.latency_ms[rows],
            self.energy_j[rows],
            self.bottleneck_ms[rows],
        )


class _Bounds(NamedTuple):
    """Per stages remaining and boundary, lower bounds on what is still to pay."""

    latency: list[Floats]
    key: list[Floats]
    lagrangian: list[Floats]  # energy + multiplier x latency


class _Found(NamedTuple):
    """A complete partition as the search sees it: boundary indices and fleet indices."""

    ends: tuple[int, ...]  # the boundary each stage ends at (the last: the end)
    agents: tuple[int, ...]
    latency_ms: float  # without the source's send
    energy_j: float
    bottleneck_ms: float


Key = Literal["latency_ms", "energy_j", "bottleneck_ms"]


class _Goal(NamedTuple):
    """What one run of the programme minimises.

    Attributes:
        key: the cost minimised.
        latency_weight: rank by ``key + latency_weight x latency`` instead (energy only).
        latency_bound_ms: only partitions within it count; the families are then Pareto
            sets over (key, latency), and partial partitions that cannot finish within
            it are dropped.
        key_bound: partial partitions that cannot finish at or below it are dropped.
        multiplier: a Lagrange multiplier of the latency bound (J/ms), for a stronger
            lower bound on the energy still to pay.
    """

    key: Key
    latency_weight: float = 0.0
    latency_bound_ms: float | None = None
    key_bound: float | None = None
    multiplier: float = 0.0

    def values(self, labels: _Labels) -> Floats:
        values: Floats = getattr(labels, self.key)
        return values + self.latency_weight * labels.latency_ms if self.latency_weight else values


# --- The search ----------------------------------------------------------------------


def _can_meet(
    families: Sequence[Sequence[int]],
    banned: Container[int],
    room: int,
    chosen: frozenset[int] = frozenset(),
) -> bool:
    """Whether at most ``room`` more agents, none ``banned``, meet every one of ``families``."""
    for members in families:
        if chosen.isdisjoint(members):
            if room == 0:
                return False
            return any(
                _can_meet(families, banned, room - 1, chosen | {agent})
                for agent in members
                if agent not in banned
            )
    return True


def _family(
    candidates: Iterable[tuple[int, list[int], float]], room: int, pareto: bool
) -> list[int]:
    """Of ``candidates`` (row, primaries, latency; best first), the rows that some
    future of at most ``room`` agents needs.

    A row is kept when some set of at most ``room`` agents, none of its own, meets every
    kept row at least as good (in Pareto families: as good on latency too): then it is
    the best one that future can extend.
    """
    kept: list[int] = []
    kept_sets: list[list[int]] = []
    kept_latency: list[float] = []
    for row, members, latency_ms in candidates:
        if not pareto:
            if _can_meet(kept_sets, members, room):
                kept.append(row)
                kept_sets.append(members)
                if not _can_meet(kept_sets, (), room):
                    break  # no future avoids them all: the family is complete
            continue
        better = bisect.bisect_right(kept_latency, latency_ms)
        if _can_meet(kept_sets[:better], members, room):
            kept.append(row)
            kept_sets.insert(better, members)
            kept_latency.insert(better, latency_ms)
    return kept


def _rows(
    rows: Indices, labels: _Labels, chunk: int = 64
) -> Iterator[tuple[int, list[int], float]]:
    """``(row, primaries, latency)`` of ``labels`` for ``rows``, converted in chunks: a
    family is often complete after its first few."""
    for first in range(0, len(rows), chunk):
        part = rows[first : first + chunk]
        yield from zip(
            part.tolist(),
            labels.agents[part].tolist(),
            labels.latency_ms[part].tolist(),
            strict=True,
        )


def _slack(value: Floats | float) -> Floats | float:
    """Room for rounding errors when testing against ``value``."""
    return np.abs(value) * _SLACK + 1e-12


def _cheapest(cost: Floats, depth: int) -> tuple[Indices, Flags]:
    """Per stage, the ``depth`` cheapest agents, cheapest first (of equals, any), and
    which of them can host it at all."""
    width = min(depth, cost.shape[-1])
    if width < cost.shape[-1]:
        chosen = np.argpartition(cost, width - 1, axis=-1)[..., :width]
    else:
        chosen = np.broadcast_to(np.arange(width), cost.shape).copy()
    order = np.argsort(np.take_along_axis(cost, chosen, -1), axis=-1, kind="stable")
    chosen = np.take_along_axis(chosen, order, -1)
    return chosen, np.isfinite(np.take_along_axis(cost, chosen, -1))


def _pareto_layer(first: Floats, second: Floats, depth: int) -> tuple[Indices, Flags]:
    """Per stage, the agents that fewer than ``depth`` others beat or tie on both costs,
    cheapest ``first`` first, padded to a common width (``False`` in the flags).

    Sorted by (first, second, index), an agent is beaten by exactly the earlier ones
    whose second cost is no higher: it stays when the ``depth``-th lowest second cost
    before it is higher than its own.
    """
    shape = first.shape
    count = shape[-1]
    order = np.lexsort((second, first), axis=-1).reshape(-1, count)
    seconds = np.take_along_axis(second.reshape(-1, count), order, 1)
    lowest = np.full((len(seconds), depth), np.inf)
    stays = np.zeros(seconds.shape, dtype=np.bool_)
    for column in range(count):
        value = seconds[:, column]
        stays[:, column] = (lowest[:, -1] > value) & np.isfinite(value)
        lowest = np.sort(np.concatenate([lowest, value[:, None]], axis=1), axis=1)[:, :depth]
    width = max(1, int(stays.sum(axis=1).max()))
    rank = np.argsort(~stays, axis=1, kind="stable")[:, :width]  # staying ones first
    chosen = np.take_along_axis(order, rank, 1).reshape(*shape[:-1], width)
    usable = np.take_along_axis(stays, rank, 1).reshape(*shape[:-1], width)
    return chosen, usable


def _minimax(cost: Floats, stages: int) -> float:
    """The least, over ``stages``-stage paths from the first boundary to the last, of the
    largest ``cost[i, j]`` of their stages (``inf`` marks a stage not allowed)."""
    level = np.full(len(cost), np.inf)
    level[0] = -np.inf
    for _ in range(stages):
        level = np.maximum(level[:, None], cost).min(axis=0)
    return float(level[-1])


def _relaxed(stage_cost: Floats, stages: int, *, bottleneck: bool = False) -> list[Floats]:
    """Per stages remaining ``r`` and boundary ``i``: the least cost of ``r`` stages from
    ``i`` to the end, ignoring that primaries must differ (a lower bound)."""
    count = len(stage_cost)
    level = np.full(count, np.inf)
    level[-1] = -np.inf if bottleneck else 0.0
    levels = [level]
    for _ in range(stages):
        joined = np.maximum(stage_cost, level[None, :]) if bottleneck else stage_cost + level
        level = joined.min(axis=1)
        levels.append(level)
    return levels


def _extend(labels: _Labels, options: _Options, count: int, remaining: int) -> _Labels:
    """Every way to add one stage to every label, leaving room for ``remaining`` more."""
    agent = options.agent[labels.end]  # (n, m, width): options of [end, j) for every j
    valid = agent >= 0
    if labels.agents.shape[1]:
        valid &= ~(labels.agents[:, :, None, None] == agent[:, None]).any(axis=1)
    if remaining:
        valid[:, count - remaining :] = False
    else:
        valid[:, : count - 1] = False
    row, end, slot = np.nonzero(valid)
    start = labels.end[row]
    stage_latency = options.latency_ms[start, end, slot]
    return _Labels(
        end=end.astype(np.intp),
        ends=np.concatenate([labels.ends[row], end[:, None]], axis=1).astype(np.intp),
        agents=np.concatenate([labels.agents[row], agent[row, end, slot][:, None]], axis=1),
        latency_ms=labels.latency_ms[row] + stage_latency,
        energy_j=labels.energy_j[row] + options.energy_j[start, end, slot],
        bottleneck_ms=np.maximum(labels.bottleneck_ms[row], stage_latency),
    )


def _cheapest_per_set(candidates: _Labels, order: Indices, agents: int) -> Indices:
    """``order`` without the rows whose boundary and set of primaries an earlier row has
    (in a family ranked by one cost they are never needed). ``agents``: the fleet size."""
    depth = candidates.agents.shape[1]
    if (int(candidates.end.max(initial=0)) + 1) * agents**depth >= 2**62:
        return order  # the sets do not fit one integer code: keep them all
    code = candidates.end[order].astype(np.int64)
    for column in np.sort(candidates.agents[order], axis=1).T:
        code = code * agents + column
    _, first = np.unique(code, return_index=True)
    result: Indices = order[np.sort(first)]
    return result


def _select(candidates: _Labels, goal: _Goal, room: int, agents: int) -> Indices:
    """Per boundary, the family worth extending (step 4), as rows of ``candidates``."""
    key = goal.values(candidates)
    pareto = goal.latency_bound_ms is not None
    if pareto:
        order = np.lexsort((candidates.latency_ms, key, candidates.end))
    else:
        order = _cheapest_per_set(candidates, np.lexsort((key, candidates.end)), agents)
    ends = candidates.end[order]
    starts = np.flatnonzero(np.diff(ends, prepend=-1)).tolist()
    kept: list[int] = []
    for first, stop in itertools.pairwise([*starts, len(order)]):
        kept += _family(_rows(order[first:stop], candidates), room, pareto)
    return np.asarray(kept, dtype=np.intp)
