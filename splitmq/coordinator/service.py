"""The coordinator service: registry, model pool, deployer and planner on one broker.

``splitmq coordinator --broker URL --pool DIR`` runs one::

    coordinator = Coordinator(transport, pool_dir)
    coordinator.start()        # subscribes, rebuilds state from retained topics
    ...
    coordinator.stop()

What it listens to (the topic table: ``splitmq.wire.topics``, docs/architecture.md):

- ``agents/+/status``, ``agents/+/telemetry`` (retained) -> the registry;
- ``agents/+/events`` -> answers to its load/unload commands, shard benchmarks;
- ``deployments/+`` (retained) -> the deployments, its own included: a restarted
  coordinator picks them up as they were;
- ``$share/coordinators/plans/request`` -> a plan for each request, on the client's
  plan topic (coordinators side by side share the requests);
- ``$share/coordinators/control/deploy`` -> deploy, roll back, retire; the reply goes
  to the operator's control topic;
- ``coordinators/lease`` (retained) and ``coordinators/{self}/deploy`` -> the leader
  lease (``splitmq.coordinator.lease``): every coordinator plans, only the leader
  deploys and heals. A follower hands the deploy requests it gets to the leader (or
  holds them while an election runs); one sent to a former leader is refused with a
  redirect, never carried out twice;
- ``pool/fetch`` (shared) -> shard chunks: the leader only (it cut them).

A watch thread checks the fleet every ``watch_period_s``: when an agent hosting a
stage is gone (its will, or telemetry silent for a few periods) or its battery falls
below the floor unplugged, the affected deployment is healed — the other stages keep
serving. Deployments and heals run one at a time on a worker thread; plans are
answered at once.

After its connection comes back, the coordinator gives every agent a fresh grace
period (its own outage says nothing of theirs) and, once the retained deployments had
time to arrive, publishes again those the broker no longer holds (a broker restarted
without persistence forgets every retained message).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from splitmq.coordinator.commands import CommandChannel
from splitmq.coordinator.deployer import Deployer, DeployerConfig
from splitmq.coordinator.lease import (
    LeaseConfig,
    LeaseKeeper,
    LeaseLost,
    advised_telemetry_period_s,
)
from splitmq.coordinator.model_pool import ModelPool, UnknownModel
from splitmq.coordinator.planner import AgentView, PlannerConfig, plan
from splitmq.coordinator.pool_service import PoolService
from splitmq.coordinator.registry import DEFAULT_STALE_PERIODS, Registry
from splitmq.coordinator.task_choice import TaskChoiceConfig, annotate, plan_task
from splitmq.coordinator.views import deployment_views
from splitmq.errors import DecodeError, SplitMQError, TransportError
from splitmq.transport import InboundMessage, Transport
from splitmq.transport.latest import LatestByTopic
from splitmq.wire import (
    AgentState,
    Battery,
    Deployment,
    DeployReply,
    DeployRequest,
    Message,
    Plan,
    PlanRefused,
    PlanRequest,
    StageSpec,
)
from splitmq.wire.manifest import Variant
from splitmq.wire.topics import (
    COORDINATORS_GROUP,
    DEFAULT_NAMESPACE,
    DEPLOY_REPLIES,
    DEPLOY_REQUESTS,
    DEPLOYMENTS,
    EVENTS,
    LEADER_DEPLOY,
    PLAN_REQUESTS,
    PLANS,
    STATUS,
    TELEMETRY,
    Topic,
)

log = logging.getLogger(__name__)

POOL_GROUP = "pool"
LEADER_WAIT_S = 30.0
"""How long a deploy request waits for an election to end before it is refused."""
RETAINED_GRACE_S = 1.0
"""After a reconnection, how long retained deployments have to arrive before ours are
published again."""
CATCH_UP_S = 0.5
"""How long a plan request waits for the statuses and telemetry that arrived before it
to reach the registry (a flood of them is not waited out: the plan goes on)."""


@dataclass(frozen=True)
class CoordinatorConfig:
    """Coordinator settings.

    Attributes:
        coordinator_id: the issuer agents obey (their ``--coordinator-id``).
        namespace: the topic prefix.
        stale_periods: telemetry periods of silence after which an agent is gone.
        watch_period_s: how often the fleet is checked for stages to heal.
        heal: re-deploy stages whose agents are lost (one coordinator of several
            should; the others only plan).
        reconnect_grace_s: after the coordinator's own connection comes back, agents
            have this long to be heard again before their silence counts (they
            reconnect with a backoff of their own).
        deployer: deployer, partition and planner settings.
        lease: the leader lease (renewed every ``lease.period_s``: the telemetry period).
        telemetry_budget_per_s: telemetry messages per second the fleet may send through
            the broker; past it the leader advises the agents a longer period (with the
            lease: ``Lease.telemetry_period_s``). 0: no advice.
        task_choice: how a client's low battery moves a task request toward cheaper
            members (``splitmq coordinator --task-battery-levels``).
    """

    coordinator_id: str = "coordinator"
    namespace: str = DEFAULT_NAMESPACE
    stale_periods: float = DEFAULT_STALE_PERIODS
    watch_period_s: float = 1.0
    heal: bool = True
    reconnect_grace_s: float = 10.0
    deployer: DeployerConfig = field(default_factory=DeployerConfig)
    lease: LeaseConfig = field(default_factory=LeaseConfig)
    telemetry_budget_per_s: float = 1000.0
    task_choice: TaskChoiceConfig = field(default_factory=TaskChoiceConfig)

    @property
    def planner(self) -> PlannerConfig:
        return self.deployer.planner


class Coordinator:
    """One coordinator over a transport (started by :meth:`start`, closed by :meth:`stop`)."""

    def __init__(
        self,
        transport: Transport,
        pool_dir: str | Path,
        config: CoordinatorConfig = CoordinatorConfig(),
    ):
        self.transport = transport
        self.config = config
        self._ns = config.namespace
        self.registry = Registry(stale_periods=config.stale_periods)
        self.pool_service = PoolService(
            transport, namespace=self._ns, group=POOL_GROUP, resolve=self._cut_again
        )
        self.pool = ModelPool(pool_dir, self.pool_service)
        self.commands = CommandChannel(transport, config.coordinator_id, self._ns)
        self._deployments: dict[str, Deployment] = {}
        self._lock = threading.Lock()
        self.deployer = Deployer(
            self.pool,
            self.registry,
            self.commands,
            publish=self._publish_deployment,
            deployments=self.deployments,
            config=config.deployer,
            next_epoch=self._next_epoch,
        )
        self.lease = LeaseKeeper(transport, config.lease, self._ns, on_change=self._on_leadership)
        self._serving_pool = False
        self._work: queue.Queue[DeployRequest | None] = queue.Queue()
        self._waiting: queue.Queue[DeployRequest] = queue.Queue()  # for a leader
        self._seen_requests: dict[str, None] = {}  # recent deploy request ids, oldest first
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.plans_answered = 0
        self._variants: dict[tuple[str, str, str], Variant] = {}
        self._connected_before = False
        self._restore_at_s: float | None = None  # when to publish lost deployments again
        self._retained_seen: set[str] = set()
        self._presence = LatestByTopic("presence", self._on_status, superseded=self._went_by)
        self._telemetry = LatestByTopic("telemetry", self._on_telemetry)

    # -- life cycle ---------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> None:
        self.transport.add_connection_listener(self._on_connection)
        self.transport.start(timeout_s)
        served = self.pool.serve_existing()
        if served:
            log.info("serving %d shards cut before", served)
        ns = self._ns
        subscribe = self.transport.subscribe
        # Presence and telemetry are states: a flood of them (a large fleet's retained
        # topics at once) is conflated per agent and never crowds out a plan request.
        self._presence.start()
        self._telemetry.start()
        subscribe(
            STATUS.filter(ns), self._on_status, qos=STATUS.qos, fast_path=self._presence.fast_path
        )
        subscribe(
            TELEMETRY.filter(ns),
            self._on_telemetry,
            qos=TELEMETRY.qos,
            fast_path=self._telemetry.fast_path,
        )
        subscribe(EVENTS.filter(ns), self._on_event, qos=EVENTS.qos, fast_path=self._event_fast)
        subscribe(DEPLOYMENTS.filter(ns), self._on_deployment, qos=DEPLOYMENTS.qos)
        plan_requests = PLAN_REQUESTS.shared_filter(COORDINATORS_GROUP, ns)
        subscribe(plan_requests, self._on_plan_request, qos=PLAN_REQUESTS.qos)
        deploy_requests = DEPLOY_REQUESTS.shared_filter(COORDINATORS_GROUP, ns)
        subscribe(deploy_requests, self._on_deploy_request, qos=DEPLOY_REQUESTS.qos)
        forwarded = LEADER_DEPLOY.name(ns, coordinator=self.transport.client_id)
        subscribe(forwarded, self._on_forwarded_request, qos=LEADER_DEPLOY.qos)
        self.lease.start()
        threads = (
            (self._run_work, "deployer"),
            (self._run_watch, "watch"),
            (self._run_forward, "forward"),
        )
        for target, name in threads:
            thread = threading.Thread(target=target, name=f"coordinator-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info(
            "coordinator %s serving the pool %s", self.config.coordinator_id, self.pool.pool_dir
        )

    def stop(self) -> None:
        self._stop.set()
        self._work.put(None)
        for thread in self._threads:
            thread.join(timeout=5.0)
        self.lease.stop()
        self.transport.close()
        self._presence.stop()
        self._telemetry.stop()

    def __enter__(self) -> Coordinator:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- state ----------------------------------------------------------------------------

    def deployments(self) -> dict[str, Deployment]:
        with self._lock:
            return dict(self._deployments)

    def _publish_deployment(self, deployment: Deployment) -> None:
        if not self.lease.is_leader():  # the last check before the broker has it
            raise LeaseLost("this coordinator lost the lease", self.lease.leader())
        with self._lock:
            self._deployments[deployment.deployment] = deployment
        DEPLOYMENTS.publish(
            self.transport, deployment, self._ns, deployment=deployment.deployment
        ).wait(10.0)

    def _on_leadership(self, leading: bool) -> None:
        """Only the leader serves shards: it cut them (a new leader cuts again on demand)."""
        if leading == self._serving_pool:
            return
        try:
            if leading:
                self.pool_service.start()
            else:
                self.pool_service.stop()
            self._serving_pool = leading
        except TransportError as error:
            log.warning("could not %s serving shards: %s", "start" if leading else "stop", error)

    def _next_epoch(self, previous: int | None) -> int:
        return self.lease.next_epoch(previous)

    def deploy(self, request: DeployRequest) -> None:
        """Queue a deployment (as if it came from the control topic): carried out here
        if this coordinator leads, handed to the leader otherwise."""
        self._route(request)

    def _on_connection(self, up: bool) -> None:
        if not up:
            return
        if self._connected_before:
            self.registry.refresh(self.config.reconnect_grace_s)
        self._connected_before = True
        with self._lock:
            self._retained_seen.clear()
            self._restore_at_s = time.monotonic() + RETAINED_GRACE_S

    def _restore_retained(self) -> None:
        """Publish again the deployments the broker did not send back after a reconnection."""
        if not self.lease.is_leader():
            return  # the leader does it
        with self._lock:
            if self._restore_at_s is None or time.monotonic() < self._restore_at_s:
                return
            self._restore_at_s = None
            lost = [d for name, d in self._deployments.items() if name not in self._retained_seen]
        for deployment in lost:
            log.info(
                "the broker lost deployment %s epoch %d: publishing it again",
                deployment.deployment,
                deployment.epoch,
            )
            try:
                self._publish_deployment(deployment)
            except TransportError as error:
                log.warning("could not publish %s again: %s", deployment.deployment, error)

    # -- inbound ------------------------------------------------------------------------

    def _on_status(self, message: InboundMessage) -> None:
        status = _decode(message, STATUS)
        if status is not None:
            self.registry.on_status(status)
            if status.state is AgentState.OFFLINE:  # a load it was given will never finish
                self.commands.agent_gone(status.agent_id)

    def _went_by(self, message: InboundMessage) -> None:
        """A status replaced before it was handled: an offline one still ends the loads
        its agent was given (it may be back already, without them)."""
        status = _decode(message, STATUS)
        if status is not None and status.state is AgentState.OFFLINE:
            self.commands.agent_gone(status.agent_id)

    def caught_up(self) -> None:
        """Wait (briefly) until the statuses and telemetry that arrived before now are in
        the registry: a plan request sees what its sender published before it."""
        for latest in (self._presence, self._telemetry):
            latest.wait_caught_up(CATCH_UP_S)

    def _on_telemetry(self, message: InboundMessage) -> None:
        telemetry = _decode(message, TELEMETRY)
        if telemetry is not None:
            self.registry.on_telemetry(telemetry)

    def _event_fast(self, message: InboundMessage) -> bool:
        # Command answers unblock the deployer: resolve them on the network thread.
        self.commands.on_event(message)
        return True

    def _on_event(self, message: InboundMessage) -> None:
        self.commands.on_event(message)

    def _on_deployment(self, message: InboundMessage) -> None:
        if not message.payload:
            return  # a cleared retained deployment
        deployment = _decode(message, DEPLOYMENTS)
        if deployment is None:
            return
        self.lease.observe_epoch(deployment.epoch)
        with self._lock:
            self._retained_seen.add(deployment.deployment)
            known = self._deployments.get(deployment.deployment)
            if known is None or deployment.epoch > known.epoch:
                self._deployments[deployment.deployment] = deployment
                return
        if deployment.epoch < known.epoch and self.lease.is_leader():
            # A former leader that had not noticed it lost the lease: ours stands.
            log.warning(
                "%s epoch %d was published over epoch %d: publishing ours again",
                deployment.deployment,
                deployment.epoch,
                known.epoch,
            )
            try:
                self._publish_deployment(known)
            except (TransportError, LeaseLost) as error:
                log.warning("could not publish %s again: %s", known.deployment, error)

    def _on_plan_request(self, message: InboundMessage) -> None:
        request = _decode(message, PLAN_REQUESTS)
        if request is None:
            return
        self.caught_up()
        answer = self.plan(request)
        try:
            PLANS.publish(self.transport, answer, self._ns, client=request.client_id)
            self.plans_answered += 1
        except (TransportError, ValueError) as error:
            log.warning("could not answer plan request %s: %s", request.request_id, error)

    def plan(self, request: PlanRequest) -> Plan | PlanRefused:
        """The plan (or refusal) for ``request`` from the current fleet and deployments.

        Only the agents that host a stage (and the client's own) are looked at: the cost
        of a plan follows the deployments, not the size of the fleet."""
        if request.task is None and request.min_accuracy is not None:
            return PlanRefused(
                request.request_id,
                request.model,
                "min_accuracy",
                "min_accuracy chooses among a task's members: name the task instead of "
                f"{request.model}, or bound its variants with min_fidelity",
            )
        deployments = self.deployments().values()
        hosts = {a for d in deployments for s in d.stages for a in s.replicas}
        fleet = self.registry.views({*hosts, request.client_id})
        client = fleet.get(request.client_id)
        if client is not None and request.client_battery is not None:
            client = _with_battery(client, request.client_battery)
            fleet[client.agent_id] = client
        views = deployment_views(deployments, self.registry, self._variant)
        if request.task is not None:  # the members' tasks and accuracies, from the pool
            views = annotate(views, self.pool.manifest)
            choice = self.config.task_choice
            return plan_task(
                request, views, fleet, self.config.planner, client=client, choice=choice
            )
        return plan(request, views, fleet, self.config.planner, client=client)

    def _cut_again(self, digest: str) -> bool:
        """Cut the shard ``digest`` of a known deployment (another coordinator cut it)."""
        for deployment in self.deployments().values():
            stages = deployment.stages
            if not any(stage.digest == digest for stage in stages):
                continue
            try:
                entry = self.pool.entry(deployment.model, deployment.version)
                section = _graph_section(entry.manifest.variants.get(deployment.variant), stages)
                if section is not None:  # Plan 2: the stage graph around that section
                    self.pool.graph_shards(entry, deployment.variant, section)
                else:
                    cut_points = [stage.end_op for stage in stages[:-1]]
                    self.pool.shards(entry, deployment.variant, cut_points)
            except (UnknownModel, SplitMQError) as error:
                log.warning("cannot cut %s again: %s", deployment.deployment, error)
                return False
            return digest in self.pool_service
        return False

    def _variant(self, model: str, version: str, variant: str) -> Variant | None:
        """A deployed variant's manifest, read once (entries never change: versions are
        content hashes)."""
        key = (model, version, variant)
        found = self._variants.get(key)
        if found is None:
            try:
                found = self.pool.entry(model, version).manifest.variants.get(variant)
            except UnknownModel:
                return None
            if found is not None:
                self._variants[key] = found
        return found

    def _on_deploy_request(self, message: InboundMessage) -> None:
        request = _decode(message, DEPLOY_REQUESTS)
        if request is not None:
            self.caught_up()
            self._route(request)

    def _on_forwarded_request(self, message: InboundMessage) -> None:
        """A follower handed us a request: carry it out if we still lead, else redirect."""
        request = _decode(message, LEADER_DEPLOY)
        if request is None:
            return
        if self.lease.is_leader():
            self._work.put(request)
        else:
            self._reply(request, self._redirect(request))

    def _route(self, request: DeployRequest) -> None:
        """Carry ``request`` out here if we lead, else hand it to the leader (or hold it
        while an election runs)."""
        if self.lease.is_leader():
            self._work.put(request)
            return
        leader = self.lease.leader()
        if leader is None or leader == self.transport.client_id:
            self._waiting.put(request)
            return
        try:
            LEADER_DEPLOY.publish(self.transport, request, self._ns, coordinator=leader)
            log.info("deploy request %s handed to the leader %s", request.request_id, leader)
        except (TransportError, ValueError) as error:
            self._reply(
                request,
                DeployReply(
                    request.request_id,
                    ok=False,
                    message=f"could not hand the request to the leading coordinator {leader}: "
                    f"{error}; nothing was deployed: send it again",
                ),
            )

    def _redirect(self, request: DeployRequest, detail: str = "") -> DeployReply:
        leader = self.lease.leader()
        now = f"the leader is now {leader}" if leader else "a new leader is being elected"
        return DeployReply(
            request.request_id,
            ok=False,
            message=f"coordinator {self.transport.client_id} does not lead any more{detail} "
            f"({now}); nothing was deployed: send the request again",
        )

    def _reply(self, request: DeployRequest, reply: DeployReply) -> None:
        try:
            DEPLOY_REPLIES.publish(self.transport, reply, self._ns, client=request.client_id)
        except (TransportError, ValueError) as error:
            log.warning("could not send the deploy reply to %s: %s", request.client_id, error)

    # -- workers ------------------------------------------------------------------------

    def _run_work(self) -> None:
        while True:
            request = self._work.get()
            if request is None:
                return
            if request.request_id in self._seen_requests:
                log.info("deploy request %s arrived again: ignored", request.request_id)
                continue  # a QoS 1 duplicate: carried out (or under way) already
            self._seen_requests[request.request_id] = None
            while len(self._seen_requests) > 1000:
                del self._seen_requests[next(iter(self._seen_requests))]
            if not self.lease.is_leader():
                self._reply(request, self._redirect(request))
                continue
            try:
                reply = self.deployer.deploy(request)
            except LeaseLost:
                reply = self._redirect(request, " (it lost the lease during the deployment)")
            except Exception as error:  # a bug must not kill the deployer thread
                log.exception("deployment of %s failed", request.model)
                reply = DeployReply(
                    request.request_id,
                    ok=False,
                    message=f"internal error in the coordinator: {error} (its log has the details)",
                )
            self._reply(request, reply)

    def _run_forward(self) -> None:
        """Hand the requests held during an election to its winner (or refuse them)."""
        while not self._stop.is_set():
            try:
                request = self._waiting.get(timeout=0.2)
            except queue.Empty:
                continue
            if self.lease.wait_for_leader(LEADER_WAIT_S) is None:
                self._reply(
                    request,
                    DeployReply(
                        request.request_id,
                        ok=False,
                        message=f"no coordinator has led for {LEADER_WAIT_S:.0f} s (are they "
                        "all started with --no-lead, or cut off from the broker?); nothing "
                        "was deployed",
                    ),
                )
            else:
                self._route(request)

    def _run_watch(self) -> None:
        while not self._stop.wait(self.config.watch_period_s):
            self._restore_retained()
            online = len(self.registry.online_ids())
            budget, floor = self.config.telemetry_budget_per_s, self.config.lease.period_s
            self.lease.advise_telemetry(advised_telemetry_period_s(online, budget, floor))
            if not self.config.heal or not self._work.empty() or not self.lease.is_leader():
                continue  # only the leader heals (and not while cut off from the broker)
            for deployment in self.deployments().values():
                try:
                    if self.deployer.needs_healing(deployment):
                        self.deployer.heal(deployment)
                except (UnknownModel, TransportError, LeaseLost) as error:
                    log.warning("cannot heal %s: %s", deployment.deployment, error)
                except Exception:  # keep watching whatever happens
                    log.exception("healing %s failed", deployment.deployment)


M = TypeVar("M", bound=Message)


def _decode(message: InboundMessage, row: Topic[M]) -> M | None:
    try:
        return row.decode(message.payload, topic=message.topic)
    except DecodeError as error:
        log.warning("ignored a bad message on %s: %s", message.topic, error)
        return None


def _with_battery(view: AgentView, battery: Battery) -> AgentView:
    return replace(view, battery_pct=battery.pct, plugged=battery.plugged)


def _graph_section(variant: Variant | None, stages: Sequence[StageSpec]) -> tuple[int, int] | None:
    """The parallel section a Plan 2 deployment's stages were cut around (its branches
    are stages of their own); ``None`` for a chain."""
    if variant is None or all(stage.operators is None for stage in stages):
        return None
    runs = {stage.operators for stage in stages}
    for section in variant.parallel_sections:
        if all(branch.operators in runs for branch in section.branches):
            return (section.start, section.end)
    return None
