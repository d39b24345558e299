"""A fleet with an emulated Raspberry Pi in it: a coordinator and an agent on x86, and an
agent inside the ARM64 root of ``make pi-root`` (QEMU user-mode emulation), through
the session's real Mosquitto.

The Pi's agent runs this source tree (bound read-only at /src in the root) with the
root's own Python, numpy and LiteRT (aarch64 wheels). Its shard cache is a folder of
the test's, bound into the root, so the test can look into it and a restarted Pi finds
what it had downloaded.

Where the root cannot run (no root user, no binfmt_misc, not built) the tests skip
with the reason; CI has all of it and allows no skip.
"""

from __future__ import annotations

import argparse
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scripts import pi_chroot, pi_root
from splitmq import processes
from splitmq.broker_options import add_broker_options
from splitmq.coordinator.cli import request_deployment
from splitmq.wire import Deployment, DeployRequest
from tests import processes as spawn
from tests.e2e.conftest import Watch

PI = "pi-1"
X86 = "x86-1"
PI_CACHE = "/var/cache/splitmq/shards"
TELEMETRY_PERIOD_S = 0.5
START_TIMEOUT_S = 90.0
"""The Pi's start: Python, numpy and LiteRT imported and the calibration net run under
emulation (about 10-20 s on an idle machine)."""
MOBILENET = ("MobileNetV3Small", 96)
"""The architecture and input size the rest of the suite converts too (converted once
per session)."""


@pytest.fixture(scope="session")
def built_pi_root() -> pi_root.PiRoot:
    reason = pi_root.missing()
    if reason:
        pytest.skip(reason)
    found = pi_root.cached()
    if found is None:
        pytest.skip("the emulated Pi's root is not built: run `make pi-root`")
    return found


@dataclass
class PiFleet:
    """The processes, the watcher and what the test deployed."""

    url: str
    namespace: str
    workdir: Path
    root: pi_root.PiRoot
    coordinator: processes.Process
    agents: dict[str, processes.Process]
    watch: Watch
    entries: dict[str, Any] = field(default_factory=dict)
    """The pool's models (:class:`splitmq.converter.PoolEntry`) by name."""
    deployments: dict[str, Deployment] = field(default_factory=dict)

    @property
    def pi_cache(self) -> Path:
        return self.workdir / "pi-cache"

    def start_pi(self) -> None:
        self.agents[PI] = start_pi_agent(self.root, self.url, self.namespace, self.workdir)

    def deploy(self, model: str, **options: Any) -> Deployment:
        request = DeployRequest(
            request_id=uuid.uuid4().hex,
            client_id=f"pi-operator-{uuid.uuid4().hex[:8]}",
            model=model,
            ready_timeout_s=60.0,
            **options,
        )
        reply = request_deployment(broker_args(self.url, self.namespace), request, 90.0)
        assert reply.ok, f"{reply.message}\n{self.logs()}"
        deployment = self.watch.wait_for(
            Deployment, lambda d: d.deployment == reply.deployment and d.epoch >= reply.epoch
        )
        self.deployments[model] = deployment
        return deployment

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-20:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)


def start_pi_agent(
    root: pi_root.PiRoot, url: str, namespace: str, workdir: Path
) -> processes.Process:
    """The Pi's agent: ``python -m splitmq.agent`` of this tree inside the root."""
    cache = workdir / "pi-cache"
    cache.mkdir(exist_ok=True)
    argv = processes.agent_command(
        ["--broker", url],
        PI,
        Path(PI_CACHE),
        profile="rpi4",
        telemetry_period_s=TELEMETRY_PERIOD_S,
        extra=("--namespace", namespace, "--no-emulate"),  # QEMU is slow enough
        python=pi_root.PYTHON,
    )
    command = pi_chroot.command(
        root.path,
        argv,
        env={"PYTHONPATH": "/src", "PYTHONUNBUFFERED": "1", **pi_root.pycache_env()},
        binds=(
            pi_chroot.Bind(pi_root.PROJECT, "/src"),
            pi_chroot.Bind(cache, PI_CACHE, read_only=False),
            pi_root.pycache_bind(root.pycache),
        ),
    )
    return processes.spawn(command, workdir / f"{PI}.log")


def broker_args(url: str, namespace: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_broker_options(parser)
    return parser.parse_args(["--broker", url, "--namespace", namespace])


@pytest.fixture(scope="module")
def pi_fleet(
    built_pi_root: pi_root.PiRoot,
    mosquitto: Any,
    digits_pool: Any,
    application_entry: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PiFleet]:
    workdir = tmp_path_factory.mktemp("pi-fleet")
    started = time.monotonic()
    pool_dir = workdir / "pool"
    entries = {e.name: e for e in (digits_pool, application_entry(*MOBILENET))}
    for entry in entries.values():
        target = pool_dir / entry.name / entry.version
        shutil.copytree(entry.path, target)
        (target.parent / "latest").write_text(entry.version + "\n")
    print(
        f"\nthe pool (digits, {MOBILENET[0]}-{MOBILENET[1]}) in {time.monotonic() - started:.1f} s"
    )
    url = mosquitto.url()
    namespace = f"pi-{uuid.uuid4().hex[:8]}/v1"
    watch = Watch(url, namespace)
    watch.start()
    fleet = PiFleet(
        url,
        namespace,
        workdir,
        built_pi_root,
        spawn.start_coordinator(url, pool_dir, workdir, "--namespace", namespace),
        {},
        watch,
        entries,
    )
    fleet.start_pi()  # first: it is the slow one
    fleet.agents[X86] = spawn.start_agent(
        url, X86, workdir, "--namespace", namespace, telemetry_period_s=TELEMETRY_PERIOD_S
    )
    try:
        started = time.monotonic()
        watch.wait(
            lambda: all(watch.online(a) and a in watch.telemetry for a in fleet.agents),
            START_TIMEOUT_S,
            "online status and telemetry from both agents",
        )
        print(f"\nthe emulated Pi and the x86 agent online in {time.monotonic() - started:.1f} s")
        watch.coordinator_answers(30.0)
    except BaseException:
        stop(fleet)
        print(fleet.logs())  # shown with the failure
        raise
    yield fleet
    stop(fleet)


def stop(fleet: PiFleet) -> None:
    spawn.stop([fleet.coordinator, *fleet.agents.values()])
    fleet.watch.close()
