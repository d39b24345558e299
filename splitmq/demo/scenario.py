"""``splitmq demo``: the whole loop on this machine, in a few minutes.

1. start a broker, a coordinator and three agents (``rpi4``, ``phone``, ``laptop``
   profiles: slower compute and emulated Wi-Fi links), each a separate process (with
   ``--secure``: Mosquitto on ``broker-config/secure.conf``, TLS and per-role ACLs,
   certificates and credentials made by the ``broker-config`` scripts, one user per
   process);
2. convert the digits classifier and MobileNetV3Large into the pool (once);
3. deploy both with two replicas per stage;
4. stream requests through the fleet, kill one agent part way (SIGKILL: its will
   fires) and watch the requests complete on the fallbacks while the coordinator
   re-deploys the lost stage;
5. print the KPI table, write the plots, and check every split answer against the
   unsplit model run on one device.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from splitmq.client import Client, ClientConfig, InferenceError, InferenceResult, equality
from splitmq.client.kpi import ReportInputs
from splitmq.client.plots import write_plots
from splitmq.client.report_cli import format_report
from splitmq.client.results_db import ResultsDB
from splitmq.converter import run_model
from splitmq.converter.digits import load_split
from splitmq.converter.pool import PoolEntry
from splitmq.demo.models import ensure_models, mobilenet_inputs
from splitmq.demo.processes import (
    AGENT_PROFILES,
    COORDINATOR,
    SECURE_NEEDS_MOSQUITTO,
    DemoFleet,
)
from splitmq.demo.stopping import Stopped
from splitmq.demo.task import BATTERY_STEPS, ensure_members, run_task
from splitmq.errors import ConfigError, SplitMQError
from splitmq.mosquitto import mosquitto_binary
from splitmq.secure_setup import Role, SecureSetup, make_secure_setup
from splitmq.transport import MqttTransport, TransportConfig, parse_broker_url
from splitmq.watch import Watcher
from splitmq.wire import (
    Deployment,
    DeployReply,
    DeployRequest,
    Objective,
    PlanRefused,
    PlanRequest,
)
from splitmq.wire.topics import (
    DEPLOY_REPLIES,
    DEPLOY_REQUESTS,
    DEPLOYMENTS,
    PLAN_REQUESTS,
    PLANS,
    STATUS,
)

if TYPE_CHECKING:
    from splitmq.web.phone import BrowserPhone

log = logging.getLogger(__name__)

OPERATOR = "demo-operator"
CLIENT = "demo-client"
SECURE_USERS: tuple[tuple[Role, str], ...] = (
    (Role.COORDINATOR, COORDINATOR),
    (Role.OPERATOR, OPERATOR),
    *((Role.AGENT, agent_id) for agent_id in AGENT_PROFILES),
    (Role.CLIENT, CLIENT),
)
"""Secure mode: one user per process, each with only its role's topics."""


@dataclass(frozen=True)
class DemoOptions:
    """What ``splitmq demo`` runs.

    Attributes:
        workdir: pool, logs, caches, the results database and the plots.
        requests: MobileNetV3Large requests in the stream (digits get four times more).
        kill: kill an agent part way through the stream.
        mobilenet: include MobileNetV3Large (off: the digits classifier only, fast).
        embedded: use the embedded broker even when Mosquitto is installed.
        keep_running: leave the fleet up at the end until Ctrl-C, SIGTERM or SIGHUP.
        secure: Mosquitto on ``broker-config/secure.conf`` (TLS, passwords, per-role
            ACLs) with a CA and credentials made by the ``broker-config`` scripts.
        browser: add a headless Chromium with the agent page to the fleet, when
            Chromium is installed (``splitmq.web.phone``).
        task: also ask the task ``digits`` (three classifiers of different sizes) as the
            client's battery falls (:mod:`splitmq.demo.task`).
    """

    workdir: Path
    requests: int = 60
    kill: bool = True
    mobilenet: bool = True
    embedded: bool = False
    keep_running: bool = False
    secure: bool = False
    browser: bool = False
    task: bool = False


Say = Callable[[str], None]


def say(text: str) -> None:
    print(text, flush=True)


