"""Fixtures shared by every tier: real Mosquitto brokers started from broker-config/."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from splitmq.broker import Mosquitto, config_dir

BROKER_CONFIG = config_dir()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A real Mosquitto from broker-config/dev.conf on a free port, for the session."""
    with Mosquitto(BROKER_CONFIG / "dev.conf", tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@dataclass(frozen=True)
class SecureBroker:
    broker: Mosquitto
    ca_cert: Path
    credentials: dict[str, tuple[str, str]]  # name -> (role, password)

    def password(self, name: str) -> str:
        return self.credentials[name][1]


@pytest.fixture(scope="session")
def secure_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """broker-config/secure.conf with a fresh dev CA and credentials for three roles."""
    files = tmp_path_factory.mktemp("secure-broker")
    subprocess.run(
        ["bash", str(BROKER_CONFIG / "make-dev-ca.sh"), str(files / "certs")],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "bash",
            str(BROKER_CONFIG / "make-credentials.sh"),
            str(files),
            "coordinator:coordinator",
            "agent:rpi-1",
            "agent:phone-1",
            "client:alice",
            "client:bob",
        ],
        check=True,
        capture_output=True,
    )
    credentials = {}
    for line in (files / "credentials.txt").read_text().splitlines():
        role, name, password = line.split()
        credentials[name] = (role, password)
    broker = Mosquitto(BROKER_CONFIG / "secure.conf", files / "run", files_dir=files)
    with broker:
        yield SecureBroker(broker, files / "certs" / "ca.crt", credentials)
