"""The per-request planner on stage graphs (Plan 2) and across site brokers' bridges:
hand-computed tables."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest

from splitmq.cli import build_parser
from splitmq.client.kpi import compute_kpis
from splitmq.client.records import AttemptRecord, RequestRecord
from splitmq.coordinator.cli import coordinator_config
from splitmq.coordinator.graph_routes import graph_routes, graph_stage_predictions
from splitmq.coordinator.planner import (
    AgentView,
    DeploymentView,
    PlannerConfig,
    StageView,
    plan,
    route_cost,
    stage_predictions,
)
from splitmq.wire import REQUESTER, EnergyLevel, Plan, PlanRefused, PlanRequest, TraceEntry

CONFIG = PlannerConfig(hop_ms=0.5, join_ms=0.2, bridge_ms=0.08)
# 80 Mbit/s and 1 ms: a send of N bytes takes 1 + N / 10,000 ms.
LINK = {"bandwidth_mbps": 80.0, "link_latency_ms": 1.0}
CLIENT = AgentView("client", **LINK)  # type: ignore[arg-type]


def agents(*names: str, sites: dict[str, str] | None = None) -> dict[str, AgentView]:
    sites = sites or {}
    return {n: AgentView(n, site=sites.get(n, ""), **LINK) for n in names}  # type: ignore[arg-type]


def request(**kwargs: object) -> PlanRequest:
    return PlanRequest(request_id="r1", client_id="c", model="m", **kwargs)  # type: ignore[arg-type]


def stage(
    index: int,
    compute: dict[str, float],
    sources: tuple[int, ...],
    targets: tuple[int, ...],
    *,
    output: int,
) -> StageView:
    return StageView(
        index, tuple(compute), compute, 10_000, output, sources=sources, targets=targets
    )


def diamond(join: bool = True) -> DeploymentView:
    """A prefix fans out to two branches (30 ms and 20 ms); a join stage, or the
    requester, joins them."""
    to = (3,) if join else (REQUESTER,)
    stages = [
        stage(0, {"p": 5.0}, (REQUESTER,), (1, 2), output=20_000),
        stage(1, {"b1": 30.0}, (0,), to, output=5_000),
        stage(2, {"b2": 20.0}, (0,), to, output=5_000),
    ]
    if join:
        stages.append(stage(3, {"j": 4.0}, (1, 2), (REQUESTER,), output=1_000))
    return DeploymentView("d1", 1, "m", "v1", "float32", 1.0, tuple(stages))


def test_a_stage_graph_costs_its_slowest_branch_plus_the_join() -> None:
    fleet = agents("p", "b1", "b2", "j")
    route = ("p", "b1", "b2", "j")
    cost = route_cost(diamond(), route, fleet, CONFIG, client=CLIENT)
    # input: link 1 + 10 kB 1 + hop 0.5 = 2.5; prefix 5, its send 1 + 2 + 0.5 = 3.5 -> 11;
    # branch 1 (slowest) 30 + send 1 + 0.5 + 0.5 = 2 -> 43; join 0.2 + 4 + 1.6 = 48.8.
    assert cost.latency_ms == pytest.approx(48.8)
    # energy: the sum -- 59 ms at 5 W, and 71 kB over the radio at 0.1 J/MB
    assert cost.energy_j == pytest.approx(0.295 + 0.0071)
    parts, final_hop = stage_predictions(diamond(), route, fleet, CONFIG, client=CLIENT)
    # as a trace lists them, by finish: the prefix at 7.5, branch 2 at 31, branch 1 at
    # 41 (its input arrived at 11: 20 ms before branch 2 finished), the join at 47.2
    # (its last input at 43, its merge 0.2 among its wait, as the agent measures it)
    assert [(p.stage, p.agent_id) for p in parts] == [(0, "p"), (2, "b2"), (1, "b1"), (3, "j")]
    table = [(p.transfer_ms, p.queueing_ms, p.compute_ms) for p in parts]
    expected = [(2.5, 0, 5), (3.5, 0, 20), (-20, 0, 30), (2, 0.2, 4)]
    assert [pytest.approx(row) for row in expected] == table
    assert final_hop == pytest.approx(1.6)
    total = sum(p.transfer_ms + p.queueing_ms + p.compute_ms for p in parts)
    assert total + final_hop == pytest.approx(cost.latency_ms)


def test_the_requester_joins_the_branches() -> None:
    fleet = agents("p", "b1", "b2")
    cost = route_cost(diamond(join=False), ("p", "b1", "b2"), fleet, CONFIG, client=CLIENT)
    # branch 1 done at 41, its send 2 -> 43, the requester's join 0.2
    assert cost.latency_ms == pytest.approx(43.2)
    parts, final_hop = graph_stage_predictions(
        diamond(join=False), ("p", "b1", "b2"), fleet, CONFIG, client=CLIENT
    )
    assert [p.stage for p in parts] == [0, 2, 1]
    assert final_hop == pytest.approx(2.2)


def test_a_tight_bound_a_chain_would_miss_is_met_by_the_stage_graph() -> None:
    fleet = agents("p", "b1", "b2", "j")
    # as a chain the same stages would take 2.5 + 8.5 + 32 + 22 + 5.6 = 70.6 ms
    result = plan(request(max_latency_ms=50.0), [diamond()], fleet, CONFIG, client=CLIENT)
    assert isinstance(result, Plan), result
    assert result.predicted_latency_ms == pytest.approx(48.8)
    refused = plan(request(max_latency_ms=45.0), [diamond()], fleet, CONFIG, client=CLIENT)
    assert isinstance(refused, PlanRefused) and refused.constraint == "max_latency_ms"
    assert "48.8 ms" in refused.message and "busy" not in refused.message  # the join's merge


def test_a_queued_branch_can_become_the_slowest() -> None:
    d = diamond()
    queued = StageView(
        2, ("b2",), {"b2": 20.0}, 10_000, 5_000, {"b2": 1}, sources=(0,), targets=(3,)
    )
    d = DeploymentView(
        "d1", 1, "m", "v1", "float32", 1.0, (d.stages[0], d.stages[1], queued, d.stages[3])
    )
    fleet = agents("p", "b1", "b2", "j")
    # branch 2 waits behind one request (its compute 20, its link's send 1.5), computes
    # 20 and sends 2: at the join at 54.5, after branch 1 (43)
    cost = route_cost(d, ("p", "b1", "b2", "j"), fleet, CONFIG, client=CLIENT)
    assert cost.latency_ms == pytest.approx(11 + 21.5 + 20 + 2 + 0.2 + 4 + 1.6)


def test_bridge_crossings_are_in_a_stage_graphs_prediction() -> None:
    fleet = agents("p", "b1", "b2", "j", sites={"b1": "site-a"})
    cost = route_cost(diamond(), ("p", "b1", "b2", "j"), fleet, CONFIG, client=CLIENT)
    # into site-a and back out: two crossings on the slowest branch
    assert cost.latency_ms == pytest.approx(48.8 + 2 * 0.08)


def chain(*replicas: tuple[str, ...]) -> DeploymentView:
    stages = tuple(
        StageView(i, names, dict.fromkeys(names, 10.0), 10_000, 10_000)
        for i, names in enumerate(replicas)
    )
    return DeploymentView("d1", 1, "m", "v1", "float32", 1.0, stages)


def test_the_route_stays_within_a_site_between_equal_replicas() -> None:
    sites = {"k1": "a", "k2": "a", "k3": "a", "m2": "b"}
    fleet = agents("k1", "c2", "m2", "k2", "k3", sites=sites)
    d = chain(("k1",), ("c2", "m2", "k2"), ("k3",))  # the site's own replica listed last
    result = plan(request(), [d], fleet, CONFIG, client=CLIENT)
    assert isinstance(result, Plan), result
    assert [s[0] for s in result.route] == ["k1", "k2", "k3"]
    # the input into site a, the result out: two crossings
    within = route_cost(d, ("k1", "k2", "k3"), fleet, CONFIG, client=CLIENT)
    no_bridges = route_cost(d, ("k1", "k2", "k3"), fleet, PlannerConfig(bridge_ms=0.0), CLIENT)
    assert within.latency_ms - no_bridges.latency_ms == pytest.approx(2 * 0.08)
    # out to the central broker and back in: two more; to site b and back: four more
    central = route_cost(d, ("k1", "c2", "k3"), fleet, CONFIG, client=CLIENT)
    other_site = route_cost(d, ("k1", "m2", "k3"), fleet, CONFIG, client=CLIENT)
    assert central.latency_ms - within.latency_ms == pytest.approx(2 * 0.08)
    assert other_site.latency_ms - within.latency_ms == pytest.approx(4 * 0.08)
    # and the parts the plan predicts carry them
    parts = sum(p.transfer_ms + p.queueing_ms + p.compute_ms for p in result.predicted_stages or ())
    assert parts + (result.predicted_final_hop_ms or 0.0) == pytest.approx(within.latency_ms)
    assert result.predicted_stages is not None
    assert result.predicted_stages[0].transfer_ms == pytest.approx(1 + 1 + 0.5 + 0.08)


def test_splitmq_coordinator_bridge_ms() -> None:
    def planner(*options: str) -> PlannerConfig:
        arguments = build_parser().parse_args(["coordinator", *options])
        return coordinator_config(arguments).planner

    assert planner().bridge_ms == PlannerConfig().bridge_ms
    assert planner("--bridge-ms", "12.5").bridge_ms == 12.5


def paths_latency(
    d: DeploymentView, route: tuple[str, ...], fleet: dict[str, AgentView], client: AgentView
) -> float:
    """The latency written another way: the longest path from the client's send to the
    requester, every stage and hop on it added up."""
    where = dict(zip((s.stage for s in d.stages), route, strict=True))
    by_stage = {s.stage: s for s in d.stages}

    def site(stage: int) -> str:
        return "" if stage == REQUESTER else fleet[where[stage]].site

    def stage_ms(s: StageView) -> float:
        sources = s.sources or ()
        local = all(x != REQUESTER and where[x] == where[s.stage] for x in sources)
        queued = (
            0.0
            if local
            else s.queue_depth.get(where[s.stage], 0)
            * (s.compute_ms[where[s.stage]] + fleet[where[s.stage]].send_ms(s.output_bytes))
        )
        join = CONFIG.join_ms if len(sources) > 1 else 0.0
        return join + queued + s.compute_ms[where[s.stage]]

    def edge_ms(a: int, b: int) -> float:
        sender = fleet[where[a]]
        s = by_stage[a]
        if b != REQUESTER and where[b] == where[a]:
            return 0.0
        remote = any(t == REQUESTER or where[t] != where[a] for t in s.targets or ())
        send = sender.send_ms(s.output_bytes) + (sender.hop_ms or CONFIG.hop_ms) if remote else 0
        bridges = {("", ""): 0, ("a", "a"): 0, ("b", "b"): 0}.get((site(a), site(b)))
        count = bridges if bridges is not None else (site(a) != "") + (site(b) != "")
        return send + count * CONFIG.bridge_ms

    entries = [s for s in d.stages if REQUESTER in (s.sources or ())]
    in_bytes = sum(s.input_bytes for s in entries if where[s.stage] != client.agent_id)
    start = (client.send_ms(in_bytes) if in_bytes else 0.0) + CONFIG.hop_ms
    finals = [s for s in d.stages if REQUESTER in (s.targets or ())]

    def longest(stage: int) -> float:  # from the stage's start to the requester
        s = by_stage[stage]
        return stage_ms(s) + max(
            edge_ms(stage, t) + (0.0 if t == REQUESTER else longest(t)) for t in s.targets or ()
        )

    requester_join = CONFIG.join_ms if len(finals) > 1 else 0.0
    return requester_join + max(
        start + (CONFIG.bridge_ms if site(s.stage) else 0.0) + longest(s.stage) for s in entries
    )


@pytest.mark.parametrize("seed", range(40))
def test_a_stage_graphs_latency_is_its_longest_path(seed: int) -> None:
    rng = random.Random(seed)
    names = ["n1", "n2", "n3", "n4"]
    fleet = {
        n: AgentView(
            n,
            bandwidth_mbps=rng.choice([10.0, 100.0]),
            link_latency_ms=rng.uniform(0, 3),
            hop_ms=rng.choice([None, rng.uniform(0.1, 2)]),
            site=rng.choice(["", "a", "b"]),
        )
        for n in names
    }
    base = diamond(join=rng.random() < 0.5)
    stages = tuple(
        replace(
            s,
            replicas=tuple(names),
            compute_ms={n: rng.uniform(1, 40) for n in names},
            queue_depth={n: rng.choice([0, 0, 2]) for n in names},
        )
        for s in base.stages
    )
    d = replace(base, stages=stages)
    client = rng.choice([CLIENT, replace(CLIENT, agent_id="n1")])
    route = tuple(rng.choice(names) for _ in stages)
    cost = route_cost(d, route, fleet, CONFIG, client=client)
    assert cost.latency_ms == pytest.approx(paths_latency(d, route, fleet, client))
    parts, final_hop = stage_predictions(d, route, fleet, CONFIG, client=client)
    total = sum(p.transfer_ms + p.queueing_ms + p.compute_ms for p in parts)
    assert total + final_hop == pytest.approx(cost.latency_ms)
    # the planner's choice is the fastest of every route, weighed one by one
    chosen = plan(request(energy_level=EnergyLevel.PERFORMANCE), [d], fleet, CONFIG, client=client)
    assert isinstance(chosen, Plan)
    every = [
        route_cost(d, r, fleet, CONFIG, client=client).latency_ms
        for r in itertools.product(names, repeat=len(stages))
    ]
    assert chosen.predicted_latency_ms == pytest.approx(min(every))


def test_the_report_sets_a_graphs_predicted_parts_beside_its_trace() -> None:
    fleet = agents("p", "b1", "b2", "j")
    route = ("p", "b1", "b2", "j")
    parts, final_hop = stage_predictions(diamond(), route, fleet, CONFIG, client=CLIENT)
    # what the agents would stamp if the model were exact (ms after the client's send),
    # listed by finish as the client merges a graph's trace
    stamps = {0: (2.5, 2.5, 7.5), 1: (11, 11, 41), 2: (11, 11, 31), 3: (43, 43.2, 47.2)}
    trace = tuple(
        TraceEntry(stage, route[stage], *stamps[stage])
        for stage in sorted(stamps, key=lambda s: stamps[s][2])
    )
    record = RequestRecord(
        "r",
        "m",
        sent_ms=0.0,
        finished_ms=48.8,
        ok=True,
        attempts=(AttemptRecord(0, route, 0.0, "result"),),
        predicted_latency_ms=48.8,
        predicted_stages=parts,
        predicted_final_hop_ms=final_hop,
        trace=trace,
    )
    report = compute_kpis([record]).prediction
    assert report.parts, "the trace was not set beside the prediction"
    for part in (*report.parts, report.cost_model, report.queueing):
        assert part.count == 1
        assert part.measured_median == pytest.approx(part.predicted_median), part.part


def test_past_the_cap_each_stage_keeps_its_fastest_replicas() -> None:
    def used(count: int) -> set[str]:
        names = [f"n{i}" for i in range(count)]
        fleet = agents(*names)
        fleet["n0"] = replace(fleet["n0"], active_w=0.5)  # the slowest, the thriftiest
        d = diamond()
        stages = tuple(
            replace(s, replicas=tuple(names), compute_ms={n: 9.0 - i for i, n in enumerate(names)})
            for s in d.stages
        )
        routes = graph_routes(replace(d, stages=stages), fleet, CONFIG, CLIENT)
        return {a for r in routes for a in r.agents}

    assert "n0" in used(4)  # 4^4 = 256 routes, all weighed: n0 is on the Pareto front
    assert "n0" not in used(5)  # 5^4 = 625, above MAX_ROUTES: only the fastest 4 kept
