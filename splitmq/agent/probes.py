"""What the agent reads of its device: CPU load, memory, temperature (via psutil)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil


def cpu_pct() -> float:
    """System-wide CPU load since the previous call, in percent."""
    return float(psutil.cpu_percent(interval=None))


def mem_free_bytes() -> int:
    return int(psutil.virtual_memory().available)


def mem_total_bytes() -> int:
    return int(psutil.virtual_memory().total)


def cores() -> int:
    return os.cpu_count() or 1


def temperature_c() -> float | None:
    """The hottest sensor psutil can read, else the first thermal zone, else None."""
    sensors = getattr(psutil, "sensors_temperatures", None)
    if sensors is not None:
        with contextlib.suppress(OSError, RuntimeError):
            readings = [t.current for group in sensors().values() for t in group if t.current]
            if readings:
                return float(max(readings))
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*/temp")):
        with contextlib.suppress(OSError, ValueError):
            return int(zone.read_text().strip()) / 1000.0
    return None


def resident_bytes() -> int:
    """This process's resident memory."""
    return int(psutil.Process().memory_info().rss)
