"""The energy model and the battery, real (psutil) or simulated from the device profile.

Energy of a stage (docs/architecture.md, "Energy model") = active power x compute time
+ radio J/MB x bytes. The
device draws its idle power the rest of the time. A simulated battery starts at the
profile's charge and drains by exactly that, so a fleet on one machine behaves like
real devices; on a device with a battery psutil can read, the real one is reported.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum

from splitmq.agent.profiles import DeviceProfile
from splitmq.wire import Battery

JOULES_PER_WH = 3600.0
BYTES_PER_MB = 1_000_000


class BatteryMode(StrEnum):
    """Which battery an agent reports."""

    AUTO = "auto"
    """The real one when psutil finds one, else a simulated one."""
    REAL = "real"
    SIMULATED = "simulated"


def read_real_battery() -> Battery | None:
    """The device's battery through psutil, or None when it has none (or psutil cannot tell)."""
    try:
        import psutil
    except ImportError:
        return None
    sensors = getattr(psutil, "sensors_battery", None)
    if sensors is None:
        return None
    try:
        state = sensors()
    except (OSError, RuntimeError):
        return None
    if state is None:
        return None
    return Battery(pct=float(state.percent), plugged=bool(state.power_plugged), simulated=False)


class EnergyMeter:
    """Counts the energy an agent spends and runs its simulated battery.

    Thread-safe: stage workers add compute and radio energy, the telemetry loop reads.
    ``clock`` (monotonic seconds) is injectable for tests.
    """

    def __init__(
        self,
        profile: DeviceProfile,
        mode: BatteryMode = BatteryMode.AUTO,
        *,
        initial_pct: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.profile = profile
        self._now = clock
        self._lock = threading.Lock()
        self._energy_j = 0.0
        self._last_s = self._now()
        real = read_real_battery() if mode is not BatteryMode.SIMULATED else None
        if mode is BatteryMode.REAL and real is None:
            from splitmq.errors import ConfigError

            raise ConfigError("battery=real but psutil finds no battery on this device")
        self._battery_real = real is not None
        start = profile.initial_battery_pct if initial_pct is None else initial_pct
        self._capacity_j = profile.battery_wh * JOULES_PER_WH
        self._remaining_j = self._capacity_j * start / 100.0

    @property
    def simulated(self) -> bool:
        return not self._battery_real

    @property
    def energy_j(self) -> float:
        """Energy spent since start (idle, compute and radio), in joules."""
        with self._lock:
            self._accrue_idle()
            return self._energy_j

    def stage_energy_j(self, compute_s: float, bytes_moved: int) -> float:
        """The energy model (docs/architecture.md) for one stage run, without spending it."""
        return (
            self.profile.active_power_w * compute_s
            + self.profile.radio_j_per_mb * bytes_moved / BYTES_PER_MB
        )

    def spend_compute(self, compute_s: float) -> None:
        """Computing for ``compute_s`` draws active power (idle is already counted)."""
        extra = max(0.0, self.profile.active_power_w - self.profile.idle_power_w) * compute_s
        self._spend(extra)

    def spend_radio(self, nbytes: int) -> None:
        self._spend(self.profile.radio_j_per_mb * nbytes / BYTES_PER_MB)

    def battery(self) -> Battery:
        """The battery now: read with psutil, or the simulated one after what was spent."""
        if self._battery_real:
            real = read_real_battery()
            if real is not None:
                return real
        with self._lock:
            self._accrue_idle()
            pct = max(0.0, 100.0 * self._remaining_j / self._capacity_j)
        return Battery(pct=pct, plugged=self.profile.plugged, simulated=True)

    def _spend(self, joules: float) -> None:
        with self._lock:
            self._accrue_idle()
            self._energy_j += joules
            if not self.profile.plugged:
                self._remaining_j = max(0.0, self._remaining_j - joules)

    def _accrue_idle(self) -> None:
        now = self._now()
        idle = self.profile.idle_power_w * max(0.0, now - self._last_s)
        self._last_s = now
        self._energy_j += idle
        if not self.profile.plugged:
            self._remaining_j = max(0.0, self._remaining_j - idle)
