"""Fixtures shared by every tier: real Mosquitto brokers started from broker-config/."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitmq.broker import Mosquitto, config_dir

BROKER_CONFIG = config_dir()
CALIBRATION_SAMPLES = 8


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


@pytest.fixture(scope="session")
def converter_front_end() -> Iterator[object]:
    """One converter child process shared by the session's conversions, so TensorFlow
    is imported once (several seconds) rather than once per ``convert()``."""
    from splitmq.converter.isolated import FrontEndProcess

    with FrontEndProcess() as process:
        yield process


@pytest.fixture(scope="session")
def digits_pool(tmp_path_factory: pytest.TempPathFactory, converter_front_end: Any) -> object:
    """The small digits classifier trained and converted (float32, int8) once per session.

    Returns its :class:`splitmq.converter.PoolEntry`; the pool is ``entry.path.parents[1]``.
    """
    from splitmq.converter.digits import train_and_convert

    return train_and_convert(
        tmp_path_factory.mktemp("digits-pool"),
        epochs=3,
        variants=("float32", "int8"),
        front_end=converter_front_end,
    )


@pytest.fixture(scope="session")
def pool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pool")


@pytest.fixture(scope="session")
def application_entry(pool_dir: Path, converter_front_end: Any) -> Callable[[str, int], object]:
    """``application_entry(name, size)``: a keras.applications architecture (weights=None)
    as a float32 + int8 pool entry in ``pool_dir``, converted once per session."""
    from splitmq.converter import PoolEntry, convert

    cache: dict[tuple[str, int], PoolEntry] = {}

    def get(name: str, size: int) -> PoolEntry:
        key = (name, size)
        if key not in cache:
            rng = np.random.default_rng(1)
            calibration = rng.uniform(0, 255, (CALIBRATION_SAMPLES, size, size, 3))
            cache[key] = convert(
                name,
                name=f"{name.lower()}-{size}",
                pool_dir=pool_dir,
                variants=("float32", "int8"),
                calibration=calibration.astype(np.float32),
                input_size=size,
                front_end=converter_front_end,
            )
        return cache[key]

    return get
