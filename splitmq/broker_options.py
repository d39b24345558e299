"""Broker connection options shared by the commands that talk to a broker.

``coordinator``, ``deploy``, ``fleet``, ``infer`` and ``demo`` take the same options;
each may also come from the environment: ``SPLITMQ_BROKER``, ``SPLITMQ_USERNAME``,
``SPLITMQ_PASSWORD``, ``SPLITMQ_CA_CERTS``... (``SPLITMQ_`` and the option's name in
capitals, dashes as underscores). The command line wins.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from splitmq.errors import ConfigError
from splitmq.transport import MqttVersion, TransportConfig, parse_broker_url
from splitmq.wire.topics import DEFAULT_NAMESPACE

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"

_OPTIONS = (
    "broker",
    "username",
    "password",
    "password_file",
    "ca_certs",
    "certfile",
    "keyfile",
    "tls_insecure",
    "mqtt_version",
    "namespace",
)


def add_broker_options(parser: argparse.ArgumentParser) -> None:
    """Declare the broker options (every default None: resolved in :func:`transport_config`)."""
    group = parser.add_argument_group("broker")
    add = group.add_argument
    add(
        "--broker",
        help=f"broker URL, mqtt://[user[:pw]@]HOST[:PORT] or mqtts:// ({DEFAULT_BROKER})",
    )
    add("--username", help="MQTT user name")
    add("--password", help="MQTT password (prefer SPLITMQ_PASSWORD or --password-file)")
    add("--password-file", type=Path, help="file holding the MQTT password")
    add("--ca-certs", type=Path, help="CA bundle for TLS (turns TLS on)")
    add("--certfile", type=Path, help="client certificate for TLS")
    add("--keyfile", type=Path, help="client key for TLS")
    add("--tls-insecure", action="store_const", const=True, help="skip the host name check")
    add("--mqtt-version", choices=["5", "3.1.1"], help="MQTT protocol version (5)")
    add("--namespace", help=f"topic prefix ({DEFAULT_NAMESPACE})")


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Each broker option: command line, else ``SPLITMQ_<NAME>`` from the environment."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name in _OPTIONS:
        value = getattr(args, name, None)
        if value is None:
            value = environ.get(f"SPLITMQ_{name.upper()}") or None
        values[name] = value
    return values


def namespace(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str:
    return str(resolve(args, environ)["namespace"] or DEFAULT_NAMESPACE)


def transport_config(
    args: argparse.Namespace, client_id: str, environ: Mapping[str, str] | None = None
) -> TransportConfig:
    """The connection the options describe, as ``client_id``."""
    values = resolve(args, environ)
    password = values["password"]
    if values["password_file"]:
        try:
            password = Path(values["password_file"]).read_text().strip()
        except OSError as error:
            raise ConfigError(f"cannot read the password file: {error}") from None
    overrides: dict[str, Any] = {
        "client_id": client_id,
        "username": values["username"],
        "password": password,
        "ca_certs": Path(values["ca_certs"]) if values["ca_certs"] else None,
        "certfile": Path(values["certfile"]) if values["certfile"] else None,
        "keyfile": Path(values["keyfile"]) if values["keyfile"] else None,
    }
    if values["mqtt_version"]:
        overrides["version"] = MqttVersion(str(values["mqtt_version"]))
    if values["tls_insecure"] and str(values["tls_insecure"]).lower() not in ("0", "false", "no"):
        overrides["tls_insecure"] = True
    if overrides["ca_certs"] is not None:
        overrides["tls"] = True
    return parse_broker_url(str(values["broker"] or DEFAULT_BROKER), **overrides)
