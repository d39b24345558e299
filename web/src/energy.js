// The energy model (design.md) and the battery, as splitmq/agent/energy.py has them:
// a stage costs active power x compute time + radio J/MB x bytes; the device draws its
// idle power the rest of the time. The battery is the real one where the browser's
// Battery Status API gives a reading; where it does not ("no battery reading") the
// agent reports a simulated one that drains by the model, flagged ``simulated``.

/** A phone's figures (splitmq/agent/profiles/phone.json): the default for a page. */
export const PHONE_FIGURES = Object.freeze({
  active_power_w: 3.5,
  idle_power_w: 0.6,
  radio_j_per_mb: 1.5,
  battery_wh: 17.0,
  initial_battery_pct: 80.0,
  plugged: false,
});

const JOULES_PER_WH = 3600;
const BYTES_PER_MB = 1_000_000;

export class EnergyMeter {
  /**
   * @param figures the profile's energy figures (PHONE_FIGURES when null).
   * @param battery a reader: ``read()`` -> {pct, plugged} or null (no reading).
   * @param monotonic milliseconds, for the idle draw.
   */
  constructor(figures, battery, monotonic) {
    this.figures = { ...PHONE_FIGURES, ...(figures ?? {}) };
    this.reader = battery;
    this.monotonic = monotonic;
    this.spentJ = 0;
    this.lastMs = monotonic();
    this.capacityJ = this.figures.battery_wh * JOULES_PER_WH;
    this.remainingJ = (this.capacityJ * this.figures.initial_battery_pct) / 100;
  }

  /** Energy spent since start (idle, compute and radio), in joules. */
  energyJ() {
    this.accrueIdle();
    return this.spentJ;
  }

  stageEnergyJ(computeS, bytesMoved) {
    return this.figures.active_power_w * computeS + (this.figures.radio_j_per_mb * bytesMoved) / BYTES_PER_MB;
  }

  spendCompute(computeS) {
    this.spend(Math.max(0, this.figures.active_power_w - this.figures.idle_power_w) * computeS);
  }

  spendRadio(bytes) {
    this.spend((this.figures.radio_j_per_mb * bytes) / BYTES_PER_MB);
  }

  /** The battery now: the browser's reading, or the simulated one. */
  battery() {
    const real = this.reader?.read() ?? null;
    if (real) return { pct: real.pct, plugged: real.plugged, simulated: false };
    this.accrueIdle();
    const pct = Math.max(0, (100 * this.remainingJ) / this.capacityJ);
    return { pct, plugged: this.figures.plugged, simulated: true };
  }

  spend(joules) {
    this.accrueIdle();
    this.spentJ += joules;
    if (!this.figures.plugged) this.remainingJ = Math.max(0, this.remainingJ - joules);
  }

  accrueIdle() {
    const now = this.monotonic();
    const idle = (this.figures.idle_power_w * Math.max(0, now - this.lastMs)) / 1000;
    this.lastMs = now;
    this.spentJ += idle;
    if (!this.figures.plugged) this.remainingJ = Math.max(0, this.remainingJ - idle);
  }
}

/**
 * The Battery Status API as a reader (``navigator.getBattery``, Chromium-based browsers):
 * resolves to a reader whose ``read()`` gives {pct, plugged}, or null where the browser
 * offers no battery reading.
 */
export async function browserBattery(navigatorObject = globalThis.navigator) {
  if (!navigatorObject || typeof navigatorObject.getBattery !== 'function') return null;
  let manager;
  try {
    manager = await navigatorObject.getBattery();
  } catch {
    return null;
  }
  return {
    manager,
    read() {
      if (typeof manager.level !== 'number' || Number.isNaN(manager.level)) return null;
      return { pct: manager.level * 100, plugged: Boolean(manager.charging) };
    },
  };
}
