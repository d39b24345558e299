"""Choosing among a task's members: which model and variant serves a request naming a task.

A task's members (``splitmq convert ... --task digits``) share inputs and the meaning
of their outputs; they differ in size, speed, energy and accuracy. For a request naming
a task, every deployed member and variant of it is a candidate, each with its routes
through the fleet (:func:`splitmq.coordinator.planner.pareto_routes`, the same cost
model as a request naming a model). Among the routes within ``max_latency_ms`` and
``energy_j`` whose variant reaches ``min_accuracy`` (and ``min_fidelity``), the energy
level picks:

- ``performance``: the most accurate; then the fastest;
- ``saver``: the least (battery-weighted) energy; then the most accurate;
- ``balanced``: the best accuracy per joule (weighted); then the thriftiest, the fastest.

A low client battery moves the choice toward cheaper members: unplugged below
``TaskChoiceConfig.low_battery_pct`` the level is taken one step toward ``saver``
(``performance`` becomes ``balanced``, ``balanced`` becomes ``saver``), below
``critical_battery_pct`` it is ``saver`` (the seed ties the energy level to accuracy:
a client short of energy settles for less). The battery is the one the request carries
(``client_battery``), else what the client's own agent last reported.

Accuracy is the variant's measured accuracy (``splitmq evaluate``, or labels at
conversion). Where a member's accuracy is unknown, members are ranked by their
agreement with the task's reference member on the same data, and a ``min_accuracy``
cannot be checked: such a request is refused with what to do. A refusal names the
constraint that failed and the best figures on offer. The plan lists every member and
variant weighed (``Plan.candidates``: accuracy, the predicted latency and energy of the
route through it, the constraint it missed), so a report can draw the whole trade-off.

A version belongs to one model, and a task's members each have their own: a request
naming a task and a version is refused (constraint ``version``); name the member to pin
one. Pure: no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from splitmq.coordinator.planner import (
    AgentView,
    Candidate,
    DeploymentView,
    PlannerConfig,
    figure,
    pareto_routes,
    plan,
    with_client_work,
    within_budgets,
)
from splitmq.errors import ConfigError
from splitmq.wire import (
    PLAN_UNAVAILABLE,
    EnergyLevel,
    Plan,
    PlanRefused,
    PlanRequest,
    TaskCandidate,
)
from splitmq.wire.manifest import Manifest

__all__ = [
    "TaskChoiceConfig",
    "annotate",
    "choice_key",
    "effective_level",
    "plan_task",
    "rank",
]

log = logging.getLogger(__name__)

_CHEAPER = {
    EnergyLevel.PERFORMANCE: EnergyLevel.BALANCED,
    EnergyLevel.BALANCED: EnergyLevel.SAVER,
    EnergyLevel.SAVER: EnergyLevel.SAVER,
}
_EPSILON_J = 1e-12
DEFAULT_PLANNER = PlannerConfig()


@dataclass(frozen=True)
class TaskChoiceConfig:
    """How a client's battery moves the energy level of a task request.

    Attributes:
        low_battery_pct: unplugged below this charge, the level is one step cheaper.
        critical_battery_pct: unplugged below this charge, the level is ``saver``.
    """

    low_battery_pct: float = 50.0
    critical_battery_pct: float = 20.0

    def __post_init__(self) -> None:
        low, critical = self.low_battery_pct, self.critical_battery_pct
        if not 0.0 <= critical <= low <= 100.0:
            raise ConfigError(
                f"task battery levels low {low:g} % and critical {critical:g} % must be "
                "percentages with critical at most low (e.g. 50 and 20)"
            )


def effective_level(
    level: EnergyLevel,
    battery_pct: float | None,
    plugged: bool,
    config: TaskChoiceConfig = TaskChoiceConfig(),
) -> EnergyLevel:
    """The energy level a task request is planned at, given the client's battery."""
    if battery_pct is None or plugged:
        return level
    if battery_pct < config.critical_battery_pct:
        return EnergyLevel.SAVER
    if battery_pct < config.low_battery_pct:
        return _CHEAPER[level]
    return level


def rank(view: DeploymentView, accuracy_known: bool) -> float:
    """What members are ranked by: accuracy when every candidate's is known, else the
    agreement with the task's reference member (0 when that is unknown too)."""
    if accuracy_known and view.accuracy is not None:
        return view.accuracy
    return view.agreement if view.agreement is not None else 0.0


def choice_key(
    level: EnergyLevel, candidate: Candidate, accuracy_known: bool
) -> tuple[float, float, float]:
    """The key a candidate is chosen by (lower is better) at ``level``."""
    score = rank(candidate.deployment, accuracy_known)
    cost = candidate.cost
    if level is EnergyLevel.PERFORMANCE:
        return (-score, cost.latency_ms, cost.weighted_energy_j)
    if level is EnergyLevel.SAVER:
        return (cost.weighted_energy_j, -score, cost.latency_ms)
    per_joule = score / max(cost.weighted_energy_j, _EPSILON_J)
    return (-per_joule, cost.weighted_energy_j, cost.latency_ms)