class Control(Watcher):
    """The demo's operator connection: waits for agents and the coordinator, deploys.

    ``probe`` is the connection of a client (a plan request is a client's to send: the
    operator's role may not) for :meth:`wait_coordinator`.
    """

    def __init__(self, config: TransportConfig, probe: TransportConfig):
        super().__init__(MqttTransport(config))
        self.probe = probe

    def start(self) -> None:
        self.transport.start()
        self.watch(STATUS).watch(DEPLOY_REPLIES, client=OPERATOR).watch(DEPLOYMENTS)

    def close(self) -> None:
        self.transport.close()

    def wait_healed(self, victim: str, timeout_s: float = 20.0) -> list[Deployment]:
        """The deployments once none of them names ``victim`` any more."""

        def healed() -> bool:
            return all(
                victim not in stage.replicas
                for deployment in self.deployments.values()
                for stage in deployment.stages
            )

        try:
            self.wait(healed, timeout_s, f"deployments without {victim}")
        except TimeoutError:
            raise SplitMQError(
                f"the coordinator did not re-deploy the stages of {victim}"
            ) from None
        return list(self.deployments.values())

    def wait_agents(
        self, agents: Iterable[str], check: Callable[[], None], timeout_s: float = 60.0
    ) -> None:
        """Wait until every agent is online; ``check`` raises when a process died."""
        wanted = set(agents)
        deadline = time.monotonic() + timeout_s
        while True:
            check()
            try:
                self.wait(lambda: all(self.online(a) for a in wanted), 0.5, "the agents")
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    missing = ", ".join(sorted(a for a in wanted if not self.online(a)))
                    raise SplitMQError(
                        f"agents {missing} did not come online (see logs/)"
                    ) from None

    def wait_coordinator(self, timeout_s: float = 60.0) -> None:
        """Ask, as the client, for a plan of a model nobody has until a coordinator
        refuses it."""
        deadline = time.monotonic() + timeout_s
        # A fresh MQTT client id: the demo's Client connects as splitmq-demo-client.
        with MqttTransport(replace(self.probe, client_id="")) as client:
            client.subscribe(PLANS.name(client=CLIENT), self, qos=PLANS.qos)
            while time.monotonic() < deadline:
                request_id = uuid.uuid4().hex
                probe = PlanRequest(request_id=request_id, client_id=CLIENT, model="no-such-model")
                PLAN_REQUESTS.publish(client, probe).wait(5)
                if isinstance(self._wait_reply(request_id, 1.0), PlanRefused):
                    return
        raise SplitMQError("no coordinator answered (see logs/coordinator.log)")

    def deploy(self, request: DeployRequest, timeout_s: float = 180.0) -> DeployReply:
        DEPLOY_REQUESTS.publish(self.transport, request).wait(5)
        reply = self._wait_reply(request.request_id, timeout_s)
        if not isinstance(reply, DeployReply):
            raise SplitMQError(f"the coordinator did not deploy {request.model} in time")
        return reply

    def _wait_reply(self, request_id: str, timeout_s: float) -> object:
        try:
            return self.wait_answer(request_id, timeout_s)
        except TimeoutError:
            return None


def deploy(
    control: Control,
    model: str,
    stages: int,
    replicas: int = 2,
    objective: Objective = Objective.LATENCY,
) -> DeployReply:
    reply = control.deploy(
        DeployRequest(
            request_id=uuid.uuid4().hex,
            client_id=OPERATOR,
            model=model,
            stages=stages,
            replicas=replicas,
            objective=objective,
            ready_timeout_s=150.0,
        )
    )
    if not reply.ok:
        raise SplitMQError(f"deploying {model} failed: {reply.message}")
    say(reply.message)
    return reply


@dataclass
class StreamOutcome:
    """What a stream gave: results and failures by input index, and the agent killed."""

    results: dict[int, InferenceResult]
    failures: dict[int, InferenceError]
    killed: str | None = None
    seconds: float = 0.0


def run_stream(
    client: Client,
    fleet: DemoFleet,
    model: str,
    inputs: np.ndarray,
    *,
    kill_after: int | None,
    run: str,
) -> StreamOutcome:
    """Stream ``inputs``; after ``kill_after`` results, SIGKILL the first stage's agent."""
    outcome = StreamOutcome({}, {})
    started = time.monotonic()
    frames = (inputs[i : i + 1] for i in range(len(inputs)))
    for item in client.stream(frames, model=model, max_in_flight=8, run=run):
        index = item.index if item.index is not None else -1
        if isinstance(item, InferenceError):
            outcome.failures[index] = item
        else:
            outcome.results[index] = item
        done = len(outcome.results) + len(outcome.failures)
        due = kill_after is not None and outcome.killed is None and done >= kill_after
        if due and isinstance(item, InferenceResult):
            victim = item.plan.route[0][0]
            say(f"  ... {done} answered: killing {victim} (SIGKILL) mid-stream")
            fleet.kill(victim)
            outcome.killed = victim
    outcome.seconds = time.monotonic() - started
    return outcome


