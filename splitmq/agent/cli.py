"""``splitmq agent``: the command line, environment and config file of an edge agent.

Every option can also come from the environment (``SPLITMQ_BROKER``,
``SPLITMQ_AGENT_ID``, ``SPLITMQ_PROFILE``, ``SPLITMQ_CACHE``, ``SPLITMQ_PASSWORD``...:
``SPLITMQ_`` and the option's name in capitals, dashes as underscores) or from a TOML
file given with ``--config`` (keys are the option names, with dashes or underscores).
The command line wins over the environment, which wins over the file. This module is
the only place the agent reads either.
"""

from __future__ import annotations

import argparse
import logging
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from splitmq.errors import ConfigError, SplitMQError
from splitmq.stop_signals import StopSignals

log = logging.getLogger(__name__)

_ENV_NAMES = {"id": "SPLITMQ_AGENT_ID"}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``splitmq agent`` to the main command's subparsers (runs with ``args.run``)."""
    parser = subparsers.add_parser(
        "agent",
        help="run an edge agent on this device",
        description="Serve stages of deployed models: fetch, cache and run shards, forward "
        "activations, publish presence and telemetry.",
    )
    configure_parser(parser)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Declare the agent's options (every default is None: resolved in :func:`settings`)."""
    add = parser.add_argument
    add("--config", type=Path, help="TOML file with any of these options")
    add("--broker", help="broker URL, mqtt://[user[:password]@]HOST[:PORT] or mqtts://...")
    add("--id", help="this agent's id (a topic level: no '/', '+', '#')")
    add("--profile", help="device profile: rpi4, phone, laptop, host, or a .json/.toml file")
    add("--cache", type=Path, help="shard cache directory (default ~/.cache/splitmq/shards)")
    add("--cache-max-mb", type=float, help="cache size limit in MB (default 2048)")
    add("--runtime", choices=["auto", "litert", "tflite-runtime", "tensorflow"])
    add("--threads", type=int, help="interpreter threads per shard")
    add("--no-xnnpack", action="store_const", const=True, help="builtin kernels only")
    add("--telemetry-period", type=float, help="seconds between telemetry messages (1)")
    add("--queue-size", type=int, help="activations waiting per stage before 'overloaded'")
    add("--coordinator-id", help="the only command issuer obeyed (coordinator)")
    add("--site", help="where this agent is (its site broker, home, campus): free text")
    add("--namespace", help="topic prefix (splitmq/v1)")
    add("--battery", choices=["auto", "real", "simulated"])
    add("--battery-pct", type=float, help="charge of the simulated battery at start")
    add("--no-emulate", action="store_const", const=True, help="ignore compute factor and link")
    add("--join-wait-ms", type=float, help="a join's wait for its last branches (ms)")
    add("--join-max-mb", type=float, help="tensors a join may hold waiting (MB)")
    add("--mqtt-version", choices=["5", "3.1.1"])
    add("--username", help="MQTT user name")
    add("--password", help="MQTT password (prefer SPLITMQ_PASSWORD or --password-file)")
    add("--password-file", type=Path, help="file holding the MQTT password")
    add("--ca-certs", type=Path, help="CA bundle for TLS")
    add("--certfile", type=Path, help="client certificate for TLS")
    add("--keyfile", type=Path, help="client key for TLS")
    add("--tls-insecure", action="store_const", const=True, help="skip the host name check")
    add("--log-level", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(run=run)


_OPTIONS = [
    "broker",
    "id",
    "profile",
    "cache",
    "cache_max_mb",
    "runtime",
    "threads",
    "no_xnnpack",
    "telemetry_period",
    "queue_size",
    "join_wait_ms",
    "join_max_mb",
    "coordinator_id",
    "site",
    "namespace",
    "battery",
    "battery_pct",
    "no_emulate",
    "mqtt_version",
    "username",
    "password",
    "password_file",
    "ca_certs",
    "certfile",
    "keyfile",
    "tls_insecure",
    "log_level",
]


def settings(
    args: argparse.Namespace, environ: Mapping[str, str], file: Mapping[str, Any]
) -> dict[str, Any]:
    """Each option's value: command line, else environment, else config file, else None."""
    normalized = {str(k).replace("-", "_"): v for k, v in file.items()}
    unknown = sorted(set(normalized) - set(_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown keys in the agent config file: {unknown}")
    values: dict[str, Any] = {}
    for name in _OPTIONS:
        value = getattr(args, name, None)
        if value is None:
            env = environ.get(_ENV_NAMES.get(name, f"SPLITMQ_{name.upper()}"))
            if env is not None and env != "":
                value = env
        if value is None:
            value = normalized.get(name)
        values[name] = value
    return values


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def build(values: Mapping[str, Any]) -> tuple[Any, Any]:
    """``(AgentConfig, TransportConfig)`` from resolved settings."""
    from splitmq.agent.config import AgentConfig, MiB
    from splitmq.agent.energy import BatteryMode
    from splitmq.agent.profiles import DEFAULT_PROFILE, load_profile
    from splitmq.agent.runtime import RuntimeKind
    from splitmq.transport import MqttVersion, parse_broker_url

    if not values.get("broker"):
        raise ConfigError("no broker: give --broker mqtt://HOST:PORT (or SPLITMQ_BROKER)")
    if not values.get("id"):
        raise ConfigError("no agent id: give --id NAME (or SPLITMQ_AGENT_ID)")
    agent: dict[str, Any] = {
        "agent_id": str(values["id"]),
        "profile": load_profile(values.get("profile") or DEFAULT_PROFILE),
    }
    optional: dict[str, tuple[str, Callable[[Any], Any]]] = {
        "cache": ("cache_dir", Path),
        "cache_max_mb": ("cache_max_bytes", lambda v: int(float(v) * MiB)),
        "runtime": ("runtime", RuntimeKind),
        "threads": ("threads", int),
        "telemetry_period": ("telemetry_period_s", float),
        "queue_size": ("queue_size", int),
        "join_wait_ms": ("join_wait_ms", float),
        "join_max_mb": ("join_max_bytes", lambda v: int(float(v) * MiB)),
        "coordinator_id": ("coordinator_id", str),
        "site": ("site", str),
        "namespace": ("namespace", str),
        "battery": ("battery", BatteryMode),
        "battery_pct": ("battery_pct", float),
    }
    try:
        for option, (name, convert) in optional.items():
            if values.get(option) is not None:
                agent[name] = convert(values[option])
    except ValueError as error:
        raise ConfigError(f"bad agent setting: {error}") from None
    if _flag(values.get("no_xnnpack")):
        agent["xnnpack"] = False
    if _flag(values.get("no_emulate")):
        agent["emulate"] = False
    config = AgentConfig(**agent)

    password = values.get("password")
    if values.get("password_file"):
        try:
            password = Path(values["password_file"]).read_text().strip()
        except OSError as error:
            raise ConfigError(f"cannot read the password file: {error}") from None
    overrides: dict[str, Any] = {
        "client_id": f"splitmq-agent-{config.agent_id}",
        "username": values.get("username"),
        "password": password,
        "ca_certs": Path(values["ca_certs"]) if values.get("ca_certs") else None,
        "certfile": Path(values["certfile"]) if values.get("certfile") else None,
        "keyfile": Path(values["keyfile"]) if values.get("keyfile") else None,
    }
    if values.get("mqtt_version"):
        overrides["version"] = MqttVersion(str(values["mqtt_version"]))
    if _flag(values.get("tls_insecure")):
        overrides["tls_insecure"] = True
    if overrides["ca_certs"] is not None:
        overrides["tls"] = True
    transport = parse_broker_url(str(values["broker"]), **overrides)
    return config, transport


def run(args: argparse.Namespace) -> int:
    """Run an agent until SIGINT or SIGTERM; 0 on a clean stop, 2 on a setting error."""
    from splitmq.agent.agent import Agent, agent_will
    from splitmq.agent.memory import keep_large_buffers
    from splitmq.transport import MqttTransport

    try:
        file: dict[str, Any] = {}
        config_path = args.config or os.environ.get("SPLITMQ_AGENT_CONFIG")
        if config_path:
            try:
                file = tomllib.loads(Path(config_path).read_text())
            except (OSError, tomllib.TOMLDecodeError) as error:
                raise ConfigError(f"cannot read {config_path}: {error}") from None
        values = settings(args, os.environ, file)
        logging.basicConfig(
            level=str(values.get("log_level") or "info").upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        config, transport_config = build(values)
        keep_large_buffers()  # process-wide, so here at the entry point (memory.py says why)
        transport = MqttTransport(transport_config, will=agent_will(config))
        agent = Agent(config, transport)
    except SplitMQError as error:
        log.error("%s", error)
        print(f"splitmq agent: {error}", flush=True)
        return 2

    with StopSignals() as signals:
        try:
            agent.start()
        except SplitMQError as error:
            log.error("cannot start: %s", error)
            return 1
        log.info("%s: stopping", signals.wait().name)
        agent.stop()  # a second signal meanwhile does not cut it short
    return 0