ManifestLookup = Callable[[str, str], Manifest | None]
"""``(model, version) -> Manifest`` from the pool (None when it is not there)."""


def annotate(views: Sequence[DeploymentView], lookup: ManifestLookup) -> list[DeploymentView]:
    """The views with their model's task, and their variant's accuracy and agreement."""
    annotated = []
    for view in views:
        manifest = lookup(view.model, view.version)
        if manifest is None or manifest.task is None:
            annotated.append(view)
            continue
        annotated.append(
            replace(
                view,
                task=manifest.task,
                accuracy=manifest.accuracy(view.variant),
                agreement=manifest.agreement(view.variant),
            )
        )
    return annotated


def plan_task(
    request: PlanRequest,
    deployments: Sequence[DeploymentView],
    fleet: Mapping[str, AgentView],
    config: PlannerConfig = DEFAULT_PLANNER,
    *,
    client: AgentView | None = None,
    choice: TaskChoiceConfig = TaskChoiceConfig(),
) -> Plan | PlanRefused:
    """The member, variant and route for a request naming a task, or why there is none."""
    task = request.task or ""

    def refuse(constraint: str, message: str) -> PlanRefused:
        return PlanRefused(request.request_id, task, constraint, message)

    if request.version is not None:
        return refuse(
            "version",
            f"a request naming task {task} cannot name a version ({request.version}): each "
            "member has versions of its own; name the member and its version instead of "
            "the task, or leave the version out",
        )
    members = [d for d in deployments if d.task == task]
    if not members:
        return refuse("task", _no_member(task, deployments))
    weighed = members
    if request.min_fidelity is not None:
        faithful = [d for d in members if d.fidelity >= request.min_fidelity]
        if not faithful:
            most = max(members, key=lambda d: d.fidelity)
            return refuse(
                "min_fidelity",
                f"the most faithful deployed variant of task {task} ({most.model} "
                f"{most.variant}) has fidelity {most.fidelity:.4f}, below the "
                f"{request.min_fidelity:.4f} asked for: ask for less, or deploy a float32 "
                "variant",
            )
        members = faithful
    if request.min_accuracy is not None:
        measured = [d for d in members if d.accuracy is not None]
        if not measured:
            return refuse(
                "min_accuracy",
                f"the accuracy of task {task}'s deployed members is unknown (they were "
                "never evaluated on labelled data), so min_accuracy cannot be checked: "
                f"evaluate them (`splitmq evaluate --task {task} --data FILE.npz`, x and y), "
                "or ask without min_accuracy",
            )
        good = [d for d in measured if (d.accuracy or 0.0) >= request.min_accuracy]
        if not good:
            most = max(measured, key=lambda d: d.accuracy or 0.0)
            return refuse(
                "min_accuracy",
                f"the most accurate deployed member of task {task} ({most.model} "
                f"{most.variant}) reaches {most.accuracy:.3f}, below the "
                f"{request.min_accuracy:.3f} asked: ask for less, or deploy a more accurate "
                "member",
            )
        members = good
    accuracy_known = all(d.accuracy is not None for d in members)
    routes_of = {
        d.deployment: with_client_work(pareto_routes(d, fleet, config, client), request)
        for d in weighed
    }
    routes = [r for d in members for r in routes_of[d.deployment]]
    if not routes:  # no replica to run some stage: the planner says which and why
        unavailable = plan(
            _for_member(request, members[0], request.energy_level),
            members,
            fleet,
            config,
            client=client,
        )
        if isinstance(unavailable, PlanRefused):
            return refuse(unavailable.constraint, unavailable.message)
        return refuse(PLAN_UNAVAILABLE, f"no deployed member of task {task} can run now")
    feasible = [r for r in routes if within_budgets(r.cost, request)]
    if not feasible:
        return refuse(*_over_budget(request, routes, accuracy_known))
    battery_pct, plugged = _client_battery(request, client)
    level = effective_level(request.energy_level, battery_pct, plugged, choice)
    best = min(feasible, key=lambda c: choice_key(level, c, accuracy_known))
    if level is not request.energy_level:
        log.debug(
            "task %s: client battery %.0f%%: %s planned as %s",
            task,
            battery_pct or 0.0,
            request.energy_level.value,
            level.value,
        )
    # The route through the chosen member, its fallbacks and predictions: the planner's.
    # Within one member, this level's key orders routes as the planner's level does.
    within = EnergyLevel.PERFORMANCE if level is EnergyLevel.PERFORMANCE else EnergyLevel.SAVER
    answer = plan(
        _for_member(request, best.deployment, within),
        [best.deployment],
        fleet,
        config,
        client=client,
    )
    if isinstance(answer, PlanRefused):  # not expected: the route was within the budgets
        return refuse(answer.constraint, answer.message)
    # Every member weighed, with its figures: the trade-off the choice was made along.
    # The chosen one's figures are the plan's own.
    candidates = []
    for member in weighed:
        offered = _candidate(member, routes_of[member.deployment], request, level, accuracy_known)
        if member is best.deployment:
            offered = replace(
                offered,
                predicted_latency_ms=answer.predicted_latency_ms,
                predicted_energy_j=answer.predicted_energy_j,
            )
        candidates.append(offered)
    return replace(
        answer, task=task, accuracy=best.deployment.accuracy, candidates=tuple(candidates)
    )