def check_against_one_device(
    entry: PoolEntry, inputs: np.ndarray, outcome: StreamOutcome, client: Client
) -> equality.Tally:
    """Every split answer against the unsplit model run here, by the rule that fits
    (:mod:`splitmq.client.equality`): bit-identical when every stage ran with this
    machine's runtime, kernels and architecture (the agents' statuses say theirs), else
    within the float32 tolerance with the same top-1 class (the browser phone's wasm
    build, an ARM device)."""
    from splitmq.converter.runner import make_interpreter

    interpreter = make_interpreter(entry.variant_path("float32"))
    reference = equality.reference_kind()
    tally = equality.Tally("float32")
    for index, result in outcome.results.items():
        comparison, reason = equality.check(
            result.outputs,
            run_model(interpreter, [inputs[index : index + 1]]),
            stage_agents=[e.agent_id for e in result.trace],
            status_of=client.agent_status,
            reference=reference,
        )
        tally.add(comparison, reason)
    return tally


def describe_stream(name: str, outcome: StreamOutcome, total: int, tally: equality.Tally) -> None:
    retried = sum(1 for r in outcome.results.values() if r.record.retries)
    say(
        f"{name}: {len(outcome.results)}/{total} answered in {outcome.seconds:.1f} s "
        f"({len(outcome.results) / max(outcome.seconds, 1e-9):.1f}/s), {retried} after a "
        f"retry on a fallback, {len(outcome.failures)} failed"
    )
    for index, error in sorted(outcome.failures.items())[:5]:
        say(f"  input {index}: {error}")
    say(
        "  split answers equal to the unsplit model on one device: "
        f"{tally.equal}/{len(outcome.results)}, by the rule that fits:"
    )
    for line in tally.lines():
        say(f"    {line}")


def run_demo(
    options: DemoOptions,
    transport_for: Callable[[str], TransportConfig] | None = None,
    fleet: DemoFleet | None = None,
) -> int:
    """Run the demo; 0 when every answer matched the single-device run.

    ``transport_for(user)`` is the in-process connection of the demo's operator and
    client (default: the fleet's broker, as that user in secure mode).
    """
    workdir = options.workdir.resolve()
    pool = workdir / "pool"
    if fleet is None:
        secure = None
        if options.secure:
            if options.embedded:
                raise ConfigError(SECURE_NEEDS_MOSQUITTO)
            mosquitto_binary()  # says how to install it, before making certificates
            # Made once, before the broker starts: the broker and every process read
            # the same CA, broker certificate, passwd and acl.
            secure = make_secure_setup(workdir / "secure", SECURE_USERS)
        fleet = DemoFleet(workdir, pool, embedded=options.embedded, secure=secure)
    with fleet, contextlib.ExitStack() as extras:
        url = fleet.start_broker()
        say(f"broker: {fleet.broker_kind} at {url}")
        if fleet.secure is not None:
            describe_secure(fleet.secure)
        digits, mobilenet = ensure_models(pool, mobilenet=options.mobilenet)
        members = tuple(ensure_members(pool)) if options.task else ()
        fleet.start_coordinator()
        for agent_id, profile in AGENT_PROFILES.items():
            fleet.start_agent(agent_id, profile)
        phone = extras.enter_context(_browser_phone(options, fleet, pool))
        config_for = transport_for or _transports(fleet)
        control = Control(config_for(OPERATOR), config_for(CLIENT))
        control.start()
        try:
            if phone is not None:
                fleet.agents[phone.agent_id] = phone.process  # killable like any agent
                control.wait_agents([phone.agent_id], fleet.check_alive)
            models = Models(digits, mobilenet, members)
            return _scenario(options, fleet, control, config_for, models)
        finally:
            control.close()


def _browser_phone(
    options: DemoOptions, fleet: DemoFleet, pool: Path
) -> contextlib.AbstractContextManager[BrowserPhone | None]:
    """A headless Chromium agent page in the fleet (``--browser``), or nothing."""
    if not options.browser:
        return contextlib.nullcontext()
    if fleet.secure is not None:
        say("--browser runs on the development broker only: no browser phone with --secure")
        return contextlib.nullcontext()
    from splitmq.web.phone import browser_phone

    return browser_phone(parse_broker_url(fleet.broker_url), pool, fleet.workdir, say=say)


def _transports(fleet: DemoFleet) -> Callable[[str], TransportConfig]:
    """The in-process connection of each of the demo's users to ``fleet``'s broker."""
    secure, url = fleet.secure, fleet.broker_url

    def config_for(user: str) -> TransportConfig:
        if secure is not None:
            return secure.access(user).transport_config(client_id=f"splitmq-{user}")
        return parse_broker_url(url, client_id=f"splitmq-{user}")

    return config_for


def describe_secure(setup: SecureSetup) -> None:
    """Say what secure mode means for this run, and where its files are."""
    by_role: dict[Role, list[str]] = {}
    for access in setup.users.values():
        by_role.setdefault(access.role, []).append(access.username)
    users = "; ".join(f"{role.value}: {', '.join(names)}" for role, names in by_role.items())
    say(
        f"  TLS (CA and broker certificate by broker-config/make-dev-ca.sh), no anonymous "
        f"access, a password and per-role ACLs for each process (broker-config/"
        f"make-credentials.sh): {users}\n  files in {setup.directory}"
    )


