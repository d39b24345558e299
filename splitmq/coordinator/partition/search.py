"""The exact search over one variant and one fleet: the dynamic programme over stage
boundaries, per objective and under a latency bound (see the package docstring)."""

from __future__ import annotations

import itertools
from functools import cached_property

import numpy as np

from splitmq.coordinator.partition.arrays import (
    Flags,
    Floats,
    Indices,
    _energy_j,
    _Fleet,
    _Intervals,
    _latency_ms,
)
from splitmq.coordinator.partition.kernels import (
    OptionKind,
    _Bounds,
    _cheapest,
    _extend,
    _Found,
    _Goal,
    _Labels,
    _minimax,
    _Options,
    _pareto_layer,
    _relaxed,
    _select,
    _slack,
    _undominated,
)
from splitmq.coordinator.partition.types import (
    Constraint,
    PartitionConfig,
    PartitionRefused,
    PartitionRequest,
)
from splitmq.coordinator.planner import (
    MB,
    AgentView,
    hop_ms,
)
from splitmq.wire import Objective

_HULL_STEPS = 2  # hull steps before the Pareto search: its incumbent and multiplier


class _Search:
    """The programme for one variant, fleet and request; options built once, lazily."""

    def __init__(
        self,
        intervals: _Intervals,
        fleet: _Fleet,
        request: PartitionRequest,
        config: PartitionConfig,
        depth: int,
        *,
        source: AgentView | None = None,
        source_runs_first: bool = False,
    ) -> None:
        """``source``: where the input comes from (the request's); ``source_runs_first``:
        the first stage is pinned to that agent itself, so the input reaches it over no
        link and no radio."""
        self.intervals = intervals
        self.fleet = fleet
        self.request = request
        self.config = config
        self.depth = depth
        self.pin_first = fleet.index(request.pin_first)
        self.pin_last = fleet.index(request.pin_last)
        self.source_runs_first = source_runs_first
        input_bytes = intervals.frontier[0]
        link_ms = source.send_ms(input_bytes) if source and not source_runs_first else 0.0
        self.source_ms = link_ms + hop_ms(source, config.planner)
        self._options: dict[OptionKind, _Options] = {}

    @cached_property
    def allowed(self) -> Flags:
        """Candidate stages under the shard limit with ``replicas`` agents that fit them."""
        holders = self.fleet.holders(self.intervals.need_bytes)
        return self.intervals.under_shard_limit & (holders >= self.request.replicas)

    @cached_property
    def useful_capacity(self) -> Floats:
        """Each agent's capacity, capped at the largest need: more room changes nothing."""
        needs = self.intervals.need_bytes[self.allowed]
        largest = float(needs.max()) if needs.size else 0.0
        return np.minimum(self.fleet.capacity_bytes, largest)

    def attributes(self, kind: OptionKind) -> Floats:
        """Per agent, what the stage costs of ``kind`` grow with (lower is better)."""
        fleet = self.fleet
        columns = []
        if kind != "energy":
            columns += [fleet.ms_per_flop, fleet.link_ms, fleet.ms_per_byte]
        if kind != "latency":
            per_second = fleet.weight * fleet.active_w
            columns += [per_second * fleet.ms_per_flop, fleet.weight * fleet.radio_j_per_byte]
            if self.config.stage_overhead_ms > 0:
                columns.append(per_second)
        columns.append(-self.useful_capacity)
        return np.stack(columns, axis=1)

    def members(self, kind: OptionKind) -> Indices:
        """The agents that may be needed as primaries (step 2), pinned ones last."""
        pinned = sorted({i for i in (self.pin_first, self.pin_last) if i is not None})
        free = np.setdiff1d(np.arange(len(self.fleet.agents)), pinned)
        keep = _undominated(self.attributes(kind)[free], self.depth)
        return np.concatenate([free[keep], np.asarray(pinned, dtype=np.intp)]).astype(np.intp)

    def roles(self, members: Indices) -> Flags:
        """``(m, m, len(members))``: who may host which stage under the pins."""
        count = self.intervals.count
        first = np.zeros((count, count, 1), dtype=np.bool_)
        first[0] = True
        last = np.zeros((count, count, 1), dtype=np.bool_)
        last[:, count - 1] = True
        ok = np.ones((count, count, len(members)), dtype=np.bool_)
        if self.pin_first is not None:
            ok &= first == (members == self.pin_first)
        if self.pin_last is not None:
            ok &= last == (members == self.pin_last)
        return ok

    def options(self, kind: OptionKind) -> _Options:
        """The candidate primaries of every stage (step 3), built on first use."""
        if kind not in self._options:
            self._options[kind] = self._build_options(kind)
        return self._options[kind]

    def _build_options(self, kind: OptionKind) -> _Options:
        iv = self.intervals
        members = self.members(kind)
        flops = iv.flops[:, :, None]
        latency = _latency_ms(self.fleet, members, flops, iv.output_bytes(), self.config)
        moved = iv.input_bytes() + iv.output_bytes()
        if self.source_runs_first:  # the first stage's input is already on its agent
            moved = moved.copy()
            moved[0] -= iv.frontier[0]
        energy = _energy_j(self.fleet, members, flops, moved, self.config)
        feasible = (
            self.allowed[:, :, None]
            & (iv.need_bytes[:, :, None] <= self.fleet.capacity_bytes[members])
            & self.roles(members)
        )
        latency = np.where(feasible, latency, np.inf)
        energy = np.where(feasible, energy, np.inf)
        if kind == "energy+latency":
            chosen, usable = _pareto_layer(energy, latency, self.depth)
        else:
            chosen, usable = _cheapest(latency if kind == "latency" else energy, self.depth)
        return _Options(
            np.where(usable, members[chosen], -1),
            np.where(usable, np.take_along_axis(latency, chosen, -1), np.inf),
            np.where(usable, np.take_along_axis(energy, chosen, -1), np.inf),
        )

    def run(self, stages: int, options: _Options, goal: _Goal) -> _Labels:
        """Every partial partition worth extending, stage by stage; the complete ones."""
        labels = _Labels.root()
        bounds = self._lower_bounds(options, goal, stages)
        for placed in range(1, stages + 1):
            remaining = stages - placed
            candidates = _extend(labels, options, self.intervals.count, remaining)
            if bounds is not None:
                candidates = candidates.take(self._hopeful(candidates, goal, bounds, remaining))
            kept = _select(candidates, goal, remaining, len(self.fleet.agents))
            labels = candidates.take(kept)
        return labels

    def _lower_bounds(self, options: _Options, goal: _Goal, stages: int) -> _Bounds | None:
        """Per stages remaining and boundary: the least still to pay, ignoring that the
        primaries must differ. ``None`` when the goal sets no bound to test them on."""
        if goal.latency_bound_ms is None and goal.key_bound is None:
            return None
        latency = _relaxed(options.latency_ms.min(axis=-1), stages)
        if goal.key == "energy_j":
            key = _relaxed(options.energy_j.min(axis=-1), stages)
        elif goal.key == "bottleneck_ms":
            key = _relaxed(options.latency_ms.min(axis=-1), stages, bottleneck=True)
        else:
            key = latency
        lagrangian = key
        if goal.multiplier:
            weighted = options.energy_j + goal.multiplier * options.latency_ms
            lagrangian = _relaxed(weighted.min(axis=-1), stages)
        return _Bounds(latency, key, lagrangian)

    def _hopeful(self, labels: _Labels, goal: _Goal, bounds: _Bounds, remaining: int) -> Indices:
        """The rows of ``labels`` that can still finish within the goal's bounds.

        With a multiplier ``w`` and ``B`` the latency left: every way to finish within
        ``B`` costs at least ``min(energy + w x latency) - w x B`` more energy.
        """
        keep = np.ones(len(labels.end), dtype=np.bool_)
        if goal.latency_bound_ms is not None:
            left_ms = goal.latency_bound_ms - self.source_ms - labels.latency_ms
            keep &= bounds.latency[remaining][labels.end] <= left_ms + _slack(left_ms)
        if goal.key_bound is not None:
            limit = goal.key_bound + _slack(goal.key_bound)
            rest = bounds.key[remaining][labels.end]
            own: Floats = getattr(labels, goal.key)
            least = np.maximum(own, rest) if goal.key == "bottleneck_ms" else own + rest
            keep &= least <= limit
            if goal.multiplier and goal.latency_bound_ms is not None:
                rest = bounds.lagrangian[remaining][labels.end] - goal.multiplier * left_ms
                keep &= labels.energy_j + rest <= limit
        return np.flatnonzero(keep)

    def best(self, complete: _Labels, goal: _Goal) -> int | None:
        """The complete partition the goal prefers, as a row of ``complete``."""
        keep = np.ones(len(complete.end), dtype=np.bool_)
        if goal.latency_bound_ms is not None:
            keep &= self.source_ms + complete.latency_ms <= goal.latency_bound_ms
        rows = np.flatnonzero(keep)
        if not rows.size:
            return None
        order = np.lexsort((complete.latency_ms[rows], goal.values(complete)[rows]))
        return int(rows[order[0]])

    def solve(self, stages: int) -> _Found:
        """The best ``stages``-stage partition for the request's objective."""
        objective = self.request.objective
        bound = self.request.max_latency_ms
        if objective is Objective.LATENCY:
            return self._within_gate(
                self.find(stages, self.options("latency"), _Goal("latency_ms"))
            )
        if objective is Objective.THROUGHPUT:
            steady = self.find(stages, self.options("latency"), _Goal("bottleneck_ms"))
            options = self.options("latency").within(steady.bottleneck_ms)
            found = self.find(stages, options, _Goal("latency_ms"))
        else:
            found = self.find(stages, self.options("energy"), _Goal("energy_j"))
        if bound is None or self.source_ms + found.latency_ms <= bound:
            return found
        # The unbounded optimum is too slow: search the Pareto families, cut down by the
        # fastest partition (which is within the bound, or nothing is).
        fastest = self._within_gate(self.find(stages, self.options("latency"), _Goal("latency_ms")))
        if objective is Objective.THROUGHPUT:
            goal = _Goal("bottleneck_ms", latency_bound_ms=bound, key_bound=fastest.bottleneck_ms)
            return self.find(stages, self.options("latency"), goal)
        return self._thriftiest_within(stages, bound, found, fastest)

    def _thriftiest_within(
        self, stages: int, bound: float, thriftiest: _Found, fastest: _Found
    ) -> _Found:
        """The least weighted energy within ``bound``, given the thriftiest partition
        (too slow) and the fastest (within it).

        First a walk along the lower convex hull of (latency, energy): each step
        minimises energy + w x latency, ``w`` the slope between the best partitions found
        either side of the bound, until no partition lies below that line. The best one
        within the bound and the last ``w`` then cut the Pareto programme down.
        """
        options = self.options("energy+latency")
        budget_ms = bound - self.source_ms
        slow, quick = thriftiest, fastest
        for step in itertools.count():
            # Whatever meets the bound costs more than ``slow`` (the thriftiest, or the
            # least energy + w x latency for some w > 0 while slower than the bound).
            if quick.energy_j <= slow.energy_j:
                return quick
            weight = (quick.energy_j - slow.energy_j) / (slow.latency_ms - quick.latency_ms)
            if step == _HULL_STEPS:
                break
            found = self.find(stages, options.ranked(weight, self.depth), _Goal("energy_j", weight))
            line = quick.energy_j + weight * quick.latency_ms
            if found.energy_j + weight * found.latency_ms >= line - _slack(line):
                break
            if found.latency_ms <= budget_ms:
                quick = found
            else:
                slow = found
        goal = _Goal(
            "energy_j", latency_bound_ms=bound, key_bound=quick.energy_j, multiplier=weight
        )
        return self.find(stages, options, goal)

    def least(self, stages: int) -> float:
        """A lower bound on the objective with ``stages`` stages: the programme without
        the rule that primaries differ, over the same options (no bound either)."""
        if self.request.objective is Objective.ENERGY:
            energy = self.options("energy").energy_j.min(axis=-1)
            return float(_relaxed(energy, stages)[stages][0])
        latency = self.options("latency").latency_ms.min(axis=-1)
        if self.request.objective is Objective.THROUGHPUT:
            return float(_relaxed(latency, stages, bottleneck=True)[stages][0])
        return self.source_ms + float(_relaxed(latency, stages)[stages][0])

    def find(self, stages: int, options: _Options, goal: _Goal) -> _Found:
        complete = self.run(stages, options, goal)
        row = self.best(complete, goal)
        if row is None:
            raise self.diagnose(stages)
        return _Found(
            tuple(complete.ends[row].tolist()),
            tuple(complete.agents[row].tolist()),
            float(complete.latency_ms[row]),
            float(complete.energy_j[row]),
            float(complete.bottleneck_ms[row]),
        )

    def _within_gate(self, found: _Found) -> _Found:
        bound = self.request.max_latency_ms
        latency = self.source_ms + found.latency_ms
        if bound is not None and latency > bound:
            stages = len(found.agents)
            names = ", ".join(self.fleet.agents[a].agent_id for a in found.agents)
            raise PartitionRefused(
                "max_latency_ms",
                f"best predicted latency {latency:.1f} ms exceeds the gate of {bound:g} ms "
                f"({stages} stage{'s' if stages > 1 else ''}: {names}): raise "
                "max_latency_ms, or add faster agents or links",
                predicted_latency_ms=latency,
            )
        return found

    def diagnose(self, stages: int) -> PartitionRefused:
        """Why no ``stages``-stage partition exists: the first constraint that fails."""
        iv = self.intervals
        plural = f"{stages} stage{'s' if stages > 1 else ''}"
        shard = np.where(iv.under_shard_limit, iv.param_bytes, np.inf)
        if not np.isfinite(_minimax(shard, stages)):
            ordered = np.where(
                np.triu(np.ones_like(shard, dtype=np.bool_), 1), iv.param_bytes, np.inf
            )
            smallest = _minimax(ordered, stages)
            return PartitionRefused(
                "max_shard_bytes",
                f"with {plural} the largest shard is at least {smallest / MB:.2f} MB, above "
                f"max_shard_bytes ({(self.request.max_shard_bytes or 0) / MB:.2f} MB): allow "
                "more stages or larger shards",
            )
        roomiest = float(self.fleet.capacity_bytes.max())
        need = np.where(iv.under_shard_limit, iv.need_bytes, np.inf)
        largest = _minimax(need, stages)
        if largest > roomiest:
            return PartitionRefused(
                "memory",
                f"with {plural} some stage needs at least {largest / MB:.2f} MB (shard and "
                f"tensors), but the roomiest agent offers {roomiest / MB:.2f} MB "
                f"(free memory x {self.config.memory_headroom:g}): use more stages, a "
                "smaller variant, or agents with more memory",
            )
        holders = self.fleet.holders(iv.need_bytes).astype(np.float64)
        fewest = -_minimax(np.where(need <= roomiest, -holders, np.inf), stages)
        if fewest < self.request.replicas:
            return PartitionRefused(
                "replicas",
                f"with {plural} some stage has room on only {fewest:.0f} eligible "
                f"agent{'s' if fewest != 1 else ''}, fewer than the {self.request.replicas} "
                "replicas asked for: ask for fewer replicas, or add agents with more memory",
            )
        pins: tuple[tuple[Constraint, int | None], ...] = (
            ("pin_first", self.pin_first),
            ("pin_last", self.pin_last),
        )
        for constraint, pin in pins:
            if pin is not None and not self._pin_fits(
                pin, first=constraint == "pin_first", stages=stages
            ):
                agent = self.fleet.agents[pin]
                return PartitionRefused(
                    constraint,
                    f"{constraint} agent {agent.agent_id} cannot hold the "
                    f"{'first' if constraint == 'pin_first' else 'last'} stage of any "
                    f"{plural} partition ({self.fleet.capacity_bytes[pin] / MB:.2f} MB of room): "
                    "pin another agent or free memory on it",
                )
        return PartitionRefused(
            "memory",
            f"no {plural} partition gives every stage its own primary with room for it: "
            "too few agents have the memory; use fewer stages or add agents",
        )

    def replicas(self, start: int, end: int, primary: int) -> list[int]:
        """The primary of stage ``[start, end)``, then the fallbacks: other agents with
        room for it, cheapest first by the objective (ties: by id)."""
        if self.request.replicas == 1:
            return [primary]
        iv = self.intervals
        fleet = self.fleet
        others = np.flatnonzero(fleet.capacity_bytes >= iv.need_bytes[start, end])
        others = others[others != primary]
        flops = iv.flops[start, end]
        latency = _latency_ms(fleet, others, flops, iv.frontier[end], self.config).tolist()
        energy = _energy_j(
            fleet, others, flops, iv.frontier[start] + iv.frontier[end], self.config
        ).tolist()
        first = energy if self.request.objective is Objective.ENERGY else latency
        order = sorted(
            range(len(others)),
            key=lambda k: (first[k], latency[k], fleet.agents[others[k]].agent_id),
        )
        return [primary, *(int(others[k]) for k in order[: self.request.replicas - 1])]

    def _pin_fits(self, pin: int, *, first: bool, stages: int) -> bool:
        hosts = self.allowed.copy()
        fits = self.intervals.need_bytes <= self.fleet.capacity_bytes[pin]
        if first:
            hosts[0] &= fits[0]
        else:
            hosts[:, -1] &= fits[:, -1]
        return bool(np.isfinite(_minimax(np.where(hosts, 0.0, np.inf), stages)))
