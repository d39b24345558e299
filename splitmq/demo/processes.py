"""The demo's fleet: a broker, a coordinator and agents, each a separate process.

The broker is Mosquitto when it is installed, otherwise the embedded Python broker (so
nothing needs root). In secure mode it is Mosquitto on ``broker-config/secure.conf``
(TLS, passwords, per-role ACL) with the files of a :class:`~splitmq.secure_setup.SecureSetup`,
and every process connects with its own credentials. Every process logs into
``WORKDIR/logs/``; :meth:`DemoFleet.stop` stops everything that was started, whatever
happened. Every process is bound to the demo (:mod:`splitmq.orphans`): should the demo
be killed with SIGKILL, and run no cleanup, its children get SIGTERM from the kernel.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from splitmq import processes
from splitmq.errors import ConfigError, SplitMQError
from splitmq.mosquitto import Mosquitto, config_dir, mosquitto_binary
from splitmq.secure_setup import SecureSetup

AGENT_PROFILES = {"pi-1": "rpi4", "phone-1": "phone", "laptop-1": "laptop"}
COORDINATOR = "coordinator"
"""The coordinator's user name in secure mode."""
CONNECTION_ENVIRONMENT = (
    "SPLITMQ_BROKER",
    "SPLITMQ_USERNAME",
    "SPLITMQ_PASSWORD",
    "SPLITMQ_PASSWORD_FILE",
    "SPLITMQ_CA_CERTS",
    "SPLITMQ_CERTFILE",
    "SPLITMQ_KEYFILE",
    "SPLITMQ_TLS_INSECURE",
    "SPLITMQ_MQTT_VERSION",
    "SPLITMQ_NAMESPACE",
    "SPLITMQ_AGENT_CONFIG",
)
"""Variables the commands would read for their connection: the demo gives every
process its own on the command line, and leaves none to a caller's shell."""
SECURE_NEEDS_MOSQUITTO = (
    "--secure needs Mosquitto: the embedded broker has neither TLS nor ACLs "
    "(drop --embedded-broker; `apt-get install mosquitto` if it is missing)"
)


@dataclass
class DemoFleet:
    """Processes of the demo; use as a context manager.

    Attributes:
        workdir: logs, agent caches and the broker's files go here.
        pool: the model pool the coordinator serves.
        embedded: use the embedded broker even when Mosquitto is installed.
        secure: secure mode: Mosquitto on ``secure.conf`` with these files, and each
            process with the credentials of the user named as it (``coordinator``, the
            agent ids); None: the anonymous development broker.
        broker_url: set once the broker runs.
        broker_kind: ``mosquitto`` or ``embedded``, set once the broker runs.
    """

    workdir: Path
    pool: Path
    embedded: bool = False
    secure: SecureSetup | None = None
    broker_url: str = ""
    broker_kind: str = ""
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _mosquitto: Mosquitto | None = None
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _killed: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        path = self.workdir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def __enter__(self) -> DemoFleet:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- broker -------------------------------------------------------------------------

    def start_broker(self) -> str:
        """Mosquitto if installed (and not ``embedded``), else the embedded broker."""
        if self.secure is not None:
            if self.embedded:
                raise ConfigError(SECURE_NEEDS_MOSQUITTO)
            mosquitto_binary()  # ConfigError naming the package when it is missing
            # The broker reads the CA, its certificate, passwd and acl from the setup's
            # directory: the very files the other processes were given.
            self._mosquitto = self.secure.mosquitto(self.workdir / "broker")
            self._mosquitto.bound_to_parent = True
            self._mosquitto.start()
            self.broker_url = self._mosquitto.url("mqtts")
            self.broker_kind = "mosquitto"
            return self.broker_url
        use_mosquitto = not self.embedded
        if use_mosquitto:
            try:
                mosquitto_binary()
            except ConfigError:
                use_mosquitto = False
        if use_mosquitto:
            self._mosquitto = Mosquitto(
                config_dir() / "dev.conf", self.workdir / "broker", bound_to_parent=True
            ).start()
            self.broker_url = self._mosquitto.url()
            self.broker_kind = "mosquitto"
        else:
            self.broker_url = self._start_embedded()
            self.broker_kind = "embedded"
        return self.broker_url

    def _start_embedded(self) -> str:
        process, url = processes.start_embedded_broker(
            self.logs / "broker.log", bound_to_parent=True
        )
        self._processes.append(process)
        return url

    # -- splitmq processes --------------------------------------------------------------

    def broker_args(self, user: str) -> list[str]:
        """The broker options of a ``splitmq`` process connecting as ``user``."""
        if self.secure is not None:
            return self.secure.access(user).cli_args()
        return ["--broker", self.broker_url]

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        process = processes.spawn(
            command,
            self.logs / f"{name}.log",
            without=CONNECTION_ENVIRONMENT,
            bound_to_parent=True,
        )
        self._processes.append(process)
        return process

    def start_coordinator(self) -> subprocess.Popen[bytes]:
        command = processes.coordinator_command(self.broker_args(COORDINATOR), self.pool)
        return self._spawn("coordinator", command)

    def start_agent(self, agent_id: str, profile: str) -> subprocess.Popen[bytes]:
        command = processes.agent_command(
            self.broker_args(agent_id),
            agent_id,
            self.workdir / "cache" / agent_id,
            profile=profile,
            # Builtin kernels (the default): the split output is then bit-identical to
            # one device's.
            telemetry_period_s=0.5,
        )
        process = self._spawn(agent_id, command)
        self.agents[agent_id] = process
        return process

    def check_alive(self) -> None:
        """Raise, naming its log, when a process this fleet started has exited."""
        for process in self._processes:
            if process.poll() is not None and process not in self._killed:
                name = next((a for a, p in self.agents.items() if p is process), "a process")
                raise SplitMQError(
                    f"{name} exited with status {process.returncode} (see {self.logs})"
                )

    def kill(self, agent_id: str) -> None:
        """SIGKILL an agent: no goodbye, the broker fires its will."""
        process = self.agents[agent_id]
        self._killed.append(process)
        processes.kill(process)

    def stop(self) -> None:
        """Stop every process started (agents and coordinator first, the broker last)."""
        processes.stop(reversed(self._processes))
        self._processes.clear()
        if self._mosquitto is not None:
            self._mosquitto.stop()
            self._mosquitto = None
