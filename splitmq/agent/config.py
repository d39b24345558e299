"""The agent's one configuration object. The CLI and environment are read in ``cli.py`` only."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from splitmq.agent.energy import BatteryMode
from splitmq.agent.profiles import DEFAULT_PROFILE, DeviceProfile, load_profile
from splitmq.agent.runtime import RuntimeKind
from splitmq.errors import ConfigError
from splitmq.wire.topics import DEFAULT_NAMESPACE, check_segment

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/splitmq/shards`` (``~/.cache/splitmq/shards``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "splitmq" / "shards"


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class AgentConfig:
    """Everything an edge agent needs besides its broker connection.

    Attributes:
        agent_id: this agent's name: a topic level (no '/', '+', '#').
        profile: the device profile (energy figures, compute factor, emulated link).
        cache_dir: the shard cache directory (kept across restarts).
        cache_max_bytes: the cache's size limit; least recently used shards go first.
        namespace: the topic prefix every topic lives under.
        coordinator_id: the only ``issuer`` whose commands are obeyed.
        runtime: which TFLite runtime to use; ``auto`` picks LiteRT, then tflite-runtime,
            then TensorFlow Lite.
        threads: interpreter threads per shard, unless the load command says otherwise.
        xnnpack: let the runtime apply its default (XNNPACK) delegate. Off runs the
            builtin kernels, which keeps chained shards bit-identical to the unsplit model.
        queue_size: activations a stage may hold waiting; one more is refused as
            ``overloaded``.
        telemetry_period_s: how often telemetry (and the broker round-trip probe) goes out.
        bench_runs: invocations in the benchmark run after a shard is loaded.
        fetch_chunk_bytes: the chunk size asked of the model pool.
        fetch_window: chunk requests in flight at once.
        fetch_timeout_s: wait this long for a chunk before asking again.
        fetch_retries: ask again this many times before the load fails.
        battery: report the real battery, a simulated one, or the real one when present.
        battery_pct: the simulated battery's charge at start (default: the profile's).
        emulate: apply the profile's compute factor and link; off runs at host speed.
        site: where the agent is (its site broker, a home, a campus), shown by
            ``splitmq fleet``; '' when not said.
        dedup_entries: (request, stage, attempt) triples remembered to drop duplicates.
        join_wait_ms: how long a join stage waits for its last branches after the first
            arrived (never past the request's deadline) before it tells the requester
            which branches are missing (``branch_missing``), so it retries those alone.
        join_max_bytes: tensors a join stage may hold waiting for their other branches;
            an activation past it is refused as ``join_full``.
    """

    agent_id: str
    profile: DeviceProfile = field(default_factory=lambda: load_profile(DEFAULT_PROFILE))
    cache_dir: Path = field(default_factory=default_cache_dir)
    cache_max_bytes: int = 2 * GiB
    namespace: str = DEFAULT_NAMESPACE
    coordinator_id: str = "coordinator"
    site: str = ""
    runtime: RuntimeKind = RuntimeKind.AUTO
    threads: int = field(default_factory=default_threads)
    xnnpack: bool = True
    queue_size: int = 16
    telemetry_period_s: float = 1.0
    bench_runs: int = 5
    fetch_chunk_bytes: int = 256 * KiB
    fetch_window: int = 4
    fetch_timeout_s: float = 10.0
    fetch_retries: int = 3
    battery: BatteryMode = BatteryMode.AUTO
    battery_pct: float | None = None
    emulate: bool = True
    dedup_entries: int = 4096
    join_wait_ms: float = 1000.0
    join_max_bytes: int = 64 * 1024 * KiB

    def __post_init__(self) -> None:
        try:
            check_segment("agent id", self.agent_id)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if self.agent_id == "any":
            raise ConfigError("agent id 'any' is reserved for shared stage topics")
        positive = {
            "cache_max_bytes": self.cache_max_bytes,
            "threads": self.threads,
            "queue_size": self.queue_size,
            "telemetry_period_s": self.telemetry_period_s,
            "bench_runs": self.bench_runs,
            "fetch_chunk_bytes": self.fetch_chunk_bytes,
            "fetch_window": self.fetch_window,
            "fetch_timeout_s": self.fetch_timeout_s,
            "dedup_entries": self.dedup_entries,
            "join_wait_ms": self.join_wait_ms,
            "join_max_bytes": self.join_max_bytes,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"agent setting {name} must be above 0, got {value}")
        if self.battery_pct is not None and not 0 <= self.battery_pct <= 100:
            raise ConfigError(f"battery_pct must be in [0, 100], got {self.battery_pct}")
        try:  # a config file or a caller may name it as text: "simulated"
            object.__setattr__(self, "battery", BatteryMode(self.battery))
        except ValueError:
            modes = ", ".join(mode.value for mode in BatteryMode)
            raise ConfigError(f"battery must be one of {modes}, got {self.battery!r}") from None
