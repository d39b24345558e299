"""The agent's parts on their own: profiles, energy model, cache, runtime, settings, layering."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from splitmq.agent import (
    AgentConfig,
    BatteryMode,
    DigestMismatch,
    EnergyMeter,
    RuntimeKind,
    ShardCache,
    builtin_profiles,
    find_runtime,
    load_profile,
)
from splitmq.agent.cli import build, configure_parser, settings
from splitmq.errors import ConfigError
from splitmq.wire import Link

from .conftest import CutModel


def test_shipped_profiles_load() -> None:
    assert {"rpi4", "phone", "laptop", "host"} <= set(builtin_profiles())
    rpi = load_profile("rpi4")
    assert rpi.compute_factor > 1 and rpi.link is not None and rpi.link.bandwidth_mbps > 0
    assert load_profile("host").link is None


def test_user_profiles_in_json_and_toml(tmp_path: Path) -> None:
    data = {
        "active_power_w": 4,
        "idle_power_w": 1,
        "radio_j_per_mb": 2,
        "battery_wh": 10,
        "link": {"bandwidth_mbps": 5, "latency_ms": 30},
    }
    (tmp_path / "watch.json").write_text(json.dumps(data))
    watch = load_profile(tmp_path / "watch.json")
    assert watch.name == "watch" and watch.link == Link(5.0, 30.0)
    (tmp_path / "bad.toml").write_text("active_power_w = 1\nidle_powr_w = 1\n")
    with pytest.raises(ConfigError, match="idle_powr_w"):
        load_profile(tmp_path / "bad.toml")
    (tmp_path / "fast.json").write_text(json.dumps({**data, "compute_factor": 0.5}))
    with pytest.raises(ConfigError, match="compute_factor"):
        load_profile(tmp_path / "fast.json")
    with pytest.raises(ConfigError, match="rpi4"):
        load_profile("toaster")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_simulated_battery_drains_by_the_energy_model() -> None:
    profile = load_profile("phone")  # 3.5 W active, 0.6 W idle, 1.5 J/MB, 17 Wh
    clock = FakeClock()
    meter = EnergyMeter(profile, BatteryMode.SIMULATED, initial_pct=50.0, clock=clock)
    assert meter.battery().pct == pytest.approx(50.0)
    clock.now += 10.0  # 10 s idle: 6 J
    meter.spend_compute(2.0)  # 2 s computing: 2 * (3.5 - 0.6) J on top of idle
    meter.spend_radio(4_000_000)  # 4 MB: 6 J
    assert meter.energy_j == pytest.approx(6.0 + 5.8 + 6.0)
    capacity_j = 17 * 3600
    assert meter.battery().pct == pytest.approx(50.0 - 100 * 17.8 / capacity_j)
    assert meter.battery().simulated
    assert meter.stage_energy_j(2.0, 4_000_000) == pytest.approx(3.5 * 2 + 6.0)


def test_the_battery_mode_may_be_named_as_text_and_a_wrong_one_is_refused() -> None:
    config = AgentConfig("pi-1", battery="simulated")  # type: ignore[arg-type]
    assert config.battery is BatteryMode.SIMULATED
    with pytest.raises(ConfigError, match="auto, real, simulated, got 'solar'"):
        AgentConfig("pi-1", battery="solar")  # type: ignore[arg-type]


def test_a_plugged_device_does_not_drain(tmp_path: Path) -> None:
    clock = FakeClock()
    meter = EnergyMeter(load_profile("host"), BatteryMode.SIMULATED, clock=clock)
    clock.now += 1000
    meter.spend_compute(10)
    assert meter.battery().pct == 100.0 and meter.battery().plugged
    assert meter.energy_j > 0


def test_cache_is_content_addressed_evicts_lru_and_drops_corrupt_files(tmp_path: Path) -> None:
    blobs = [bytes([i]) * 1000 for i in range(3)]
    digests = [hashlib.sha256(b).hexdigest() for b in blobs]
    cache = ShardCache(tmp_path, max_bytes=2500)
    with pytest.raises(DigestMismatch):
        cache.put(blobs[0], digests[1])
    assert cache.digests() == []
    cache.put(blobs[0], digests[0])
    cache.put(blobs[1], digests[1])
    os.utime(cache.path(digests[0]), ns=(1, 1))  # least recently used
    os.utime(cache.path(digests[1]), ns=(2, 2))
    cache.put(blobs[2], digests[2], pinned=[digests[0]])
    assert set(cache.digests()) == {digests[0], digests[2]}  # the pinned one stays
    assert ShardCache(tmp_path, max_bytes=2500).get(digests[2]) == blobs[2]  # survives
    cache.path(digests[2]).write_bytes(b"rotten")
    assert cache.get(digests[2]) is None and digests[2] not in cache


def test_runtime_auto_prefers_litert_and_checks_boundaries(digits: CutModel) -> None:
    runtime = find_runtime(RuntimeKind.AUTO)
    assert runtime.kind is RuntimeKind.LITERT
    shard = runtime.load(digits.shards[0].data, threads=1, xnnpack=False)  # type: ignore[attr-defined]
    assert [s.name for s in shard.inputs] == [digits.input_name]
    outputs, invoke_s = shard.run({digits.input_name: digits.image})
    assert invoke_s > 0 and outputs[0].array.shape == (1, 8, 8, 16)
    assert shard.benchmark(3) > 0


def test_a_received_read_only_or_unaligned_input_runs_the_same(digits: CutModel) -> None:
    """Decoded inputs are views of the bytes received: read-only, maybe unaligned. They
    are written into the input tensor directly (one copy, not set_tensor's two) and give
    the same outputs; one that does not fit still fails as set_tensor says."""
    shard = find_runtime().load(digits.shards[0].data, threads=1, xnnpack=False)  # type: ignore[attr-defined]
    name, image = digits.input_name, np.ascontiguousarray(digits.image, np.float32)
    expected = shard.run({name: image})[0][0].array
    received = bytearray(1) + image.tobytes()
    read_only = np.frombuffer(bytes(received), np.float32, offset=1).reshape(image.shape)
    unaligned = np.frombuffer(received, np.float32, offset=1).reshape(image.shape)
    assert not read_only.flags.writeable and not unaligned.flags.aligned
    for given in (read_only, unaligned, image):
        assert np.array_equal(shard.run({name: given})[0][0].array, expected)
    narrow = np.frombuffer(bytes(received), np.float32, offset=1, count=image.size // 2)
    with pytest.raises(ValueError, match="Dimension mismatch"):
        shard.run({name: narrow})


def test_settings_come_from_cli_then_environment_then_file(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(["--id", "cli-id", "--no-xnnpack"])
    environ = {"SPLITMQ_BROKER": "mqtt://10.0.0.2:1884", "SPLITMQ_AGENT_ID": "env-id"}
    file = {
        "profile": "rpi4",
        "broker": "mqtt://file:1",
        "queue-size": 3,
        "cache": str(tmp_path),
        "site": "kitchen",
    }
    values = settings(args, environ, file)
    config, transport = build(values)
    assert config.agent_id == "cli-id"
    assert (transport.host, transport.port) == ("10.0.0.2", 1884)
    assert config.profile.name == "rpi4" and config.queue_size == 3 and not config.xnnpack
    assert config.cache_dir == tmp_path and config.site == "kitchen"
    assert transport.client_id == "splitmq-agent-cli-id"
    with pytest.raises(ConfigError, match="unknown keys"):
        settings(args, {}, {"brokr": "x"})
    with pytest.raises(ConfigError, match="broker"):
        build(settings(parser.parse_args(["--id", "x"]), {}, {}))


def test_importing_the_agent_loads_no_tensorflow() -> None:
    code = (
        "import sys, splitmq.agent, splitmq.coordinator.pool_service; "
        "print('\\n'.join(sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    loaded = {name.split(".")[0] for name in out.stdout.split()}
    assert "splitmq" in loaded
    assert not loaded & {"tensorflow", "keras", "ai_edge_litert", "tflite_runtime"}
