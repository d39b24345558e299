"""The per-request planner: tables of expected choices, and brute force on random fleets."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest

from splitmq.coordinator.planner import (
    AgentView,
    Candidate,
    DeploymentView,
    PlannerConfig,
    StageView,
    choose,
    eligible,
    objective,
    plan,
    route_cost,
    stage_predictions,
    within_budgets,
)
from splitmq.wire import Battery, EnergyLevel, Plan, PlanRefused, PlanRequest

CONFIG = PlannerConfig()


def fleet(*agents: AgentView) -> dict[str, AgentView]:
    return {a.agent_id: a for a in agents}


def deployment(
    stages: list[dict[str, float]],
    *,
    variant: str = "float32",
    fidelity: float = 1.0,
    name: str = "d1",
    bytes_between: int = 100_000,
) -> DeploymentView:
    return DeploymentView(
        deployment=name,
        epoch=1,
        model="m",
        version="v1",
        variant=variant,
        fidelity=fidelity,
        stages=tuple(
            StageView(i, tuple(times), times, bytes_between, bytes_between)
            for i, times in enumerate(stages)
        ),
    )


def request(**kwargs: object) -> PlanRequest:
    return PlanRequest(request_id="r1", client_id="c", model="m", **kwargs)  # type: ignore[arg-type]


LAPTOP = AgentView("laptop", active_w=15.0, plugged=True)
PHONE = AgentView("phone", active_w=3.0, plugged=False, battery_pct=80.0)
PI = AgentView("pi", active_w=4.0, plugged=True)


def test_performance_takes_the_fastest_route_saver_the_thriftiest() -> None:
    d = deployment([{"laptop": 10.0, "phone": 40.0}, {"laptop": 10.0, "phone": 40.0}])
    agents = fleet(LAPTOP, PHONE)
    fast = plan(request(energy_level=EnergyLevel.PERFORMANCE), [d], agents)
    thrifty = plan(request(energy_level=EnergyLevel.SAVER), [d], agents)
    assert isinstance(fast, Plan) and isinstance(thrifty, Plan)
    assert [stage[0] for stage in fast.route] == ["laptop", "laptop"]
    # 15 W x 20 ms = 0.3 J on the laptop; 3 W x 80 ms = 0.24 J on the phone, but its
    # battery (80%) weighs 1 + 3 * 0.04 = 1.12: 0.27 J -- still the thriftier.
    assert [stage[0] for stage in thrifty.route] == ["phone", "phone"]
    assert fast.predicted_latency_ms < thrifty.predicted_latency_ms
    assert thrifty.predicted_energy_j < fast.predicted_energy_j


def test_fallbacks_follow_the_chosen_agent() -> None:
    d = deployment([{"laptop": 10.0, "phone": 40.0, "pi": 20.0}])
    result = plan(request(energy_level=EnergyLevel.PERFORMANCE), [d], fleet(LAPTOP, PHONE, PI))
    assert isinstance(result, Plan)
    assert result.route == (("laptop", "pi", "phone"),)


def test_low_battery_agents_are_left_out_unless_plugged() -> None:
    d = deployment([{"phone": 1.0, "pi": 50.0}])
    flat = AgentView("phone", battery_pct=5.0, plugged=False)
    result = plan(request(energy_level=EnergyLevel.PERFORMANCE), [d], fleet(flat, PI))
    assert isinstance(result, Plan) and result.route == (("pi",),)
    charging = AgentView("phone", battery_pct=5.0, plugged=True)
    result = plan(request(energy_level=EnergyLevel.PERFORMANCE), [d], fleet(charging, PI))
    assert isinstance(result, Plan) and result.route[0][0] == "phone"


def test_energy_from_a_low_battery_weighs_more() -> None:
    d = deployment([{"a": 10.0, "b": 10.0}])
    full = AgentView("a", battery_pct=100.0, plugged=False, active_w=5.0)
    low = AgentView("b", battery_pct=20.0, plugged=False, active_w=4.0)
    result = plan(request(energy_level=EnergyLevel.SAVER), [d], fleet(full, low))
    assert isinstance(result, Plan) and result.route[0][0] == "a"


def test_min_fidelity_picks_the_variant() -> None:
    f32 = deployment([{"pi": 40.0}], variant="float32", fidelity=1.0, name="d-f32")
    i8 = deployment([{"pi": 10.0}], variant="int8", fidelity=0.97, name="d-i8")
    quick = plan(request(energy_level=EnergyLevel.PERFORMANCE), [f32, i8], fleet(PI))
    exact = plan(request(min_fidelity=0.99), [f32, i8], fleet(PI))
    assert isinstance(quick, Plan) and quick.variant == "int8"
    assert isinstance(exact, Plan) and exact.variant == "float32"


def test_the_input_crosses_no_link_when_the_clients_own_agent_runs_the_first_stage() -> None:
    phone = AgentView("phone", bandwidth_mbps=8.0, link_latency_ms=5.0, radio_j_per_mb=1.0)
    server = AgentView("server", bandwidth_mbps=8.0, link_latency_ms=5.0)
    agents = fleet(phone, server)
    d = DeploymentView(
        "d",
        1,
        "m",
        "v",
        "float32",
        1.0,
        (
            StageView(0, ("phone", "server"), {"phone": 10.0, "server": 2.0}, 600_000, 10_000),
            StageView(1, ("server",), {"server": 2.0}, 10_000, 4_000),
        ),
    )
    local = route_cost(d, ["phone", "server"], agents, CONFIG, client=phone)
    remote = route_cost(d, ["server", "server"], agents, CONFIG, client=phone)
    # The phone computes 10 ms and sends 10 kB; sending the 600 kB input costs 605 ms.
    assert local.latency_ms < 50
    assert remote.latency_ms > 600
    assert local.energy_j == pytest.approx(
        phone.active_w * 0.010
        + phone.radio_j_per_mb * 10_000 / 1e6
        + server.active_w * 0.002
        + server.radio_j_per_mb * (10_000 + 4_000) / 1e6
    )
    result = plan(request(), [d], agents, CONFIG, client=phone)
    assert isinstance(result, Plan) and [s[0] for s in result.route] == ["phone", "server"]
    assert result.predicted_latency_ms == pytest.approx(local.latency_ms)


def test_a_hop_costs_what_the_sending_agent_measured() -> None:
    measured = AgentView("measured", hop_ms=2.5)
    default = AgentView("default")
    d = deployment([{"measured": 10.0}, {"default": 20.0}])
    cost = route_cost(d, ["measured", "default"], fleet(measured, default), CONFIG)
    moved = 2 * 100_000 * 8 / (1000.0 * 1e3)  # two sends of 100 kB at 1000 Mbit/s
    # The client's hop (the default), then each agent's own: 2.5 ms, then the default.
    expected = CONFIG.hop_ms + 10.0 + 2.5 + 20.0 + CONFIG.hop_ms + moved
    assert cost.latency_ms == pytest.approx(expected)


def test_the_next_stage_on_the_same_agent_costs_no_transfer() -> None:
    slow_link = AgentView("a", bandwidth_mbps=1.0)
    d = deployment([{"a": 1.0}, {"a": 1.0}], bytes_between=125_000)  # 1 s at 1 Mbit/s
    together = route_cost(d, ["a", "a"], fleet(slow_link), CONFIG)
    assert together.latency_ms == pytest.approx(0.5 + 1 + 1 + 1000 + 0.5)


def with_queues(d: DeploymentView, depths: dict[int, dict[str, int]]) -> DeploymentView:
    """``d`` with the queue depths its agents' telemetry reported, by stage."""
    stages = tuple(replace(s, queue_depth=depths.get(s.stage, {})) for s in d.stages)
    return replace(d, stages=stages)


