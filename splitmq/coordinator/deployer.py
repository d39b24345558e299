"""The deployer: partition a model over the fleet, load the shards, publish the deployment.

``deploy(request)``:

1. open the model (the latest version unless one is named: deploying an earlier
   version is a rollback) and pick the variant (asked for, else float32);
2. run the partition optimizer (a chain, Plan 2 placements, or both: the request's
   ``plans``) over the online agents (measured speed, links, memory,
   battery) for the request's objective, stages, replicas, pins and gates — a miss
   comes back as a refusal with the figures. Agents whose runtime cannot pass a dtype
   at the variant's boundaries (a page's LiteRT.js and int8 frontiers) are left out,
   and named in the reply;
3. cut the shards (or read them back: they are kept by digest) and serve them;
4. order every replica to load its shard and wait until all report ready (or the
   timeout), naming each agent that failed and why;
5. publish the deployment, retained, with the next epoch, and unload the stages agents
   no longer host.

``heal(deployment)`` runs when an agent hosting a stage goes offline or its battery
drops below the floor unplugged: the affected stages get replacement replicas (the
cheapest eligible agents for that stage that can pass its tensors), loaded and ready
before the new epoch is
published; the other stages keep serving throughout. It also runs when a replica is
online but its telemetry no longer lists the stage (the agent restarted, or lost the
shard): that agent is told to load the stage again — from its cache, usually — and
is dropped from the replicas only if it cannot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import cast

from splitmq.converter.cutter import Shard, stage_edges
from splitmq.converter.pool import PoolEntry
from splitmq.coordinator.commands import CommandChannel, Outcome
from splitmq.coordinator.model_pool import ModelPool, ShardFile, UnknownModel
from splitmq.coordinator.partition import (
    Partition,
    PartitionConfig,
    PartitionRefused,
    PartitionRequest,
    choose,
    describe,
)
from splitmq.coordinator.planner import AgentView, PlannerConfig, eligible
from splitmq.coordinator.registry import FLOPS_PER_MS_PER_GFLOPS, Registry
from splitmq.coordinator.tensor_dtypes import (
    cannot_pass,
    stage_dtypes,
    variant_dtypes,
    why_left_out,
)
from splitmq.coordinator.views import tensor_bytes
from splitmq.errors import ConfigError
from splitmq.wire import (
    Deployment,
    DeploymentState,
    DeployReply,
    DeployRequest,
    LoadShard,
    PlanShape,
    ShardReady,
    StageSpec,
    UnloadShard,
)
from splitmq.wire.manifest import Variant

log = logging.getLogger(__name__)

DEFAULT_VARIANT = "float32"
Publish = Callable[[Deployment], None]


def deployment_id(model: str, variant: str) -> str:
    """One live deployment per model and variant; its epoch counts the changes."""
    return f"{model}-{variant}"


@dataclass(frozen=True)
class DeployerConfig:
    """Deployer settings.

    Attributes:
        ready_timeout_s: default wait for every agent to report its shard ready.
        planner: battery floor and cost figures shared with the per-request planner.
        partition: the optimizer's settings.
    """

    ready_timeout_s: float = 60.0
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)


class Deployer:
    """Deploys, re-deploys and retires models; one call at a time (the service serialises)."""

    def __init__(
        self,
        pool: ModelPool,
        registry: Registry,
        commands: CommandChannel,
        *,
        publish: Publish,
        deployments: Callable[[], Mapping[str, Deployment]],
        config: DeployerConfig = DeployerConfig(),
        next_epoch: Callable[[int | None], int] = lambda epoch: (epoch or 0) + 1,
    ):
        self.pool = pool
        self.registry = registry
        self.commands = commands
        self.publish = publish
        self.deployments = deployments
        self.config = config
        self.next_epoch = next_epoch
        """The epoch after a deployment's (None: a new one); the leader lease fences it."""
        # (agent, deployment, stage) -> when it was last known loaded (registry clock);
        # its telemetry must be newer than this to say it no longer serves the stage.
        self._loaded_s: dict[tuple[str, str, int], float] = {}

    # -- deploy -------------------------------------------------------------------------

    def deploy(self, request: DeployRequest) -> DeployReply:
        """Deploy (or retire) what ``request`` asks; never raises for a refusal."""

        def refuse(message: str, failed: Sequence[str] = ()) -> DeployReply:
            log.warning("deployment of %s refused: %s", request.model, message)
            return DeployReply(
                request.request_id, ok=False, message=message, failed_agents=tuple(failed)
            )

        if request.retire:
            return self.retire(request)
        try:
            entry = self.pool.entry(request.model, request.version)
            variant_name = request.variant or DEFAULT_VARIANT
            variant = _variant(entry, variant_name)
        except UnknownModel as error:
            return refuse(str(error))
        if request.task is not None and entry.manifest.task != request.task:
            return refuse(
                f"{entry.name} {entry.version} is not a member of task {request.task} (its "
                f"manifest says {entry.manifest.task or 'no task'}): convert it with "
                f"--task {request.task}, or leave it out"
            )
        fleet = self.registry.views()
        agents = [v for v in fleet.values() if eligible(v, self.config.planner)]
        if not agents:
            return refuse(
                "no agent is online and above the battery floor "
                f"({self.config.planner.battery_floor_pct:g}%) or plugged in: start one "
                "(`splitmq agent`), or plug one in"
            )
        dtypes = variant_dtypes(variant)
        left_out = {
            a.agent_id: why_left_out(a, dtypes, variant.name)
            for a in agents
            if cannot_pass(a, dtypes)
        }
        if left_out:
            log.info(
                "deploying %s %s without %s", entry.name, variant.name, "; ".join(left_out.values())
            )
        for constraint, pin in (("pin_first", request.pin_first), ("pin_last", request.pin_last)):
            if pin in left_out:
                steps = _next_steps(entry, variant, "pin another agent")
                return refuse(f"{constraint} agent {left_out[pin]}: {steps} [{constraint}]")
        passing = [a for a in agents if a.agent_id not in left_out]
        if not passing:
            missing = ", ".join(
                sorted(frozenset().union(*(cannot_pass(a, dtypes) for a in agents)))
            )
            steps = _next_steps(
                entry, variant, f"start an agent whose runtime passes {missing} (`splitmq agent`)"
            )
            return refuse(
                f"no agent online can pass the tensors at the boundaries of {entry.name} "
                f"{variant.name}: " + "; ".join(left_out.values()) + f": {steps}"
            )
        agents = passing
        try:
            chosen = choose(
                variant,
                agents,
                PartitionRequest(
                    stages=request.stages or None,
                    replicas=request.replicas,
                    objective=request.objective,
                    pin_first=request.pin_first,
                    pin_last=request.pin_last,
                    max_latency_ms=request.max_latency_ms,
                    max_shard_bytes=request.max_shard_bytes,
                    source=fleet.get(request.client_id),
                ),
                self.config.partition,
                request.plans or PlanShape.CHAIN,
            )
        except PartitionRefused as error:
            also = f"; left out: {'; '.join(left_out.values())}" if left_out else ""
            return refuse(f"{error}{also} [{error.constraint}]")
        except ConfigError as error:  # the request itself: no stages, a gate of 0...
            return refuse(f"{error} [request]")
        stages = self._stage_specs(entry, variant, chosen)
        name = deployment_id(entry.name, variant.name)
        previous = self.deployments().get(name)
        # A retired deployment's agents unloaded its shards: none of them serves it now.
        serving = previous if previous and previous.state is not DeploymentState.RETIRED else None
        timeout_s = request.ready_timeout_s or self.config.ready_timeout_s
        failures = self._load(name, stages, serving, timeout_s, variant)
        if failures:
            return refuse(
                "agents failed to load their shards: "
                + "; ".join(f"{o.agent_id} stage {o.command.stage}: {o.reason}" for o in failures),
                [o.agent_id for o in failures],
            )
        deployment = Deployment(
            deployment=name,
            model=entry.name,
            version=entry.version,
            variant=variant.name,
            epoch=self.next_epoch(previous.epoch if previous is not None else None),
            stages=stages,
            created_ms=int(time.time() * 1000),
            objective=str(request.objective),
            target_replicas=request.replicas,
            sites=self._sites(stages),
        )
        self.publish(deployment)
        if serving is not None:
            self._unload_dropped(serving, deployment)
        summary = (
            f"deployed {entry.name} {entry.version} ({variant.name}) as {name} epoch "
            f"{deployment.epoch}\n{describe(chosen)}"
        )
        if left_out:
            summary += "\nleft out: " + "; ".join(left_out.values())
        log.info("%s", summary)
        return DeployReply(
            request.request_id,
            ok=True,
            message=summary,
            deployment=name,
            epoch=deployment.epoch,
            predicted_latency_ms=chosen.predicted_latency_ms,
        )

    def _stage_specs(
        self, entry: PoolEntry, variant: Variant, chosen: Partition
    ) -> tuple[StageSpec, ...]:
        """The deployment's stages: a chain cut at the cut points, or (Plan 2) the stage
        graph around the chosen parallel section with each stage's sources and targets."""
        if chosen.section is None:
            shards = self.pool.shards(entry, variant.name, chosen.cut_points)
            return tuple(
                _stage_spec(shard, plan.replicas)
                for shard, plan in zip(shards, chosen.stages, strict=True)
            )
        files = self.pool.graph_shards(entry, variant.name, chosen.section)
        if len(files) != len(chosen.stages):
            raise UnknownModel(
                f"the stage graph around section {list(chosen.section)} has {len(files)} "
                f"stages, the placement {len(chosen.stages)}: the manifest and the model differ"
            )
        edges = stage_edges(cast("list[Shard]", files), [t.name for t in variant.outputs])
        return tuple(
            replace(
                _stage_spec(file, plan.replicas),
                sources=sources,
                targets=targets,
                operators=file.operators,
            )
            for file, plan, (sources, targets) in zip(files, chosen.stages, edges, strict=True)
        )

    def retire(self, request: DeployRequest) -> DeployReply:
        """Retire every deployment of the model (or of the variant asked for)."""
        retired = []
        for deployment in list(self.deployments().values()):
            if deployment.model != request.model or deployment.state is DeploymentState.RETIRED:
                continue
            if request.variant and deployment.variant != request.variant:
                continue
            final = replace(
                deployment,
                epoch=self.next_epoch(deployment.epoch),
                state=DeploymentState.RETIRED,
            )
            self.publish(final)
            self._unload_dropped(deployment, replace(final, stages=()))
            retired.append(deployment.deployment)
        if not retired:
            what = f"{request.model} {request.variant}" if request.variant else request.model
            return DeployReply(
                request.request_id, ok=False, message=f"nothing to retire: {what} is not deployed"
            )
        return DeployReply(request.request_id, ok=True, message=f"retired {', '.join(retired)}")

    # -- heal ---------------------------------------------------------------------------

    def needs_healing(self, deployment: Deployment) -> bool:
        if deployment.state is not DeploymentState.ACTIVE:
            return False
        # The replicas' views only (checked every watch period: the fleet may be large);
        # the whole fleet only when a stage is short and a spare might fill it.
        hosts = self.registry.views(a for stage in deployment.stages for a in stage.replicas)
        for stage in deployment.stages:
            healthy, lost = self._replica_states(deployment, stage, hosts)
            if lost or len(healthy) < min(len(stage.replicas), max(1, deployment.target_replicas)):
                return True
            if len(healthy) < max(1, deployment.target_replicas):
                fleet = self.registry.views()
                if self._spares(stage, deployment, fleet, exclude=set(healthy)):
                    return True
        return False

    def heal(self, deployment: Deployment) -> Deployment | None:
        """Reload restarted replicas, replace lost ones; publish and return the new epoch
        (None when the replicas did not change)."""
        fleet = self.registry.views()
        entry = self.pool.entry(deployment.model, deployment.version)
        variant = _variant(entry, deployment.variant)
        new_stages = []
        loads: list[tuple[str, LoadShard | UnloadShard]] = []
        changed = False
        for stage in deployment.stages:
            healthy, lost = self._replica_states(deployment, stage, fleet)
            missing = max(1, deployment.target_replicas) - len(healthy) - len(lost)
            spares = self._spares(
                stage, deployment, fleet, exclude={*healthy, *lost}, variant=variant
            )
            added = spares[: max(0, missing)]
            for agent in lost:
                log.info(
                    "heal %s: %s no longer serves stage %d (restarted?): loading it again",
                    deployment.deployment,
                    agent,
                    stage.stage,
                )
            loads.extend(
                (agent, self._load_command(deployment.deployment, stage))
                for agent in (*lost, *added)
            )
            kept = tuple(a for a in stage.replicas if a in healthy or a in lost)
            changed |= bool(lost) or (*kept, *added) != stage.replicas
            new_stages.append((stage, kept, set(lost), added))
        if not changed:
            return None
        outcomes = self.commands.run(loads, self.config.ready_timeout_s)
        ready = {(o.agent_id, o.command.stage) for o in outcomes if o.ok}
        now = self.registry.now()
        for agent, stage_index in ready:
            self._loaded_s[(agent, deployment.deployment, stage_index)] = now
        self._learn(outcomes, variant, deployment.stages)
        for outcome in outcomes:
            if not outcome.ok:
                log.warning(
                    "heal %s: %s could not load stage %d: %s",
                    deployment.deployment,
                    outcome.agent_id,
                    outcome.command.stage,
                    outcome.reason,
                )
        stages = tuple(
            replace(
                stage,
                replicas=(
                    *(a for a in kept if a not in lost or (a, stage.stage) in ready),
                    *(a for a in added if (a, stage.stage) in ready),
                )
                # Never none: the agents listed may come back, and the planner skips them.
                or stage.replicas,
            )
            for stage, kept, lost, added in new_stages
        )
        if stages == deployment.stages:
            return None  # every restarted replica serves again: the epoch holds
        healed = replace(
            deployment,
            epoch=self.next_epoch(deployment.epoch),
            stages=stages,
            sites=self._sites(stages),
        )
        self.publish(healed)
        log.info(
            "healed %s: epoch %d, replicas %s",
            deployment.deployment,
            healed.epoch,
            [s.replicas for s in stages],
        )
        return healed

    def _replica_states(
        self, deployment: Deployment, stage: StageSpec, fleet: Mapping[str, AgentView]
    ) -> tuple[list[str], list[str]]:
        """The stage's eligible replicas: those serving it, and those that no longer do."""
        healthy, lost = [], []
        for agent in stage.replicas:
            if not eligible(fleet.get(agent), self.config.planner):
                continue
            key = (agent, deployment.deployment, stage.stage)
            since = self._loaded_s.setdefault(key, self.registry.now())
            if self.registry.serves(agent, deployment.deployment, stage.stage, since) is False:
                lost.append(agent)
            else:
                healthy.append(agent)
        return healthy, lost

    def _spares(
        self,
        stage: StageSpec,
        deployment: Deployment,
        fleet: Mapping[str, AgentView],
        exclude: set[str],
        variant: Variant | None = None,
    ) -> list[str]:
        """Eligible agents that could take ``stage`` (and pass its tensors), cheapest first."""
        hosting_other = {
            a for s in deployment.stages if s.stage != stage.stage for a in s.replicas[:1]
        }
        dtypes = stage_dtypes(stage)
        candidates = [
            view
            for view in fleet.values()
            if eligible(view, self.config.planner)
            and view.agent_id not in exclude
            and view.agent_id not in stage.replicas
            and (view.mem_free_bytes is None or view.mem_free_bytes > 2 * stage.size_bytes)
            and not cannot_pass(view, dtypes)
        ]
        flops = _stage_flops(variant, stage) if variant is not None else 0

        def cost(view: AgentView) -> tuple[bool, float]:
            compute = flops / (view.speed_gflops * FLOPS_PER_MS_PER_GFLOPS) if flops else 0.0
            send = view.send_ms(sum(tensor_bytes(s) for s in stage.outputs))
            # Prefer agents that are not already the primary of another stage.
            return (view.agent_id in hosting_other, compute + send)

        return [view.agent_id for view in sorted(candidates, key=cost)]

    def _sites(self, stages: Sequence[StageSpec]) -> dict[str, str]:
        """The site of each replica that has one: senders pick the hop's topic by it."""
        replicas = {a for stage in stages for a in stage.replicas}
        return {a: site for a in sorted(replicas) if (site := self.registry.site(a))}

    # -- loading ------------------------------------------------------------------------

    def _load_command(self, deployment: str, stage: StageSpec) -> LoadShard:
        return LoadShard(
            command_id=self.commands.new_id(),
            issuer=self.commands.issuer,
            deployment=deployment,
            stage=stage.stage,
            digest=stage.digest,
            size_bytes=stage.size_bytes,
            inputs=stage.inputs,
            outputs=stage.outputs,
            sources=stage.sources,
            targets=stage.targets,
        )

    def _load(
        self,
        name: str,
        stages: Sequence[StageSpec],
        previous: Deployment | None,
        timeout_s: float,
        variant: Variant,
    ) -> list[Outcome]:
        """Load every replica's shard (skipping those already serving it); the failures."""
        serving = {
            (agent, stage.stage, stage.digest)
            for stage in (previous.stages if previous is not None else ())
            for agent in stage.replicas
        }
        loads: list[tuple[str, LoadShard | UnloadShard]] = [
            (agent, self._load_command(name, stage))
            for stage in stages
            for agent in stage.replicas
            if (agent, stage.stage, stage.digest) not in serving or not self.registry.online(agent)
        ]
        outcomes = self.commands.run(loads, timeout_s)
        now = self.registry.now()
        for outcome in outcomes:
            if outcome.ok:
                self._loaded_s[(outcome.agent_id, name, outcome.command.stage)] = now
        self._learn(outcomes, variant, stages)
        return [o for o in outcomes if not o.ok]

    def _learn(
        self, outcomes: Sequence[Outcome], variant: Variant, stages: Sequence[StageSpec]
    ) -> None:
        """Teach the registry each agent's speed from the benchmarks of the shards it loaded."""
        by_stage = {s.stage: s for s in stages}
        for outcome in outcomes:
            if isinstance(outcome.answer, ShardReady) and outcome.command.stage in by_stage:
                flops = _stage_flops(variant, by_stage[outcome.command.stage])
                self.registry.on_shard_ready(outcome.answer, flops)

    def _unload_dropped(self, previous: Deployment, current: Deployment) -> None:
        kept = {(a, s.stage) for s in current.stages for a in s.replicas}
        unloads: list[tuple[str, LoadShard | UnloadShard]] = [
            (
                agent,
                UnloadShard(
                    command_id=self.commands.new_id(),
                    issuer=self.commands.issuer,
                    deployment=previous.deployment,
                    stage=stage.stage,
                ),
            )
            for stage in previous.stages
            for agent in stage.replicas
            if (agent, stage.stage) not in kept and self.registry.online(agent)
        ]
        for outcome in self.commands.run(unloads, timeout_s=5.0):
            if not outcome.ok:
                log.info("unload on %s: %s", outcome.agent_id, outcome.reason)


