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


def speed_gflops(size: int = 192, rounds: int = 5) -> float:
    """A calibrated compute speed: the best of a few float32 matrix products, in GFLOP/s.

    Only a prior: the coordinator prefers the measured time of each shard once an agent
    has run it. Takes a few milliseconds.
    """
    import time

    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        np.dot(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / max(best, 1e-9) / 1e9