@pytest.mark.parametrize(
    ("depth", "queueing_ms", "latency_ms"),
    [
        # Two stages on "a" (10 ms, then 20 ms; 100 kB sent in 0.8 ms at 1000 Mbit/s after
        # each): an idle fleet, then requests waiting for stage 0, each holding its worker
        # for its compute and its send (10 + 0.8 = 10.8 ms).
        (0, 0.0, 0.5 + 10 + 0.8 + 0.5 + 20 + 0.8 + 0.5),
        (1, 10.8, 0.5 + 10.8 + 10 + 0.8 + 0.5 + 20 + 0.8 + 0.5),
        (5, 54.0, 0.5 + 54.0 + 10 + 0.8 + 0.5 + 20 + 0.8 + 0.5),
    ],
)
def test_the_queue_depth_telemetry_reports_is_in_the_prediction(
    depth: int, queueing_ms: float, latency_ms: float
) -> None:
    a, b = AgentView("a"), AgentView("b")
    d = with_queues(deployment([{"a": 10.0}, {"b": 20.0}]), {0: {"a": depth}})
    result = plan(request(), [d], fleet(a, b))
    assert isinstance(result, Plan) and result.predicted_stages is not None
    assert result.predicted_latency_ms == pytest.approx(latency_ms)
    first, second = result.predicted_stages
    assert (first.stage, first.agent_id, second.stage, second.agent_id) == (0, "a", 1, "b")
    assert first.transfer_ms == pytest.approx(CONFIG.hop_ms)  # the client's send
    assert first.queueing_ms == pytest.approx(queueing_ms) and first.compute_ms == 10.0
    assert second.transfer_ms == pytest.approx(0.8 + CONFIG.hop_ms) and second.queueing_ms == 0
    assert result.predicted_final_hop_ms == pytest.approx(0.8 + CONFIG.hop_ms)