def _candidate(
    member: DeploymentView,
    routes: Sequence[Candidate],
    request: PlanRequest,
    level: EnergyLevel,
    accuracy_known: bool,
) -> TaskCandidate:
    """What ``member`` offers a request (the route this level would take through it) and
    the constraint it misses, if any."""
    excluded: str | None = None
    if request.min_fidelity is not None and member.fidelity < request.min_fidelity:
        excluded = "min_fidelity"
    elif request.min_accuracy is not None and (
        member.accuracy is None or member.accuracy < request.min_accuracy
    ):
        excluded = "min_accuracy"
    feasible = [r for r in routes if within_budgets(r.cost, request)]
    if not routes:
        excluded = excluded or PLAN_UNAVAILABLE
    elif not feasible and excluded is None:
        excluded = _over_budget(request, routes, accuracy_known)[0]
    taken = min(
        feasible or routes, key=lambda c: choice_key(level, c, accuracy_known), default=None
    )
    return TaskCandidate(
        model=member.model,
        version=member.version,
        variant=member.variant,
        accuracy=member.accuracy,
        agreement=member.agreement,
        predicted_latency_ms=None if taken is None else taken.cost.latency_ms,
        predicted_energy_j=None if taken is None else taken.cost.energy_j,
        excluded=excluded,
    )


def _for_member(request: PlanRequest, member: DeploymentView, level: EnergyLevel) -> PlanRequest:
    """``request`` as a request naming ``member`` (its budgets; fidelity already checked)."""
    return replace(
        request,
        model=member.model,
        version=member.version,
        task=None,
        min_accuracy=None,
        min_fidelity=None,
        energy_level=level,
    )


def _client_battery(request: PlanRequest, client: AgentView | None) -> tuple[float | None, bool]:
    if request.client_battery is not None:
        return request.client_battery.pct, request.client_battery.plugged
    if client is not None:
        return client.battery_pct, client.plugged
    return None, True


def _no_member(task: str, deployments: Sequence[DeploymentView]) -> str:
    tasks = sorted({d.task for d in deployments if d.task is not None})
    deployed = f"deployed tasks: {', '.join(tasks)}" if tasks else "no task is deployed"
    return (
        f"no deployed member of task {task} ({deployed}): check the name, or deploy its "
        f"members (`splitmq deploy --task {task} MEMBER...`)"
    )


def _describe(candidate: Candidate, accuracy_known: bool) -> str:
    view = candidate.deployment
    if accuracy_known and view.accuracy is not None:
        figure_text = f"accuracy {view.accuracy:.3f}"
    else:
        figure_text = "accuracy unknown"
    return f"{view.model} {view.variant}, {figure_text}"


def _over_budget(
    request: PlanRequest, routes: Sequence[Candidate], accuracy_known: bool
) -> tuple[str, str]:
    """The budget no member's route meets, with the best figures on offer."""
    fastest = min(routes, key=lambda r: r.cost.latency_ms)
    thriftiest = min(routes, key=lambda r: r.cost.energy_j)
    bound, budget = request.max_latency_ms, request.energy_j
    meeting = " meeting min_accuracy" if request.min_accuracy is not None else ""
    if bound is not None and fastest.cost.latency_ms > bound:
        return (
            "max_latency_ms",
            f"the fastest deployed member{meeting} ({_describe(fastest, accuracy_known)}) "
            f"takes {figure(fastest.cost.latency_ms)} ms, above the {figure(bound)} ms "
            "allowed: allow more time, ask for less accuracy, or deploy a smaller member",
        )
    if budget is not None and thriftiest.cost.energy_j > budget:
        return (
            "energy_j",
            f"the thriftiest deployed member{meeting} ({_describe(thriftiest, accuracy_known)}) "
            f"needs {figure(thriftiest.cost.energy_j)} J, above the budget of "
            f"{figure(budget)} J: allow more energy, ask for less accuracy, or deploy a "
            "smaller member",
        )
    return (
        "max_latency_ms+energy_j",
        f"no deployed member{meeting} meets both budgets: those within "
        f"{figure(bound or 0.0)} ms need more than {figure(budget or 0.0)} J, and those "
        f"within {figure(budget or 0.0)} J take more than {figure(bound or 0.0)} ms: relax "
        "one of them",
    )