def _variant(entry: PoolEntry, name: str) -> Variant:
    variant = entry.manifest.variants.get(name)
    if variant is None:
        raise UnknownModel(
            f"{entry.name} {entry.version} has no variant {name!r}; it has "
            f"{', '.join(entry.manifest.variants)}"
        )
    if not variant.cuttable:
        raise UnknownModel(
            f"{entry.name} {entry.version} {name} cannot be cut: {variant.uncuttable_reason}"
        )
    return variant


def _next_steps(entry: PoolEntry, variant: Variant, step: str) -> str:
    """What to do when agents cannot pass ``variant``'s tensors: deploy the float32
    variant (when that is another one), or ``step``."""
    if variant.name == DEFAULT_VARIANT or DEFAULT_VARIANT not in entry.manifest.variants:
        return step
    return (
        f"deploy the {DEFAULT_VARIANT} variant "
        f"(`splitmq deploy {entry.name} --variant {DEFAULT_VARIANT}`), or {step}"
    )


def _stage_spec(shard: ShardFile, replicas: Sequence[str]) -> StageSpec:
    return StageSpec(
        stage=shard.stage,
        start_op=shard.start_op,
        end_op=shard.end_op,
        digest=shard.digest,
        size_bytes=shard.size_bytes,
        inputs=shard.inputs,
        outputs=shard.outputs,
        replicas=tuple(replicas),
    )


def _stage_flops(variant: Variant, stage: StageSpec) -> int:
    if stage.operators is not None:
        return sum(variant.operators[i].flops for i in stage.operators)
    return sum(op.flops for op in variant.operators[stage.start_op : stage.end_op])