def test_a_busy_replica_loses_to_an_idle_one_and_an_in_process_stage_does_not_queue() -> None:
    fast, slow = AgentView("fast"), AgentView("slow")
    d = deployment([{"fast": 10.0, "slow": 30.0}])
    idle = plan(request(energy_level=EnergyLevel.PERFORMANCE), [d], fleet(fast, slow))
    busy = plan(
        request(energy_level=EnergyLevel.PERFORMANCE),
        [with_queues(d, {0: {"fast": 4}})],
        fleet(fast, slow),
    )
    assert isinstance(idle, Plan) and isinstance(busy, Plan)
    assert idle.route == (("fast", "slow"),)
    assert busy.route == (("slow", "fast"),)  # 4 x 10.8 ms waiting: 30 ms is sooner
    # A stage that follows its own agent's goes on in-process: no queue, whatever it holds.
    chain = with_queues(deployment([{"a": 1.0}, {"a": 1.0}]), {1: {"a": 9}})
    parts, final_hop_ms = stage_predictions(chain, ["a", "a"], fleet(AgentView("a")), CONFIG)
    assert [p.queueing_ms for p in parts] == [0.0, 0.0] and parts[1].transfer_ms == 0.0
    cost = route_cost(chain, ["a", "a"], fleet(AgentView("a")), CONFIG)
    total = sum(p.transfer_ms + p.queueing_ms + p.compute_ms for p in parts) + final_hop_ms
    assert total == pytest.approx(cost.latency_ms)


@pytest.mark.parametrize(
    ("kwargs", "constraint"),
    [
        ({"max_latency_ms": 5.0}, "max_latency_ms"),
        ({"energy_j": 0.0001}, "energy_j"),
        ({"min_fidelity": 0.999}, "min_fidelity"),
        ({"version": "v9"}, "model"),
    ],
)
def test_refusals_name_the_constraint(kwargs: dict[str, object], constraint: str) -> None:
    d = deployment([{"pi": 20.0}], fidelity=0.98)
    result = plan(request(**kwargs), [d], fleet(PI))
    assert isinstance(result, PlanRefused)
    assert result.constraint == constraint
    assert result.message


def test_no_eligible_replica_is_refused_with_the_reason() -> None:
    d = deployment([{"phone": 1.0}, {"pi": 1.0}])
    flat = AgentView("phone", battery_pct=5.0, plugged=False)
    result = plan(request(), [d], fleet(flat, PI))
    assert isinstance(result, PlanRefused) and result.constraint == "battery"
    dead = AgentView("pi", online=False)
    result = plan(request(), [d], fleet(flat, dead))
    assert isinstance(result, PlanRefused) and result.constraint == "unavailable"
    assert "stage 1" in result.message and "pi" in result.message


