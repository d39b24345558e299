"""The partition optimizer: where to cut one variant into stages, and who hosts each.

``partition(variant, agents, request, config)`` returns a :class:`Partition` -- the cut
points, and for every stage its operator range ``[start_op, end_op)``, its figures and
its replicas (the primary first, then the fallbacks cheapest first) -- or raises
:class:`PartitionRefused` naming the constraint that failed. No I/O: the deployer
gathers the agent views and acts on what this returns.

The cost model is the per-request planner's (:mod:`splitmq.coordinator.planner`), for
cut points ``c_1 < .. < c_(S-1)`` taken from ``variant.cut_points`` and distinct
primaries ``a_0 .. a_(S-1)``:

- a stage's compute time on an agent is ``overhead + flops / speed``, its shard is the
  parameter bytes of its operators, and it fits an agent when shard + input + output
  bytes <= ``mem_free_bytes x memory_headroom``;
- latency = the source's send of the input (a broker hop, plus the source's link
  unless the source is an agent that runs the first stage itself) + for every stage the
  compute time on its primary and the primary's send of its output (link latency +
  bytes / bandwidth + a broker hop); the last stage's output goes back to the requester;
- bottleneck = the slowest stage's compute + send: a pipeline delivers one result per
  bottleneck (``throughput_rps = 1000 / bottleneck_ms``);
- energy and weighted energy as in the planner: active power x compute time + radio
  J/MB x MB received and sent, weighted by ``planner.battery_weight``.

:func:`evaluate` computes these with the planner's own ``route_cost``; the search below
uses the same terms in array form, and the tests check the two agree.

Objectives: ``latency`` minimises latency; ``throughput`` the bottleneck, then latency
among partitions with that bottleneck; ``energy`` the weighted energy. ``max_latency_ms``
is a bound for all three: a partition slower than it is not chosen, and when none is
fast enough the request is refused. ``stages=None`` tries 1 .. ``max_stages`` and keeps
the fewest stages whose objective is within 2% of the best.

Primaries of different stages are distinct agents (one agent hosting two stages would
share one CPU; adjacent stages on one agent are one stage). An agent may be a fallback
of one stage and the primary of another, never twice in one stage.

The search is exact -- the optimum brute force finds, up to rounding -- and each step
drops only what cannot be needed. ``S`` is the most stages tried.

1. Agents offline, unplugged below the battery floor (``planner.eligible``), or with no
   speed or bandwidth are left out.
2. An agent that at least ``S`` other agents beat or tie on every figure the objective
   reads (time per FLOP, link latency, time per byte, room; for energy the
   battery-weighted J per FLOP, per byte and per second) is never needed as a primary:
   a partition using it leaves one of those free, and swapping that one in costs no
   more. Pinned agents are kept.
3. Per candidate stage ``[i, j)`` only its ``S`` cheapest primaries are kept (for energy
   under a latency bound: those that fewer than ``S`` others beat on both energy and
   latency), by the same swap argument.
4. A dynamic programme over the boundaries adds one stage at a time. A partial
   partition is a set of primaries with a cost. Per boundary the programme keeps a
   family of them that stays optimal whatever the later stages use: a new one is kept
   only when some set of at most ``q`` agents (``q`` stages are still to place), none
   of its own, meets every kept one at least as cheap -- a small hitting-set test. With
   ``k`` stages placed such a family has at most ``C(k + q, k)`` members (Bollobas):
   six when ``S`` is 4.

Per objective: latency, and energy without a bound, take one run. Throughput takes two:
the least bottleneck (families ranked by the largest stage cost), then the least
latency with only the stage options within that bottleneck. Under a latency bound
that the unbounded optimum breaks, the families become Pareto sets over (objective,
latency), and a partial partition is dropped when lower bounds on what is still to pay
(the programme without distinct primaries) show it cannot finish within the bound, or
below a partition known to meet it. For energy that partition comes from a short walk
along the lower convex hull of (latency, energy) -- minimising energy + w x latency --
whose multiplier ``w`` also gives a Lagrangian bound: finishing within the latency
``B`` left costs at least ``min(energy + w x latency) - w x B`` more energy. With
``stages=None``, a stage count whose lower bound cannot beat what fewer stages already
achieve is skipped.

``tests/coordinator/test_partition.py`` checks the result against brute force on
random variants and fleets; ``benchmarks/bench_partition.py`` times it.

Plan 2 placements (a parallel section's branches on agents of their own) are
:mod:`.parallel`'s; :func:`choose` picks among chains and them (``splitmq deploy
--plans chain|parallel|auto``).

The package's modules, each one job: :mod:`.types` (request, config, partition,
refusal, the table), :mod:`.reference` (the evaluation with the planner's
``route_cost``), :mod:`.arrays` (the interval and fleet arrays), :mod:`.kernels` (the
search's filters, bounds and families), :mod:`.search` (the dynamic programme),
:mod:`.refusal` (what a request leaves, or why nothing) and :mod:`.optimize`
(:func:`partition` itself).
"""

from splitmq.coordinator.partition.optimize import choose, partition
from splitmq.coordinator.partition.parallel import evaluate_parallel, parallel_partition
from splitmq.coordinator.partition.reference import boundaries, evaluate
from splitmq.coordinator.partition.types import (
    Constraint,
    Figures,
    Partition,
    PartitionConfig,
    PartitionRefused,
    PartitionRequest,
    StagePlan,
    describe,
)
from splitmq.wire import Objective

__all__ = [
    "Constraint",
    "Figures",
    "Objective",
    "Partition",
    "PartitionConfig",
    "PartitionRefused",
    "PartitionRequest",
    "StagePlan",
    "boundaries",
    "choose",
    "describe",
    "evaluate",
    "evaluate_parallel",
    "parallel_partition",
    "partition",
]
