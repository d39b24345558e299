"""Choosing a task's member and variant (coordinator/task_choice.py), from tables and
against brute force.

The members are the three digits classifiers shipped in tests/data/pool (small, medium,
large; float32 and int8), with the accuracies their manifests measured on the held-out
digits: small 0.79, medium 0.94, large 0.97. Their compute times follow their FLOPs.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from pathlib import Path

import pytest

from splitmq.cli import build_parser
from splitmq.converter.pool import open_entry
from splitmq.coordinator.cli import coordinator_config
from splitmq.coordinator.planner import (
    AgentView,
    Candidate,
    DeploymentView,
    PlannerConfig,
    StageView,
    eligible,
    plan,
    route_cost,
    within_budgets,
)
from splitmq.coordinator.service import Coordinator
from splitmq.coordinator.task_choice import (
    TaskChoiceConfig,
    annotate,
    choice_key,
    effective_level,
    plan_task,
)
from splitmq.errors import ConfigError
from splitmq.transport import MemoryBroker
from splitmq.wire import Battery, EnergyLevel, Plan, PlanRefused, PlanRequest
from splitmq.wire.manifest import Manifest
from tests.data import POOL_DIR, TASK, TASK_MEMBERS

CONFIG = PlannerConfig()
LAPTOP = AgentView("laptop", active_w=15.0, plugged=True, speed_gflops=2.0)
PHONE = AgentView("phone", active_w=3.0, plugged=False, battery_pct=80.0, speed_gflops=0.5)
FLEET = {a.agent_id: a for a in (LAPTOP, PHONE)}
OVERHEAD_MS = 0.05
INT8_SPEEDUP = 0.6


def manifests() -> dict[str, Manifest]:
    return {name: open_entry(POOL_DIR, name).manifest for name in TASK_MEMBERS}


def member_views(agents: dict[str, AgentView] = FLEET) -> list[DeploymentView]:
    """Every member and variant deployed in one stage on every agent, then annotated
    from the shipped manifests (task, accuracy) as the coordinator does."""
    found = manifests()
    views = []
    for epoch, (name, manifest) in enumerate(found.items(), start=1):
        for variant in ("float32", "int8"):
            mflops = manifest.variants[variant].total_flops / 1e6
            factor = INT8_SPEEDUP if variant == "int8" else 1.0
            times = {
                a.agent_id: OVERHEAD_MS + factor * mflops / a.speed_gflops for a in agents.values()
            }
            stage = StageView(0, tuple(agents), times, 256, 40)
            fidelity = manifest.variants[variant].fidelity
            views.append(
                DeploymentView(
                    f"{name}-{variant}",
                    epoch,
                    name,
                    manifest.version,
                    variant,
                    1.0 if fidelity is None else fidelity.top1_agreement,
                    (stage,),
                )
            )
    return annotate(views, lambda model, version: found.get(model))


def ask(**kwargs: object) -> PlanRequest:
    return PlanRequest(request_id="r", client_id="c", model="", task=TASK, **kwargs)  # type: ignore[arg-type]


def chosen(result: Plan | PlanRefused) -> tuple[str, str]:
    assert isinstance(result, Plan), result
    assert result.task == TASK
    return result.model, result.variant


def test_the_shipped_members_have_real_accuracies_that_differ() -> None:
    views = {(v.model, v.variant): v for v in member_views()}
    accuracy = {key: v.accuracy for key, v in views.items()}
    assert all(a is not None for a in accuracy.values())
    small, medium, large = (accuracy[(name, "float32")] or 0.0 for name in TASK_MEMBERS)
    assert small < medium < large
    assert large - small > 0.1
    assert {v.task for v in views.values()} == {TASK}


LOW, CRITICAL = 40.0, 10.0
TABLE = [
    # energy level, constraints, client battery (None: unknown) -> member, variant
    ("performance", {}, None, ("digits-large", "float32")),
    ("performance", {"max_latency_ms": 3.0}, None, ("digits-large", "int8")),
    ("performance", {"max_latency_ms": 2.0}, None, ("digits-medium", "int8")),
    ("performance", {"energy_j": 0.0005}, None, ("digits-small", "float32")),
    ("performance", {"min_accuracy": 0.9}, None, ("digits-large", "float32")),
    ("performance", {}, Battery(LOW, plugged=False), ("digits-small", "int8")),
    ("performance", {"min_accuracy": 0.9}, Battery(LOW, False), ("digits-medium", "int8")),
    ("performance", {}, Battery(CRITICAL, plugged=False), ("digits-small", "int8")),
    ("performance", {}, Battery(CRITICAL, plugged=True), ("digits-large", "float32")),
    ("performance", {"min_accuracy": 0.95}, Battery(CRITICAL, False), ("digits-large", "int8")),
    ("balanced", {}, None, ("digits-small", "int8")),
    ("balanced", {"min_accuracy": 0.9}, None, ("digits-medium", "int8")),
    ("balanced", {"min_accuracy": 0.95}, None, ("digits-large", "int8")),
    ("balanced", {"min_accuracy": 0.9}, Battery(CRITICAL, False), ("digits-medium", "int8")),
    ("saver", {}, None, ("digits-small", "int8")),
    ("saver", {"min_accuracy": 0.9}, None, ("digits-medium", "int8")),
    ("saver", {"min_accuracy": 0.972}, None, ("digits-large", "float32")),
    ("saver", {"min_accuracy": 0.9, "max_latency_ms": 2.0}, None, ("digits-medium", "int8")),
]


@pytest.mark.parametrize(("level", "constraints", "battery", "expected"), TABLE)
def test_the_choice_for_every_energy_level_and_constraint(
    level: str,
    constraints: dict[str, float],
    battery: Battery | None,
    expected: tuple[str, str],
) -> None:
    request = ask(energy_level=EnergyLevel(level), client_battery=battery, **constraints)
    result = plan(request, member_views(), FLEET, CONFIG)
    assert chosen(result) == expected
    assert isinstance(result, Plan)
    views = {(v.model, v.variant): v for v in member_views()}
    assert result.accuracy == views[expected].accuracy


def test_a_falling_client_battery_moves_the_choice_to_cheaper_members() -> None:
    served = []
    for pct in (100.0, 60.0, 45.0, 30.0, 15.0, 5.0):
        request = ask(energy_level=EnergyLevel.PERFORMANCE, client_battery=Battery(pct, False))
        served.append(chosen(plan(request, member_views(), FLEET, CONFIG)))
    sizes = [list(TASK_MEMBERS).index(model) for model, _ in served]
    assert sizes == sorted(sizes, reverse=True)
    assert served[0] == ("digits-large", "float32") and served[-1][0] == "digits-small"


def test_the_clients_own_agent_gives_the_battery_when_the_request_does_not() -> None:
    client = AgentView("c", battery_pct=5.0, plugged=False)
    request = ask(energy_level=EnergyLevel.PERFORMANCE)
    result = plan(request, member_views(), FLEET, CONFIG, client=client)
    assert chosen(result)[0] == "digits-small"


@pytest.mark.parametrize(
    ("level", "battery", "expected"),
    [
        ("performance", None, "performance"),
        ("performance", (60.0, False), "performance"),
        ("performance", (40.0, False), "balanced"),
        ("balanced", (40.0, False), "saver"),
        ("saver", (40.0, False), "saver"),
        ("performance", (10.0, False), "saver"),
        ("performance", (10.0, True), "performance"),
    ],
)
def test_the_energy_level_a_battery_leaves(
    level: str, battery: tuple[float, bool] | None, expected: str
) -> None:
    pct, plugged = battery if battery is not None else (None, True)
    assert effective_level(EnergyLevel(level), pct, plugged) is EnergyLevel(expected)


def test_a_min_accuracy_no_member_reaches_is_refused_with_the_best_on_offer() -> None:
    result = plan(ask(min_accuracy=0.99), member_views(), FLEET, CONFIG)
    assert isinstance(result, PlanRefused) and result.constraint == "min_accuracy"
    assert result.model == TASK
    assert "the most accurate deployed member of task digits (digits-large float32)" in (
        result.message
    )
    assert "reaches 0.973, below the 0.990 asked" in result.message


@pytest.mark.parametrize(
    ("constraints", "constraint", "words"),
    [
        ({"max_latency_ms": 0.5}, "max_latency_ms", "the fastest deployed member (digits-small"),
        (
            {"min_accuracy": 0.9, "energy_j": 0.0002},
            "energy_j",
            "the thriftiest deployed member meeting min_accuracy (digits-medium int8, "
            "accuracy 0.942)",
        ),
    ],
)
def test_a_budget_no_member_meets_is_refused_with_the_figures(
    constraints: dict[str, float], constraint: str, words: str
) -> None:
    result = plan(ask(**constraints), member_views(), FLEET, CONFIG)
    assert isinstance(result, PlanRefused) and result.constraint == constraint
    assert words in result.message


def test_a_task_with_no_deployed_member_is_refused() -> None:
    result = plan(replace(ask(), task="faces"), member_views(), FLEET, CONFIG)
    assert isinstance(result, PlanRefused) and result.constraint == "task"
    assert "no deployed member of task faces (deployed tasks: digits)" in result.message


def test_without_labels_members_rank_by_agreement_and_min_accuracy_is_refused() -> None:
    agreement = {"digits-small": 0.8, "digits-medium": 0.95, "digits-large": 1.0}
    views = [
        replace(v, accuracy=None, agreement=agreement[v.model] - (v.variant == "int8") * 0.01)
        for v in member_views()
    ]
    result = plan(ask(energy_level=EnergyLevel.PERFORMANCE), views, FLEET, CONFIG)
    assert chosen(result) == ("digits-large", "float32")
    assert isinstance(result, Plan) and result.accuracy is None
    refused = plan(ask(min_accuracy=0.9), views, FLEET, CONFIG)
    assert isinstance(refused, PlanRefused) and refused.constraint == "min_accuracy"
    assert "unknown" in refused.message and "splitmq evaluate --task digits" in refused.message


def test_a_plan_lists_every_member_weighed_with_its_figures() -> None:
    result = plan(ask(min_accuracy=0.9), member_views(), FLEET, CONFIG)
    assert isinstance(result, Plan) and result.candidates is not None
    weighed = {(c.model, c.variant): c for c in result.candidates}
    assert set(weighed) == {(v.model, v.variant) for v in member_views()}
    for (model, _), candidate in weighed.items():
        assert candidate.accuracy is not None and candidate.predicted_latency_ms is not None
        expected = "min_accuracy" if model == "digits-small" else None
        assert candidate.excluded == expected, candidate
    mine = weighed[(result.model, result.variant)]
    assert mine.predicted_latency_ms == result.predicted_latency_ms
    assert mine.predicted_energy_j == result.predicted_energy_j
    # a latency budget only the int8 variants meet: the float32 ones say so
    result = plan(ask(max_latency_ms=3.0), member_views(), FLEET, CONFIG)
    assert isinstance(result, Plan) and result.candidates is not None
    missed = {(c.model, c.variant): c.excluded for c in result.candidates}
    assert missed[("digits-large", "float32")] == "max_latency_ms"
    assert missed[("digits-large", "int8")] is None


def test_a_task_request_naming_a_version_is_refused() -> None:
    result = plan(ask(version="7ac2a57d5a11"), member_views(), FLEET, CONFIG)
    assert isinstance(result, PlanRefused) and result.constraint == "version"
    assert "name the member and its version instead of the task" in result.message


def test_the_battery_levels_can_be_set() -> None:
    request = ask(energy_level=EnergyLevel.PERFORMANCE, client_battery=Battery(60.0, False))
    assert chosen(plan(request, member_views(), FLEET, CONFIG)) == ("digits-large", "float32")
    higher = TaskChoiceConfig(low_battery_pct=80.0, critical_battery_pct=70.0)
    result = plan_task(request, member_views(), FLEET, CONFIG, choice=higher)
    assert chosen(result)[0] == "digits-small"  # planned as saver: 60 % is below 70 %
    with pytest.raises(ConfigError, match="critical at most low"):
        TaskChoiceConfig(low_battery_pct=20.0, critical_battery_pct=50.0)


def test_splitmq_coordinator_task_battery_levels() -> None:
    def config(*options: str) -> TaskChoiceConfig:
        arguments = build_parser().parse_args(["coordinator", *options])
        return coordinator_config(arguments).task_choice

    assert config() == TaskChoiceConfig()
    assert config("--task-battery-levels", "70,30") == TaskChoiceConfig(70.0, 30.0)
    with pytest.raises(ConfigError, match="two percentages LOW,CRITICAL"):
        config("--task-battery-levels", "70")
    with pytest.raises(ConfigError, match="critical at most low"):
        config("--task-battery-levels", "20,50")


def test_a_model_request_still_plans_the_model_named() -> None:
    request = PlanRequest(request_id="r", client_id="c", model="digits-small")
    result = plan(request, member_views(), FLEET, CONFIG)
    assert isinstance(result, Plan) and result.model == "digits-small" and result.task is None


# --- against brute force ---------------------------------------------------------------


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
        for i in range(rng.randint(2, 5))
    }
    names = list(agents)
    known = rng.random() < 0.8
    views = []
    for m in range(rng.randint(1, 4)):
        size = rng.uniform(1, 50)
        accuracy = rng.uniform(0.6, 0.99)
        for variant, factor, loss in (("float32", 1.0, 0.0), ("int8", 0.6, rng.uniform(0, 0.03))):
            stages = []
            for s in range(rng.randint(1, 3)):
                replicas = rng.sample(names, rng.randint(1, min(3, len(names))))
                times = {a: factor * size * rng.uniform(0.5, 2.0) for a in replicas}
                bytes_in, bytes_out = rng.randint(1, 10**5), rng.randint(1, 10**5)
                stages.append(StageView(s, tuple(replicas), times, bytes_in, bytes_out))
            views.append(
                DeploymentView(
                    f"m{m}-{variant}",
                    m + 1,
                    f"m{m}",
                    "v1",
                    variant,
                    1.0 - loss,
                    tuple(stages),
                    task=rng.choice([TASK, TASK, TASK, "other"]),
                    accuracy=accuracy - loss if known else None,
                    agreement=None if known else rng.choice([None, rng.uniform(0.5, 1.0)]),
                )
            )
    request = ask(
        max_latency_ms=rng.choice([None, rng.uniform(20, 400)]),
        energy_j=rng.choice([None, rng.uniform(0.05, 3.0)]),
        min_accuracy=rng.choice([None, None, rng.uniform(0.6, 0.99)]),
        energy_level=rng.choice(list(EnergyLevel)),
        client_battery=rng.choice([None, Battery(rng.uniform(0, 100), rng.random() < 0.3)]),
    )
    return views, agents, request


def brute_force(
    views: list[DeploymentView], agents: dict[str, AgentView], request: PlanRequest
) -> tuple[list[Candidate], bool]:
    """Every feasible (member, variant, route), by enumerating every route."""
    members = [v for v in views if v.task == request.task]
    if request.min_accuracy is not None:
        members = [v for v in members if v.accuracy is not None]
        members = [v for v in members if (v.accuracy or 0.0) >= request.min_accuracy]
    known = all(v.accuracy is not None for v in members)
    feasible = []
    for view in members:
        options = [[a for a in s.replicas if eligible(agents.get(a), CONFIG)] for s in view.stages]
        for route in itertools.product(*options):
            cost = route_cost(view, route, agents, CONFIG)
            if within_budgets(cost, request):
                feasible.append(Candidate(view, tuple(route), cost))
    return feasible, known


@pytest.mark.parametrize("seed", range(200))
def test_the_choice_is_the_brute_force_optimum(seed: int) -> None:
    views, agents, request = random_case(random.Random(seed))
    feasible, known = brute_force(views, agents, request)
    result = plan(request, views, agents, CONFIG)
    if not feasible:
        assert isinstance(result, PlanRefused), result
        return
    assert isinstance(result, Plan), result
    battery = request.client_battery
    level = effective_level(
        request.energy_level,
        None if battery is None else battery.pct,
        True if battery is None else battery.plugged,
    )
    view = next(v for v in views if v.deployment == result.deployment)
    route = [stage[0] for stage in result.route]
    ours = Candidate(view, tuple(route), route_cost(view, route, agents, CONFIG))
    assert within_budgets(ours.cost, request)
    best = min(feasible, key=lambda c: choice_key(level, c, known))
    assert choice_key(level, ours, known) == pytest.approx(choice_key(level, best, known))
    assert result.accuracy == view.accuracy and result.task == TASK
    # the plan lists every member of the task, and only those with a feasible route that
    # meet min_accuracy as meeting every constraint
    weighed = {(c.model, c.variant): c for c in result.candidates or ()}
    assert set(weighed) == {(v.model, v.variant) for v in views if v.task == TASK}
    meeting = {(c.deployment.model, c.deployment.variant) for c in feasible}
    assert {key for key, c in weighed.items() if c.excluded is None} == meeting
    mine = weighed[(result.model, result.variant)]
    assert (mine.predicted_latency_ms, mine.predicted_energy_j) == (
        result.predicted_latency_ms,
        result.predicted_energy_j,
    )


def test_members_with_no_replica_to_run_are_refused_as_the_planner_says() -> None:
    offline = {k: replace(a, online=False) for k, a in FLEET.items()}
    result = plan(ask(), member_views(), offline, CONFIG)
    assert isinstance(result, PlanRefused) and result.constraint == "unavailable"
    assert result.model == TASK and "has no replica online" in result.message
    flat = {k: replace(a, plugged=False, battery_pct=5.0) for k, a in FLEET.items()}
    result = plan(ask(), member_views(), flat, CONFIG)
    assert isinstance(result, PlanRefused) and result.constraint == "battery"


def test_the_coordinator_refuses_min_accuracy_for_a_model(tmp_path: Path) -> None:
    coordinator = Coordinator(MemoryBroker().transport("coordinator"), tmp_path)
    request = PlanRequest(request_id="r", client_id="c", model="digits-small", min_accuracy=0.9)
    refused = coordinator.plan(request)
    assert isinstance(refused, PlanRefused) and refused.constraint == "min_accuracy"
    assert "name the task instead of digits-small" in refused.message