def random_case(
    rng: random.Random,
) -> tuple[list[DeploymentView], dict[str, AgentView], PlanRequest]:
    agents = {
        f"a{i}": AgentView(
            f"a{i}",
            online=rng.random() > 0.1,
            battery_pct=rng.uniform(0, 100),
            plugged=rng.random() < 0.4,
            active_w=rng.uniform(1, 20),
            radio_j_per_mb=rng.uniform(0.01, 2.0),
            bandwidth_mbps=rng.choice([5.0, 20.0, 100.0, 1000.0]),
            link_latency_ms=rng.uniform(0, 20),
        )
        for i in range(rng.randint(2, 7))
    }
    names = list(agents)
    deployments = []
    for k, (variant, fidelity) in enumerate([("float32", 1.0), ("int8", rng.uniform(0.9, 1.0))]):
        stages = []
        for s in range(rng.randint(1, 4)):
            replicas = rng.sample(names, rng.randint(1, min(3, len(names))))
            times = {a: rng.uniform(1, 100) for a in replicas}
            stages.append(
                StageView(s, tuple(replicas), times, rng.randint(1, 10**6), rng.randint(1, 10**6))
            )
        deployments.append(
            DeploymentView(f"d{k}", k + 1, "m", "v1", variant, fidelity, tuple(stages))
        )
    req = PlanRequest(
        request_id="r",
        client_id="c",
        model="m",
        max_latency_ms=rng.choice([None, rng.uniform(20, 400)]),
        min_fidelity=rng.choice([None, 0.95]),
        energy_j=rng.choice([None, rng.uniform(0.05, 3.0)]),
        energy_level=rng.choice(list(EnergyLevel)),
        client_battery=Battery(50.0, plugged=True),
    )
    return deployments, agents, req


def brute_force_feasible(
    deployments: list[DeploymentView],
    agents: dict[str, AgentView],
    req: PlanRequest,
    client: AgentView | None = None,
) -> list[Candidate]:
    feasible = []
    for d in deployments:
        if req.min_fidelity is not None and d.fidelity < req.min_fidelity:
            continue
        options = [[a for a in s.replicas if eligible(agents.get(a), CONFIG)] for s in d.stages]
        for route in itertools.product(*options):
            cost = route_cost(d, route, agents, CONFIG, client=client)
            if within_budgets(cost, req):
                feasible.append(Candidate(d, tuple(route), cost))
    return feasible


def brute_force(
    deployments: list[DeploymentView],
    agents: dict[str, AgentView],
    req: PlanRequest,
    client: AgentView | None = None,
) -> Candidate | None:
    feasible = brute_force_feasible(deployments, agents, req, client)
    return choose(feasible, req.energy_level) if feasible else None


def random_client(rng: random.Random, agents: dict[str, AgentView]) -> AgentView | None:
    """No client, one of the fleet's agents (its own), or a client outside the fleet."""
    outsider = AgentView("outsider", bandwidth_mbps=rng.choice([5.0, 100.0]), link_latency_ms=5.0)
    return rng.choice([None, rng.choice(list(agents.values())), outsider])


def with_random_queues(
    rng: random.Random, deployments: list[DeploymentView]
) -> list[DeploymentView]:
    """Some replicas have requests waiting, as their telemetry says."""
    return [
        with_queues(
            d,
            {s.stage: {a: rng.choice([0, 0, 1, 3, 8]) for a in s.replicas} for s in d.stages},
        )
        for d in deployments
    ]


def with_measured_hops(rng: random.Random, agents: dict[str, AgentView]) -> dict[str, AgentView]:
    """Some agents measured their own broker hop (their round trip), the others did not."""
    return {
        k: replace(a, hop_ms=rng.choice([None, None, rng.uniform(0.1, 5.0)]))
        for k, a in agents.items()
    }


