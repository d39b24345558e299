"""Device profiles: what a device costs in energy, how fast it computes, how it is linked.

A profile is a small JSON (or TOML) file::

    {"name": "rpi4", "active_power_w": 6.4, "idle_power_w": 2.7,
     "radio_j_per_mb": 0.9, "battery_wh": 37.0, "initial_battery_pct": 100,
     "plugged": false, "compute_factor": 3.0,
     "link": {"bandwidth_mbps": 40.0, "latency_ms": 4.0}}

``rpi4``, ``phone``, ``laptop`` and ``host`` (this machine as it is) ship in
``splitmq/agent/profiles/``; ``load_profile`` takes one of those names or a path to a
file of your own. Unknown keys are refused, so a typo does not silently fall back to a
default.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from splitmq.errors import ConfigError
from splitmq.wire import Link

DEFAULT_PROFILE = "host"


@dataclass(frozen=True)
class DeviceProfile:
    """How a device behaves, for the energy model and the emulation (docs/agent.md).

    Attributes:
        name: the profile's name, reported in status and telemetry.
        active_power_w: power drawn while computing a shard.
        idle_power_w: power drawn all the time otherwise.
        radio_j_per_mb: energy per megabyte (10**6 bytes) sent or received.
        battery_wh: capacity of the (simulated) battery.
        initial_battery_pct: charge of the simulated battery when the agent starts.
        plugged: on mains power: the simulated battery does not drain.
        compute_factor: how much slower than this machine the device computes; after
            an invoke taking t the agent waits (factor - 1) * t. 1 emulates nothing.
        link: the device's network link, emulated on what the agent sends
            (latency + bytes * 8 / bandwidth before each publish); None emulates nothing.
        description: a line for people.
    """

    name: str
    active_power_w: float
    idle_power_w: float
    radio_j_per_mb: float
    battery_wh: float
    initial_battery_pct: float = 100.0
    plugged: bool = False
    compute_factor: float = 1.0
    link: Link | None = None
    description: str = ""

    def __post_init__(self) -> None:
        numbers = {
            "active_power_w": self.active_power_w,
            "idle_power_w": self.idle_power_w,
            "radio_j_per_mb": self.radio_j_per_mb,
            "battery_wh": self.battery_wh,
        }
        for key, value in numbers.items():
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"profile {self.name!r}: {key} must be >= 0, got {value}")
        if self.battery_wh == 0:
            raise ConfigError(f"profile {self.name!r}: battery_wh must be above 0")
        if not 0 <= self.initial_battery_pct <= 100:
            raise ConfigError(f"profile {self.name!r}: initial_battery_pct must be in [0, 100]")
        if not (math.isfinite(self.compute_factor) and self.compute_factor >= 1):
            raise ConfigError(
                f"profile {self.name!r}: compute_factor must be >= 1 (a device cannot be "
                f"emulated faster than the machine it runs on), got {self.compute_factor}"
            )
        if self.link is not None and (self.link.bandwidth_mbps <= 0 or self.link.latency_ms < 0):
            raise ConfigError(
                f"profile {self.name!r}: link needs bandwidth_mbps > 0 and latency_ms >= 0"
            )

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str) -> DeviceProfile:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"profile {source}: unknown keys {unknown}; known: {sorted(known)}")
        values = dict(data)
        link = values.get("link")
        if link is not None:
            if not isinstance(link, dict) or set(link) != {"bandwidth_mbps", "latency_ms"}:
                raise ConfigError(
                    f"profile {source}: link must be {{'bandwidth_mbps': ..., 'latency_ms': ...}}"
                )
            values["link"] = Link(float(link["bandwidth_mbps"]), float(link["latency_ms"]))
        try:
            return cls(**values)
        except TypeError as error:
            raise ConfigError(f"profile {source}: {error}") from None

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.link is not None:
            out["link"] = {
                "bandwidth_mbps": self.link.bandwidth_mbps,
                "latency_ms": self.link.latency_ms,
            }
        return out


def builtin_profiles() -> list[str]:
    """The names of the profiles shipped with splitmq."""
    folder = resources.files("splitmq.agent") / "profiles"
    return sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir() if p.name.endswith(".json"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A shipped profile by name (``rpi4``, ``phone``, ``laptop``, ``host``) or a file."""
    text = str(name_or_path)
    if text in builtin_profiles():
        resource = resources.files("splitmq.agent") / "profiles" / f"{text}.json"
        return DeviceProfile.from_mapping(json.loads(resource.read_text()), text)
    path = Path(text)
    if not path.is_file():
        raise ConfigError(
            f"no device profile {text!r}: give one of {builtin_profiles()} or a .json/.toml file"
        )
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text())
        else:
            data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read profile {path}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"profile {path} must hold a table/object")
    data.setdefault("name", path.stem)
    return DeviceProfile.from_mapping(data, str(path))
