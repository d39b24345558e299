"""The partition optimizer: brute force on random variants and fleets, then tables."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import NamedTuple

import pytest

from splitmq.coordinator.partition import (
    Figures,
    Partition,
    PartitionConfig,
    PartitionRefused,
    PartitionRequest,
    describe,
    evaluate,
    partition,
)
from splitmq.coordinator.planner import AgentView, eligible
from splitmq.errors import ConfigError
from splitmq.wire import Objective, TensorSpec
from splitmq.wire.manifest import CutPoint, Operator, Variant

CONFIG = PartitionConfig()
MB = 1_000_000


def tensor(name: str, size_bytes: int) -> TensorSpec:
    return TensorSpec(name, (size_bytes // 4,), "float32", size_bytes=size_bytes)


def make_variant(
    flops: Sequence[int],
    *,
    params: Sequence[int] | None = None,
    frontier: dict[int, int] | None = None,
    input_bytes: int = 10_000,
    output_bytes: int = 1_000,
    name: str = "float32",
) -> Variant:
    """A variant of ``len(flops)`` operators; ``frontier``: cut position -> bytes (default:
    every position, 10 kB)."""
    count = len(flops)
    params = params if params is not None else [1_000] * count
    frontier = frontier if frontier is not None else dict.fromkeys(range(1, count), 10_000)
    operators = tuple(
        Operator(i, "CONV_2D", False, f, p)
        for i, (f, p) in enumerate(zip(flops, params, strict=True))
    )
    cut_points = tuple(
        CutPoint(position, (tensor(f"t{position}", size),), size, sum(flops[:position]), None)
        for position, size in sorted(frontier.items())
    )
    return Variant(
        name=name,
        file=f"{name}.tflite",
        size_bytes=sum(params),
        sha256="0" * 64,
        inputs=(tensor("input", input_bytes),),
        outputs=(tensor("output", output_bytes),),
        operators=operators,
        cut_points=cut_points,
        cuttable=True,
        uncuttable_reason=None,
        fidelity=None,
    )


def agent(agent_id: str, **kwargs: object) -> AgentView:
    return AgentView(agent_id, **kwargs)  # type: ignore[arg-type]


def primary_flops(result: Partition) -> dict[str, int]:
    return {stage.primary: stage.flops for stage in result.stages}


# --- Brute force ---------------------------------------------------------------------


class Option(NamedTuple):
    cuts: tuple[int, ...]
    primaries: tuple[str, ...]
    figures: Figures


def room(a: AgentView) -> float:
    return float("inf") if a.mem_free_bytes is None else a.mem_free_bytes * CONFIG.memory_headroom


def stage_need(variant: Variant, start: int, end: int) -> tuple[int, int]:
    """(shard bytes, shard + input + output bytes) of operators [start, end)."""
    shard = sum(op.param_bytes for op in variant.operators[start:end])
    edge = {c.position: c.frontier_bytes for c in variant.cut_points}
    edge[0] = sum(t.size_bytes for t in variant.inputs)
    edge[len(variant.operators)] = sum(t.size_bytes for t in variant.outputs)
    return shard, shard + edge[start] + edge[end]


def every_partition(
    variant: Variant, agents: Sequence[AgentView], request: PartitionRequest, stages: int
) -> Iterator[Option]:
    """Every partition allowed by the request, written plainly."""
    usable = [a for a in agents if eligible(a, CONFIG.planner)]
    by_id = {a.agent_id: a for a in usable}
    positions = sorted({c.position for c in variant.cut_points})
    for cuts in itertools.combinations(positions, stages - 1):
        edges = (0, *cuts, len(variant.operators))
        hosts = []
        for start, end in itertools.pairwise(edges):
            shard, need = stage_need(variant, start, end)
            if request.max_shard_bytes is not None and shard > request.max_shard_bytes:
                break
            hosts.append({a.agent_id for a in usable if need <= room(a)})
            if len(hosts[-1]) < request.replicas:
                break
        else:
            for primaries in itertools.permutations(by_id, stages):
                if any(p not in h for p, h in zip(primaries, hosts, strict=True)):
                    continue
                if request.pin_first is not None and primaries[0] != request.pin_first:
                    continue
                if request.pin_last is not None and primaries[-1] != request.pin_last:
                    continue
                figures = evaluate(
                    variant, cuts, primaries, by_id, config=CONFIG, source=request.source
                )
                bound = request.max_latency_ms
                if bound is None or figures.latency_ms <= bound:
                    yield Option(cuts, primaries, figures)


def value(objective: Objective, figures: Figures) -> float:
    if objective is Objective.LATENCY:
        return figures.latency_ms
    if objective is Objective.THROUGHPUT:
        return figures.bottleneck_ms
    return figures.weighted_energy_j


def result_figures(result: Partition) -> Figures:
    return Figures(
        result.predicted_latency_ms,
        result.bottleneck_ms,
        result.energy_j,
        result.weighted_energy_j,
    )


def brute_force(
    variant: Variant, agents: Sequence[AgentView], request: PartitionRequest
) -> list[Option] | None:
    """The options of the stage count the request should pick (None: nothing fits)."""
    counts = [request.stages] if request.stages else range(1, request.max_stages + 1)
    per_count = {s: list(every_partition(variant, agents, request, s)) for s in counts}
    best = {
        s: min(value(request.objective, o.figures) for o in opts)
        for s, opts in per_count.items()
        if opts
    }
    if not best:
        return None
    overall = min(best.values())
    chosen = min(s for s, v in best.items() if v <= overall * 1.02 + 1e-12)
    return per_count[chosen]


def random_case(rng: random.Random) -> tuple[Variant, list[AgentView], PartitionRequest]:
    """A small random variant, fleet and request; the latency bound, when there is one,
    falls between the fastest and the slowest partition, so that it binds."""
    count = rng.randint(2, 8)
    flops = [rng.choice([0, rng.randint(10**5, 10**8)]) for _ in range(count)]
    params = [rng.randint(0, 4 * MB) for _ in range(count)]
    positions = rng.sample(range(1, count), rng.randint(min(1, count - 1), min(5, count - 1)))
    frontier = {p: rng.randint(1_000, 2 * MB) for p in positions}
    variant = make_variant(
        flops,
        params=params,
        frontier=frontier,
        input_bytes=rng.randint(1_000, MB),
        output_bytes=rng.randint(10, 100_000),
    )
    agents = [
        AgentView(
            f"a{i}",
            online=rng.random() > 0.1,
            battery_pct=rng.uniform(0, 100),
            plugged=rng.random() < 0.4,
            active_w=rng.uniform(1, 20),
            radio_j_per_mb=rng.uniform(0.01, 2.0),
            bandwidth_mbps=rng.choice([5.0, 20.0, 100.0, 1000.0]),
            link_latency_ms=rng.uniform(0, 20),
            speed_gflops=rng.choice([0.5, 1.0, 2.0, rng.uniform(0.2, 20)]),
            mem_free_bytes=rng.choice([None, rng.randint(MB, 20 * MB)]),
        )
        for i in range(rng.randint(1, 6))
    ]
    names = [a.agent_id for a in agents]
    request = PartitionRequest(
        stages=rng.choice([None, None, 1, 2, 3]),
        replicas=rng.choice([1, 1, 2]),
        objective=rng.choice(list(Objective)),
        pin_first=rng.choice([None, None, None, rng.choice(names)]),
        pin_last=rng.choice([None, None, None, rng.choice(names)]),
        max_shard_bytes=rng.choice([None, None, None, rng.randint(2 * MB, 12 * MB)]),
        max_stages=3,
        source=rng.choice([None, agents[0], AgentView("client", bandwidth_mbps=20.0)]),
    )
    if rng.random() < 0.6:
        counts = [request.stages] if request.stages else range(1, request.max_stages + 1)
        latencies = [
            o.figures.latency_ms
            for stages in counts
            for o in every_partition(variant, agents, request, stages)
        ]
        if latencies:
            bound = rng.uniform(min(latencies) * 0.95, max(latencies))
            request = replace(request, max_latency_ms=bound)
    return variant, agents, request


def with_measured_hops(
    rng: random.Random, agents: list[AgentView], request: PartitionRequest
) -> tuple[list[AgentView], PartitionRequest]:
    """Some agents (the source among them) measured their own broker hop."""
    hops = {a.agent_id: rng.choice([None, None, rng.uniform(0.1, 5.0)]) for a in agents}
    agents = [replace(a, hop_ms=hops[a.agent_id]) for a in agents]
    source = request.source
    if source is not None:
        hop = hops.get(source.agent_id, rng.choice([None, 2.0]))
        request = replace(request, source=replace(source, hop_ms=hop))
    return agents, request


def check_valid(
    result: Partition, variant: Variant, agents: Sequence[AgentView], request: PartitionRequest
) -> None:
    """Everything the request asks of a partition, checked plainly."""
    by_id = {a.agent_id: a for a in agents}
    positions = {c.position for c in variant.cut_points}
    assert set(result.cut_points) <= positions
    assert list(result.cut_points) == sorted(set(result.cut_points))
    assert len(set(result.primaries)) == len(result.primaries)
    edges = (0, *result.cut_points, len(variant.operators))
    for stage, (start, end) in zip(result.stages, itertools.pairwise(edges), strict=True):
        assert (stage.start_op, stage.end_op) == (start, end)
        shard, need = stage_need(variant, start, end)
        assert stage.param_bytes == shard
        assert len(stage.replicas) == request.replicas == len(set(stage.replicas))
        for agent_id in stage.replicas:
            assert eligible(by_id[agent_id], CONFIG.planner)
            assert need <= room(by_id[agent_id])
        if request.max_shard_bytes is not None:
            assert shard <= request.max_shard_bytes
    if request.pin_first:
        assert result.primaries[0] == request.pin_first
    if request.pin_last:
        assert result.primaries[-1] == request.pin_last
    figures = evaluate(
        variant, result.cut_points, result.primaries, by_id, config=CONFIG, source=request.source
    )
    assert figures.latency_ms == pytest.approx(result.predicted_latency_ms)
    if request.max_latency_ms is not None:  # to rounding: the search adds in another order
        assert result.predicted_latency_ms <= request.max_latency_ms * (1 + 1e-12)


@pytest.mark.parametrize("seed", range(300))
def test_the_optimizer_finds_the_brute_force_optimum(seed: int) -> None:
    variant, agents, request = random_case(random.Random(seed))
    agents, request = with_measured_hops(random.Random(seed + 20_000), agents, request)
    expected = brute_force(variant, agents, request)
    if expected is None:
        with pytest.raises(PartitionRefused):
            partition(variant, agents, request, CONFIG)
        return
    result = partition(variant, agents, request, CONFIG)
    check_valid(result, variant, agents, request)
    assert len(result.stages) == len(expected[0].primaries)
    ours = value(request.objective, result_figures(result))
    assert ours == pytest.approx(min(value(request.objective, o.figures) for o in expected))
    if request.objective is Objective.THROUGHPUT:
        # Among the partitions with the least bottleneck, the fastest.
        least = min(o.figures.bottleneck_ms for o in expected)
        fastest = min(
            o.figures.latency_ms for o in expected if o.figures.bottleneck_ms <= least * (1 + 1e-9)
        )
        assert result.predicted_latency_ms == pytest.approx(fastest)


def binding_case(rng: random.Random) -> tuple[Variant, list[AgentView], PartitionRequest]:
    """Energy or throughput under a latency bound that the unbounded optimum breaks."""
    while True:
        variant, agents, request = random_case(rng)
        request = replace(
            request,
            objective=rng.choice([Objective.ENERGY, Objective.THROUGHPUT]),
            max_latency_ms=None,
            pin_first=None,
            pin_last=None,
        )
        options = brute_force(variant, agents, request)
        if not options:
            continue
        best = min(options, key=lambda o: value(request.objective, o.figures))
        fastest = min(o.figures.latency_ms for o in options)
        if fastest < best.figures.latency_ms * (1 - 1e-6):  # a bound that can bind
            bound = rng.uniform(fastest, best.figures.latency_ms)
            return variant, agents, replace(request, max_latency_ms=bound)


@pytest.mark.parametrize("seed", range(60))
def test_a_binding_latency_bound_keeps_the_optimum(seed: int) -> None:
    variant, agents, request = binding_case(random.Random(seed))
    expected = brute_force(variant, agents, request)
    assert expected is not None
    result = partition(variant, agents, request, CONFIG)
    check_valid(result, variant, agents, request)
    best = min(value(request.objective, o.figures) for o in expected)
    assert value(request.objective, result_figures(result)) == pytest.approx(best)


def crowded_case(rng: random.Random) -> tuple[Variant, list[AgentView], PartitionRequest]:
    """More agents than stages, on a few levels of each figure: many are dominated."""
    variant = make_variant(
        [rng.randint(10**6, 10**8) for _ in range(6)],
        frontier={p: rng.randint(10_000, MB) for p in (1, 2, 4, 5)},
    )
    agents = [
        AgentView(
            f"a{i}",
            plugged=rng.random() < 0.5,
            battery_pct=rng.choice([30.0, 60.0, 100.0]),
            active_w=rng.choice([2.0, 5.0, 10.0]),
            radio_j_per_mb=rng.choice([0.1, 0.5]),
            bandwidth_mbps=rng.choice([10.0, 100.0]),
            link_latency_ms=rng.choice([1.0, 5.0]),
            speed_gflops=rng.choice([1.0, 4.0]),
            mem_free_bytes=rng.choice([None, 8 * MB]),
        )
        for i in range(9)
    ]
    request = PartitionRequest(
        stages=3,
        objective=rng.choice(list(Objective)),
        max_latency_ms=rng.choice([None, rng.uniform(40, 200)]),
    )
    return variant, agents, request


@pytest.mark.parametrize("seed", range(12))
def test_pruning_dominated_agents_keeps_the_optimum(seed: int) -> None:
    variant, agents, request = crowded_case(random.Random(seed))
    expected = brute_force(variant, agents, request)
    if expected is None:
        with pytest.raises(PartitionRefused):
            partition(variant, agents, request, CONFIG)
        return
    result = partition(variant, agents, request, CONFIG)
    check_valid(result, variant, agents, request)
    best = min(value(request.objective, o.figures) for o in expected)
    assert value(request.objective, result_figures(result)) == pytest.approx(best)


# --- Tables --------------------------------------------------------------------------

EVEN = make_variant([10**7] * 8)  # 80 MFLOPs in 8 equal operators, cuttable anywhere


@pytest.mark.parametrize("objective", [Objective.LATENCY, Objective.THROUGHPUT])
def test_a_slow_agent_gets_fewer_flops(objective: Objective) -> None:
    fast = agent("fast", speed_gflops=8.0)
    slow = agent("slow", speed_gflops=1.0)
    result = partition(EVEN, [slow, fast], PartitionRequest(stages=2, objective=objective))
    flops = primary_flops(result)
    assert flops["slow"] < flops["fast"]


def test_throughput_balances_the_stages_by_speed() -> None:
    fleet = [agent("a", speed_gflops=3.0), agent("b", speed_gflops=1.0)]
    result = partition(EVEN, fleet, PartitionRequest(stages=2, objective=Objective.THROUGHPUT))
    # 60 MFLOPs at 3 GFLOP/s and 20 at 1: 20 ms each, the best split.
    assert primary_flops(result) == {"a": 6 * 10**7, "b": 2 * 10**7}


def test_a_low_battery_unplugged_agent_is_left_out() -> None:
    flat = agent("flat", speed_gflops=50.0, plugged=False, battery_pct=5.0)
    steady = agent("steady", speed_gflops=1.0)
    result = partition(EVEN, [flat, steady], PartitionRequest())
    assert result.primaries == ("steady",)
    charging = replace(flat, plugged=True)
    assert partition(EVEN, [charging, steady], PartitionRequest()).primaries == ("flat",)


def test_a_nearly_flat_agent_gets_less_work_under_the_energy_objective() -> None:
    full = agent("full", plugged=True)
    low = agent("low", plugged=False, battery_pct=20.0)
    energy = partition(EVEN, [full, low], PartitionRequest(stages=2, objective=Objective.ENERGY))
    flops = primary_flops(energy)
    assert flops["low"] < flops["full"]
    assert flops["low"] == 10**7  # one operator: a stage cannot be empty


def test_pins_are_honoured() -> None:
    fleet = [agent(f"a{i}", speed_gflops=float(i + 1)) for i in range(4)]
    request = PartitionRequest(stages=3, pin_first="a0", pin_last="a1")
    result = partition(EVEN, fleet, request)
    assert result.primaries[0] == "a0"
    assert result.primaries[-1] == "a1"
    assert result.primaries[1] == "a3"  # the fastest of the rest
    auto = partition(EVEN, fleet, PartitionRequest(pin_first="a0", objective=Objective.THROUGHPUT))
    assert auto.primaries[0] == "a0"


@pytest.mark.parametrize(
    ("fleet", "request_", "constraint", "figure"),
    [
        ([agent("a")], PartitionRequest(max_latency_ms=5.0), "max_latency_ms", "82.0 ms"),
        ([agent("a"), agent("b")], PartitionRequest(max_shard_bytes=3000), "max_shard_bytes", ""),
        ([agent("a", mem_free_bytes=10_000)], PartitionRequest(), "memory", "MB"),
        ([agent("a"), agent("b")], PartitionRequest(replicas=3), "replicas", "2 eligible"),
        ([agent("a")], PartitionRequest(pin_first="nobody"), "pin_first", "nobody"),
        ([agent("a", online=False)], PartitionRequest(), "agents", ""),
        ([agent("a"), agent("b")], PartitionRequest(stages=3), "agents", "3 distinct"),
        ([agent("a")], PartitionRequest(stages=9), "stages", "at most 8"),
        (
            [agent("a"), agent("b")],
            PartitionRequest(pin_first="a", pin_last="a", stages=2),
            "pin_last",
            "distinct",
        ),
    ],
)
def test_refusals_name_the_constraint(
    fleet: list[AgentView], request_: PartitionRequest, constraint: str, figure: str
) -> None:
    with pytest.raises(PartitionRefused) as refused:
        partition(EVEN, fleet, request_)
    assert refused.value.constraint == constraint
    assert figure in refused.value.message


def test_the_latency_refusal_gives_the_best_latency_and_its_agents() -> None:
    fleet = [agent("pi", speed_gflops=1.0), agent("laptop", speed_gflops=4.0)]
    with pytest.raises(PartitionRefused) as refused:
        partition(EVEN, fleet, PartitionRequest(max_latency_ms=10.0))
    # 0.5 (hop) + 80 MFLOPs at 4 GFLOP/s (20 ms) + 1 ms overhead + 1 kB back + 0.5
    assert refused.value.predicted_latency_ms == pytest.approx(22.008)
    assert refused.value.message.startswith(
        "best predicted latency 22.0 ms exceeds the gate of 10 ms (1 stage: laptop)"
    )


def test_a_pinned_agent_without_room_is_refused() -> None:
    fleet = [agent("small", mem_free_bytes=1_000), agent("big")]
    with pytest.raises(PartitionRefused) as refused:
        partition(EVEN, fleet, PartitionRequest(pin_first="small"))
    assert refused.value.constraint == "pin_first"


def test_memory_limits_are_respected() -> None:
    variant = make_variant([10**7] * 4, params=[4 * MB, 1 * MB, 1 * MB, 1 * MB])
    small_fast = agent("small-fast", speed_gflops=10.0, mem_free_bytes=4 * MB)
    big_slow = agent("big-slow", speed_gflops=1.0, mem_free_bytes=10 * MB)
    result = partition(variant, [small_fast, big_slow], PartitionRequest())
    # The fast agent cannot take the first operator's 4 MB: the slow one takes it alone.
    assert [(s.primary, s.start_op, s.end_op) for s in result.stages] == [
        ("big-slow", 0, 1),
        ("small-fast", 1, 4),
    ]


def test_replicas_are_distinct_and_ordered_by_cost() -> None:
    fleet = [agent(f"a{i}", speed_gflops=float(2**i)) for i in range(5)]
    result = partition(EVEN, fleet, PartitionRequest(stages=2, replicas=3))
    for stage in result.stages:
        assert len(set(stage.replicas)) == 3
        assert list(stage.compute_ms[1:]) == sorted(stage.compute_ms[1:])
    primaries = set(result.primaries)
    assert primaries == {"a4", "a3"}
    # The fastest agents back each other up: a fallback may be another stage's primary.
    assert set(result.stages[0].replicas[1:]) & primaries


def test_auto_takes_one_stage_when_links_are_slow_and_the_source_is_fastest() -> None:
    source = agent("source", speed_gflops=10.0, bandwidth_mbps=2.0, link_latency_ms=20.0)
    fleet = [source, *(agent(f"pi{i}", bandwidth_mbps=2.0, link_latency_ms=20.0) for i in range(3))]
    for objective in Objective:
        request = PartitionRequest(objective=objective, source=source)
        result = partition(EVEN, fleet, request)
        assert result.primaries == ("source",), objective


def test_a_slow_source_keeps_the_first_layers_when_its_input_is_large() -> None:
    # MobileNet-like: a 600 kB input, a 10 kB frontier after the first 40% of the FLOPs.
    variant = make_variant(
        [40 * 10**6, 60 * 10**6], frontier={1: 10_000}, input_bytes=600_000, output_bytes=4_000
    )
    device = agent("device", speed_gflops=2.0, bandwidth_mbps=10.0, link_latency_ms=5.0)
    server = agent("server", speed_gflops=20.0, bandwidth_mbps=10.0, link_latency_ms=5.0)
    result = partition(variant, [device, server], PartitionRequest(source=device))
    # Whole on the device: 51 ms + 9 ms to answer; the input to the server: 490 ms and
    # more; split: the device 21 ms, 10 kB sent 14 ms, the server 4 ms, 9 ms to answer.
    assert result.primaries == ("device", "server")
    assert result.cut_points == (1,)
    figures = evaluate(
        variant,
        [1],
        ["device", "server"],
        {"device": device, "server": server},
        config=CONFIG,
        source=device,
    )
    assert result.predicted_latency_ms == pytest.approx(figures.latency_ms)
    assert figures.latency_ms < 50.0  # no 600 kB input crossing a 10 Mbit/s link
    remote = evaluate(
        variant, [], ["server"], {"device": device, "server": server}, config=CONFIG, source=device
    )
    assert remote.latency_ms > 480.0


def test_auto_takes_more_stages_when_compute_dominates() -> None:
    fleet = [agent(f"pi{i}", speed_gflops=1.0) for i in range(4)]
    result = partition(EVEN, fleet, PartitionRequest(objective=Objective.THROUGHPUT))
    assert len(result.stages) == 4
    assert result.bottleneck_ms < 25.0  # 20 MFLOPs each, not 80 on one


def test_auto_prefers_fewer_stages_within_two_percent() -> None:
    # Moving the 1 MFLOP operator off the 80 MFLOP one saves about 1% of the bottleneck.
    variant = make_variant([80 * 10**6, 10**6])
    fleet = [agent("a"), agent("b")]
    two = partition(variant, fleet, PartitionRequest(stages=2, objective=Objective.THROUGHPUT))
    auto = partition(variant, fleet, PartitionRequest(objective=Objective.THROUGHPUT))
    assert len(auto.stages) == 1
    assert two.bottleneck_ms < auto.bottleneck_ms <= two.bottleneck_ms * 1.02


def test_a_fallback_may_be_another_stages_primary_but_never_twice_in_one() -> None:
    fleet = [agent("a", speed_gflops=4.0), agent("b", speed_gflops=2.0)]
    result = partition(EVEN, fleet, PartitionRequest(stages=2, replicas=2))
    assert [set(s.replicas) for s in result.stages] == [{"a", "b"}, {"a", "b"}]
    assert result.stages[0].primary != result.stages[1].primary


def test_the_cost_model_figures() -> None:
    variant = make_variant([2 * 10**6, 10**6], input_bytes=125_000, output_bytes=250)
    a = agent("a", speed_gflops=1.0, bandwidth_mbps=8.0, link_latency_ms=2.0, active_w=4.0)
    b = agent("b", speed_gflops=2.0, plugged=False, battery_pct=50.0, radio_j_per_mb=1.0)
    client = agent("client", bandwidth_mbps=100.0)
    figures = evaluate(variant, [1], ["a", "b"], {"a": a, "b": b}, config=CONFIG, source=client)
    send_input = 125_000 * 8 / 100e3 + 0.5  # 10 ms + a hop
    stage_a = (1 + 2.0) + (2.0 + 10_000 * 8 / 8e3 + 0.5)  # compute; send 10 kB at 8 Mbit/s
    stage_b = (1 + 0.5) + (0.0 + 250 * 8 / 1e6 + 0.5)
    assert figures.latency_ms == pytest.approx(send_input + stage_a + stage_b)
    assert figures.bottleneck_ms == pytest.approx(stage_a)
    energy_a = 4.0 * 3.0 / 1e3 + 0.1 * (125_000 + 10_000) / MB
    energy_b = 5.0 * 1.5 / 1e3 + 1.0 * (10_000 + 250) / MB
    assert figures.energy_j == pytest.approx(energy_a + energy_b)
    weight_b = 1 + 3.0 * 0.5**2
    assert figures.weighted_energy_j == pytest.approx(energy_a + weight_b * energy_b)


def test_describe_lists_every_stage() -> None:
    fleet = [agent("rpi4-1", speed_gflops=1.0), agent("laptop-1", speed_gflops=1.0)]
    result = partition(EVEN, fleet, PartitionRequest(stages=2, objective=Objective.THROUGHPUT))
    text = describe(result)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["stage", "ops", "MFLOPs"]
    assert "[0, 4)" in lines[1] and "40.0" in lines[1]
    assert "[4, 8)" in lines[2]
    assert "float32, 2 stages, objective throughput" in lines[-1]


def test_an_uncuttable_variant_runs_as_one_stage() -> None:
    variant = replace(EVEN, cuttable=False, uncuttable_reason="a WHILE loop")
    result = partition(
        variant, [agent("a"), agent("b")], PartitionRequest(objective=Objective.THROUGHPUT)
    )
    assert result.cut_points == ()
    with pytest.raises(PartitionRefused, match="WHILE"):
        partition(variant, [agent("a"), agent("b")], PartitionRequest(stages=2))


@pytest.mark.parametrize(
    "kwargs", [{"replicas": 0}, {"stages": 0}, {"objective": "speed"}, {"max_latency_ms": -1}]
)
def test_nonsense_requests_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        PartitionRequest(**kwargs)  # type: ignore[arg-type]


def test_the_objective_may_be_named_by_a_string() -> None:
    request = PartitionRequest(objective="energy")  # type: ignore[arg-type]
    assert request.objective is Objective.ENERGY


def test_a_large_fleet_gets_a_valid_partition() -> None:
    rng = random.Random(7)
    variant = make_variant(
        [rng.randint(10**6, 10**8) for _ in range(40)],
        frontier={p: rng.randint(10_000, MB) for p in range(1, 40)},
    )
    fleet = [
        AgentView(
            f"a{i}",
            speed_gflops=rng.uniform(0.5, 20),
            bandwidth_mbps=rng.choice([10.0, 100.0, 1000.0]),
            link_latency_ms=rng.uniform(0.1, 10),
            mem_free_bytes=rng.choice([None, rng.randint(MB, 100 * MB)]),
            plugged=rng.random() < 0.5,
            battery_pct=rng.uniform(20, 100),
        )
        for i in range(200)
    ]
    for objective in Objective:
        request = PartitionRequest(stages=4, replicas=2, objective=objective)
        check_valid(partition(variant, fleet, request), variant, fleet, request)