def with_sites(rng: random.Random, agents: dict[str, AgentView]) -> dict[str, AgentView]:
    """Some agents sit behind site brokers (hops between sites cross bridges)."""
    return {k: replace(a, site=rng.choice(["", "", "a", "b"])) for k, a in agents.items()}


@pytest.mark.parametrize("seed", range(300))
def test_the_planner_finds_the_brute_force_optimum(seed: int) -> None:
    deployments, agents, req = random_case(random.Random(seed))
    agents = with_measured_hops(random.Random(seed + 20_000), agents)
    agents = with_sites(random.Random(seed + 40_000), agents)
    deployments = with_random_queues(random.Random(seed + 30_000), deployments)
    client = random_client(random.Random(seed + 10_000), agents)
    expected = brute_force(deployments, agents, req, client)
    result = plan(req, deployments, agents, CONFIG, client=client)
    if expected is None:
        assert isinstance(result, PlanRefused), result
        return
    assert isinstance(result, Plan), result
    chosen = next(d for d in deployments if d.deployment == result.deployment)
    agents_chosen = [stage[0] for stage in result.route]
    cost = route_cost(chosen, agents_chosen, agents, CONFIG, client=client)
    assert cost.latency_ms == pytest.approx(result.predicted_latency_ms)
    assert within_budgets(cost, req)
    # The parts of the prediction add up to it.
    assert result.predicted_stages is not None and result.predicted_final_hop_ms is not None
    parts = sum(p.transfer_ms + p.queueing_ms + p.compute_ms for p in result.predicted_stages)
    assert parts + result.predicted_final_hop_ms == pytest.approx(result.predicted_latency_ms)
    # The same optimum (a tie may pick another route of equal value).
    feasible = brute_force_feasible(deployments, agents, req, client)
    best_latency = min(c.cost.latency_ms for c in feasible)
    best_energy = min(c.cost.weighted_energy_j for c in feasible)
    ours = objective(req.energy_level, cost, best_latency, best_energy)
    theirs = objective(req.energy_level, expected.cost, best_latency, best_energy)
    assert ours[0] == pytest.approx(theirs[0])


def test_the_clients_own_work_is_in_the_prediction_and_the_budget() -> None:
    d = deployment([{"pi": 20.0}])
    without = plan(request(), [d], fleet(PI))
    assert isinstance(without, Plan) and without.predicted_client_ms is None
    told = plan(request(client_ms=1.5), [d], fleet(PI))
    assert isinstance(told, Plan) and told.predicted_client_ms == 1.5
    assert told.predicted_latency_ms == pytest.approx(without.predicted_latency_ms + 1.5)
    assert told.route == without.route  # the same for every route: not the choice
    stages = sum(p.transfer_ms + p.queueing_ms + p.compute_ms for p in told.predicted_stages or ())
    assert told.predicted_latency_ms == pytest.approx(
        stages + (told.predicted_final_hop_ms or 0.0) + 1.5
    ), "the parts add up to the prediction"
    # a budget the route meets, but not with the client's work in it
    budget = without.predicted_latency_ms + 1.0
    assert isinstance(plan(request(max_latency_ms=budget), [d], fleet(PI)), Plan)
    refused = plan(request(max_latency_ms=budget, client_ms=1.5), [d], fleet(PI))
    assert isinstance(refused, PlanRefused) and refused.constraint == "max_latency_ms"
    assert f"takes {told.predicted_latency_ms:.3g} ms" in refused.message


@pytest.mark.parametrize("said", [-1.0, float("nan"), float("inf"), 1e9])
def test_a_client_work_figure_that_is_not_a_time_is_ignored(said: float) -> None:
    d = deployment([{"pi": 20.0}])
    without = plan(request(), [d], fleet(PI))
    told = plan(request(client_ms=said), [d], fleet(PI))
    assert isinstance(without, Plan) and isinstance(told, Plan)
    assert told.predicted_latency_ms == without.predicted_latency_ms
    assert told.predicted_client_ms == 0.0
