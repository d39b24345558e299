"""Plan 2 placements: the optimizer against brute force on small random instances
(objectives, latency gates, pins, memory, replicas, the shard limit), and ``auto``
choosing the chain when the branches are too light to pay for their extra hops."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

import pytest

from splitmq.coordinator.partition import (
    PartitionRefused,
    PartitionRequest,
    choose,
    evaluate_parallel,
    parallel_partition,
)
from splitmq.coordinator.partition.parallel import graph_stages
from splitmq.coordinator.planner import AgentView
from splitmq.wire import Objective, PlanShape
from splitmq.wire.manifest import Branch, ParallelSection, Variant

from .test_partition import CONFIG, MB, make_variant


def branchy_variant(
    trunk: int, branches: list[int], tail: int, *, branch_bytes: int = 40_000, params: int = MB
) -> Variant:
    """Operators: the trunk (0), one operator per branch, the tail (last, unless 0)."""
    flops = [trunk, *branches] + ([tail] if tail else [])
    count = len(flops)
    end = 1 + len(branches)
    variant = make_variant(
        flops,
        params=[params] * count,
        frontier={1: branch_bytes, **({end: branch_bytes * len(branches)} if tail else {})},
    )
    section = ParallelSection(
        start=1,
        end=end,
        branches=tuple(
            Branch((1 + i,), f, params, branch_bytes, branch_bytes) for i, f in enumerate(branches)
        ),
    )
    return replace(variant, parallel_sections=(section,))


def key(objective: Objective, figures: tuple[float, float, float, float]) -> tuple[float, float]:
    latency, bottleneck, _, weighted = figures
    if objective is Objective.THROUGHPUT:
        return (bottleneck, latency)
    if objective is Objective.ENERGY:
        return (weighted, latency)
    return (latency, 0.0)


def brute_force(
    variant: Variant, agents: list[AgentView], request: PartitionRequest
) -> tuple[float, float] | None:
    """Every injective assignment of agents to the stages, checked plainly."""
    section = variant.parallel_sections[0]
    stages = graph_stages(variant, section)
    by_id = {a.agent_id: a for a in agents}
    usable = [
        a for a in agents if a.online and (a.plugged or a.battery_pct >= CONFIG.battery_floor_pct)
    ]
    best = None
    for chosen in itertools.permutations([a.agent_id for a in usable], len(stages)):
        ok = True
        for index, (stage, agent_id) in enumerate(zip(stages, chosen, strict=True)):
            room = [
                a
                for a in usable
                if a.mem_free_bytes is None
                or stage.need_bytes <= a.mem_free_bytes * CONFIG.memory_headroom
            ]
            free = by_id[agent_id].mem_free_bytes
            if free is not None and stage.need_bytes > free * CONFIG.memory_headroom:
                ok = False
            if len(room) < request.replicas:
                ok = False
            if request.max_shard_bytes is not None and stage.param_bytes > request.max_shard_bytes:
                ok = False
            if index == 0 and request.pin_first not in (None, agent_id):
                ok = False
            if index == len(stages) - 1 and request.pin_last not in (None, agent_id):
                ok = False
        if request.pin_last is not None and stages[-1].role != "suffix":
            ok = False
        if not ok:
            continue
        figures = evaluate_parallel(
            variant, section, chosen, by_id, config=CONFIG, source=request.source
        )
        if request.max_latency_ms is not None and figures.latency_ms > request.max_latency_ms:
            continue
        value = key(request.objective, figures)
        if best is None or value < best:
            best = value
    return best


def random_case(rng: random.Random) -> tuple[Variant, list[AgentView], PartitionRequest]:
    branches = [rng.randint(10**5, 10**8) for _ in range(rng.randint(2, 3))]
    variant = branchy_variant(
        rng.choice([0, rng.randint(10**5, 10**8)]) or 1,
        branches,
        rng.choice([0, rng.randint(10**5, 10**7)]),
        branch_bytes=rng.randint(1_000, MB),
        params=rng.randint(MB // 10, 3 * MB),
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
            mem_free_bytes=rng.choice([None, rng.randint(MB, 8 * MB)]),
            hop_ms=rng.choice([None, rng.uniform(0.2, 3.0)]),
        )
        for i in range(rng.randint(3, 7))
    ]
    names = [a.agent_id for a in agents]
    request = PartitionRequest(
        replicas=rng.choice([1, 1, 2]),
        objective=rng.choice(list(Objective)),
        pin_first=rng.choice([None, None, None, rng.choice(names)]),
        pin_last=rng.choice([None, None, None, None, rng.choice(names)]),
        max_shard_bytes=rng.choice([None, None, rng.randint(MB // 5, 3 * MB)]),
        source=rng.choice([None, agents[0], AgentView("client", bandwidth_mbps=20.0)]),
    )
    if rng.random() < 0.4:
        request = replace(request, max_latency_ms=rng.uniform(5, 400))
    return variant, agents, request


@pytest.mark.parametrize("seed", range(60))
def test_the_parallel_optimizer_finds_the_brute_force_optimum(seed: int) -> None:
    variant, agents, request = random_case(random.Random(seed))
    expected = brute_force(variant, agents, request)
    try:
        found = parallel_partition(variant, agents, request, CONFIG)
    except PartitionRefused:
        assert expected is None, f"refused, brute force found {expected}"
        return
    assert expected is not None, "brute force finds nothing"
    figures = (
        found.predicted_latency_ms,
        found.bottleneck_ms,
        found.energy_j,
        found.weighted_energy_j,
    )
    got = key(request.objective, figures)
    assert math.isclose(got[0], expected[0], rel_tol=1e-9, abs_tol=1e-9)
    # The figures are those of the reference evaluation of its own primaries.
    by_id = {a.agent_id: a for a in agents}
    again = evaluate_parallel(
        variant,
        variant.parallel_sections[0],
        found.primaries,
        by_id,
        config=CONFIG,
        source=request.source,
    )
    assert math.isclose(again.latency_ms, found.predicted_latency_ms, rel_tol=1e-9)
    assert len(set(found.primaries)) == len(found.primaries)
    for stage in found.stages:
        assert len(stage.replicas) == request.replicas == len(set(stage.replicas))
    if request.pin_first:
        assert found.stages[0].primary == request.pin_first


def test_latency_is_the_slowest_branch_and_energy_the_sum() -> None:
    variant = branchy_variant(10**6, [4 * 10**7, 10**7], 10**6)
    agents = [AgentView(f"a{i}", speed_gflops=1.0, hop_ms=0.0) for i in range(4)]
    config = replace(CONFIG, stage_overhead_ms=0.0, join_ms=0.0)
    found = parallel_partition(variant, agents, PartitionRequest(), config)
    send = agents[0].send_ms(40_000)
    # the input's hop; the trunk 1 ms + its send of both branches' inputs; the slowest
    # branch 40 ms and its send; the tail 1 ms and its send
    expected = (
        config.hop_ms + 1 + agents[0].send_ms(80_000) + (40 + send) + 1 + agents[0].send_ms(1_000)
    )
    assert math.isclose(found.predicted_latency_ms, expected, rel_tol=1e-9)
    energy = sum(5.0 * ms / 1e3 for ms in (1, 40, 10, 1))
    assert found.energy_j > energy  # compute, plus the radio
    assert found.section == (1, 3)
    assert [s.operators for s in found.stages] == [(0,), (1,), (2,), (3,)]


def test_auto_takes_plan_2_for_heavy_branches_and_the_chain_for_light_ones() -> None:
    agents = [
        AgentView(f"a{i}", speed_gflops=1.0, bandwidth_mbps=100.0, link_latency_ms=2.0)
        for i in range(4)
    ]
    heavy = branchy_variant(10**5, [10**8, 10**8], 0, branch_bytes=4_000)
    chosen = choose(heavy, agents, PartitionRequest(), CONFIG, PlanShape.AUTO)
    assert chosen.section is not None  # two 100 ms branches side by side
    chain = choose(heavy, agents, PartitionRequest(), CONFIG, PlanShape.CHAIN)
    assert chosen.predicted_latency_ms < chain.predicted_latency_ms
    light = branchy_variant(10**5, [10**5, 10**5], 0, branch_bytes=4_000)
    assert choose(light, agents, PartitionRequest(), CONFIG, PlanShape.AUTO).section is None
    forced = choose(light, agents, PartitionRequest(), CONFIG, PlanShape.PARALLEL)
    assert forced.section is not None


def test_a_chain_only_model_is_refused_plan_2_with_what_to_do() -> None:
    variant = make_variant([10**6, 10**6])
    with pytest.raises(PartitionRefused, match="--plans chain"):
        parallel_partition(variant, [AgentView("a"), AgentView("b")])
    assert choose(variant, [AgentView("a")], plans=PlanShape.AUTO).section is None


def test_too_few_agents_for_one_per_stage_is_refused() -> None:
    variant = branchy_variant(10**6, [10**7, 10**7], 10**6)
    with pytest.raises(PartitionRefused) as refused:
        parallel_partition(variant, [AgentView("a"), AgentView("b")])
    assert refused.value.constraint == "agents" and "needs 4 agents" in str(refused.value)


@pytest.mark.parametrize(
    ("flag", "expected"),
    [((), None), (("--plans", "parallel"), PlanShape.PARALLEL), (("--plans", "auto"), "auto")],
)
def test_deploy_plans_flag_reaches_the_request(
    monkeypatch: pytest.MonkeyPatch, flag: tuple[str, ...], expected: object
) -> None:
    from splitmq.cli import main
    from splitmq.coordinator import cli
    from splitmq.wire import DeployReply

    asked = []

    def answer(_args: object, request: object, _timeout_s: float) -> DeployReply:
        asked.append(request)
        return DeployReply("r", ok=True, message="deployed")

    monkeypatch.setattr(cli, "request_deployment", answer)
    assert main(["deploy", "m", *flag]) == 0
    assert asked[0].plans == expected  # type: ignore[attr-defined]
