// The time a request holds a stage, as telemetry reports it (compute_ms): the median of
// the last WINDOW requests' times, as the Python agent reports it (splitmq/agent/held.py).
// The planner adds it per stage and multiplies it by the queue depth, so it must be the
// stage's typical time: a smoothed mean that followed the last five requests put a plan
// 15-20% above the requests' median after a few slow ones.

export const WINDOW = 15;

export class HeldTime {
  #samples = [];

  add(ms) {
    this.#samples.push(ms);
    if (this.#samples.length > WINDOW) this.#samples.shift();
  }

  // Start over from one figure (the shard's benchmark when it is loaded).
  reset(ms) {
    this.#samples = [ms];
  }

  // The median of the samples kept, null before the first.
  get ms() {
    const ordered = [...this.#samples].sort((a, b) => a - b);
    const count = ordered.length;
    if (count === 0) return null;
    const middle = count >> 1;
    return count % 2 ? ordered[middle] : (ordered[middle - 1] + ordered[middle]) / 2;
  }
}
