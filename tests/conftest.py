"""Fixtures shared by every tier: real Mosquitto brokers started from broker-config/, the
shipped digits model; and what a test needs but cannot find.

The tiers are markers: the fast tier (``make test-fast``) is ``not integration and not
slow``. A test marked ``tensorflow`` (or using ``application_entry``; it joins the slow
tier) is skipped, with the reason, where TensorFlow is not installed; one marked
``integration`` (or using the Mosquitto fixtures; it joins that tier) where Mosquitto is
not. With ``SPLITMQ_REQUIRE_ALL=1`` (``.ci/run`` sets it) every skip is a failure
instead: CI installs everything, so nothing may be skipped there.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import settings

from splitmq.errors import SplitMQError
from splitmq.mosquitto import Mosquitto, config_dir, mosquitto_binary
from tests.data import digits_pool as shipped_digits_pool

# Hypothesis fails an example that takes over 200 ms by default: on a busy machine (CI,
# two test workers on two cores) that is noise, not a finding. Examples are still bounded
# by pytest-timeout.
settings.register_profile("splitmq", deadline=None)
settings.load_profile("splitmq")

BROKER_CONFIG = config_dir()
CALIBRATION_SAMPLES = 8
REQUIRE_ALL = "SPLITMQ_REQUIRE_ALL"
Report = TypeVar("Report", pytest.TestReport, pytest.CollectReport)
MOSQUITTO_FIXTURES = frozenset({"mosquitto", "secure_mosquitto"})
TENSORFLOW_FIXTURES = frozenset({"application_entry", "two_io_entry"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if TENSORFLOW_FIXTURES & fixtures:
            item.add_marker(pytest.mark.tensorflow)
        if item.get_closest_marker("tensorflow"):
            item.add_marker(pytest.mark.slow)
        if MOSQUITTO_FIXTURES & fixtures:
            item.add_marker(pytest.mark.integration)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("tensorflow") and find_spec("tensorflow") is None:
        pytest.skip("needs TensorFlow: pip install -e '.[convert]'")
    if item.get_closest_marker("integration"):
        try:
            mosquitto_binary()
        except SplitMQError as error:
            pytest.skip(f"needs Mosquitto: {error}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    return _no_skip((yield))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    return _no_skip((yield))


def _no_skip(report: Report) -> Report:
    """Under ``SPLITMQ_REQUIRE_ALL=1`` a skip (not an expected failure) fails."""
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get(REQUIRE_ALL) == "1":
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, and {REQUIRE_ALL}=1 allows no skip: {reason}"
    return report


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
def digits_pool(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The small digits classifier converted (float32, int8), as shipped in tests/data.

    Returns its :class:`splitmq.converter.PoolEntry` in a copy of the shipped pool, so a
    test may add to it; the pool is ``entry.path.parents[1]``.
    """
    return shipped_digits_pool(tmp_path_factory.mktemp("digits-pool"))


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