@dataclass(frozen=True)
class Models:
    digits: PoolEntry
    mobilenet: PoolEntry | None
    members: tuple[PoolEntry, ...] = ()


def _scenario(
    options: DemoOptions,
    fleet: DemoFleet,
    control: Control,
    config_for: Callable[[str], TransportConfig],
    models: Models,
) -> int:
    digits, mobilenet, workdir = models.digits, models.mobilenet, fleet.workdir
    control.wait_agents(AGENT_PROFILES, fleet.check_alive)
    control.wait_coordinator()
    agents = ", ".join(f"{a} ({p})" for a, p in AGENT_PROFILES.items())
    say(f"fleet up: {agents}; logs in {fleet.logs}")
    deploy(control, digits.name, stages=2)
    if mobilenet is not None:
        # A camera's frames: deployed for throughput, the stages pipelined.
        deploy(control, mobilenet.name, stages=3, objective=Objective.THROUGHPUT)
    run = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    db = ResultsDB(workdir / "results.db")
    client = Client(
        config_for(CLIENT),
        CLIENT,
        config=ClientConfig(deadline_s=20.0, max_attempts=4),
        recorder=db.record,
        on_telemetry=db.record_telemetry,
    )
    mismatches = 0
    with client:
        images = load_split()[2]
        digit_inputs = np.concatenate([images] * max(1, (4 * options.requests) // len(images) + 1))
        digit_inputs = digit_inputs[: 4 * options.requests]
        say(f"\nstreaming {len(digit_inputs)} digits requests")
        kill_digits = options.kill and mobilenet is None
        outcome = run_stream(
            client,
            fleet,
            digits.name,
            digit_inputs,
            kill_after=len(digit_inputs) // 3 if kill_digits else None,
            run=run,
        )
        tally = check_against_one_device(digits, digit_inputs, outcome, client)
        mismatches += tally.total - tally.equal
        describe_stream("digits", outcome, len(digit_inputs), tally)
        if mobilenet is not None:
            frames = mobilenet_inputs(options.requests)
            say(f"\nstreaming {len(frames)} MobileNetV3Large frames (224x224)")
            outcome = run_stream(
                client,
                fleet,
                mobilenet.name,
                frames,
                kill_after=len(frames) // 3 if options.kill else None,
                run=run,
            )
            tally = check_against_one_device(mobilenet, frames, outcome, client)
            mismatches += tally.total - tally.equal
            describe_stream("MobileNetV3Large", outcome, len(frames), tally)
        if outcome.killed:
            for deployment in control.wait_healed(outcome.killed):
                stages = "; ".join(
                    f"stage {s.stage}: {', '.join(s.replicas)}" for s in deployment.stages
                )
                say(
                    f"re-deployed without {outcome.killed}: {deployment.deployment} epoch "
                    f"{deployment.epoch} ({stages})"
                )
        if models.members:
            task_inputs = digit_inputs[: len(BATTERY_STEPS) * max(4, options.requests // 4)]
            mismatches += run_task(
                client,
                control.deploy,
                list(models.members),
                task_inputs,
                operator=OPERATOR,
                run=run,
                say=say,
            )
    records = db.requests(run=run)
    inputs = ReportInputs(tuple(records), tuple(db.telemetry()), run)
    say("\n" + format_report(inputs.kpis(), str(db.path), run))
    plots = write_plots(inputs, workdir / "plots")
    say(f"\nplots: {', '.join(str(p) for p in plots)}")
    say(f"results database: {db.path} (splitmq report --db {db.path} --run {run})")
    db.close()
    if options.keep_running:
        _keep_running(fleet)
    if mismatches:
        say(f"\n{mismatches} split answers differ from the single-device run beyond their rule")
        return 1
    say("\nevery split answer equals the single-device run by its rule (above)")
    return 0


def _keep_running(fleet: DemoFleet) -> None:
    operator = client = f"--broker {fleet.broker_url}"
    if fleet.secure is not None:
        operator = " ".join(fleet.secure.access(OPERATOR).cli_args())
        client = " ".join(fleet.secure.access(CLIENT).cli_args()) + f" --client-id {CLIENT}"
    say(
        f"\nthe fleet keeps running (Ctrl-C, SIGTERM or SIGHUP stops it). Try:\n"
        f"  splitmq fleet {operator}\n"
        f"  splitmq infer digits some-digit.png {client}\n"
    )
    try:
        while True:
            time.sleep(1)
    except (KeyboardInterrupt, Stopped) as stop:
        say(f"stopping ({stop if isinstance(stop, Stopped) else 'Ctrl-C'})")
