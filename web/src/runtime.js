// LiteRT.js as the agent's runtime: load a shard from its bytes, run it, benchmark it,
// and calibrate the page's speed on the calibration net splitmq ships.
//
// LiteRT.js keys a model's tensors by signature names ("output_0"...), not by the
// graph's tensor names the wire carries, so shards are run positionally: the agent
// maps wire names to positions with the load command's boundary (agent.js, boundary).
// Every LiteRT.js tensor (inputs made here, outputs it returns) is freed with delete().

import { Tensor, loadAndCompile, loadLiteRt, supportsFeature } from '@litertjs/core';

// What LiteRT.js can hand across its boundary: anything else is refused at load.
import { SUPPORTED, TENSOR_DTYPES } from './dtypes.js';

export { TENSOR_DTYPES };

/** The FLOPs of splitmq/agent/calibration.tflite (splitmq.agent.runtime.CALIBRATION_FLOPS). */
export const CALIBRATION_FLOPS = 23_170_304;
const MIN_SAMPLE_MS = 20;
const WARM_UP_MS = 100;

export class ShardLoadError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ShardLoadError';
  }
}

class LoadedShard {
  constructor(model) {
    this.model = model;
    this.inputs = model.getInputDetails().map(spec);
    this.outputs = model.getOutputDetails().map(spec);
    for (const [side, specs] of [['input', this.inputs], ['output', this.outputs]]) {
      for (const s of specs) {
        if (!SUPPORTED.has(s.dtype)) {
          throw new ShardLoadError(`LiteRT.js cannot pass the ${s.dtype} ${side} ${s.name}: only ${TENSOR_DTYPES.join(', ')}`);
        }
      }
    }
  }

  /** Run once on tensors in input order; the outputs (copied out) and the invoke time. */
  async run(tensors) {
    const inputs = [];
    let outputs = [];
    try {
      tensors.forEach((tensor, i) => {
        const wanted = SUPPORTED.get(this.inputs[i].dtype);
        const data = tensor.data instanceof wanted ? tensor.data : new wanted(tensor.data);
        inputs.push(new Tensor(data, tensor.shape));
      });
      const start = performance.now();
      outputs = await this.model.run(inputs);
      const invokeMs = performance.now() - start;
      const copied = outputs.map((out, i) => ({
        dtype: this.outputs[i].dtype,
        shape: Array.from(out.type.layout.dimensions),
        data: out.toTypedArray(),
      }));
      return { outputs: copied, invokeMs };
    } finally {
      for (const tensor of inputs) tensor.delete();
      for (const tensor of outputs) tensor.delete();
    }
  }

  /**
   * Median invoke time in ms over ``runs`` samples on zeros, after a warm-up. A page's
   * clock is coarse (100 us in Chromium without cross-origin isolation), so each sample
   * times enough runs back to back to last at least MIN_SAMPLE_MS.
   */
  async benchmark(runs) {
    const zeros = this.inputs.map((s) => {
      const count = s.shape.reduce((a, b) => a * Math.max(b, 1), 1);
      return { shape: s.shape.map((d) => Math.max(d, 1)), data: new (SUPPORTED.get(s.dtype))(count) };
    });
    const once = async () => {
      const start = performance.now();
      await this.run(zeros);
      return performance.now() - start;
    };
    // Warm up: the browser compiles wasm in tiers, the first runs are the slow tier's.
    let last = await once();
    for (let spent = last, i = 0; spent < WARM_UP_MS && i < 200; i++) {
      last = await once();
      spent += last;
    }
    const batch = Math.min(1000, Math.max(1, Math.ceil(MIN_SAMPLE_MS / Math.max(last, 0.05))));
    const times = [];
    for (let i = 0; i < Math.max(1, runs); i++) {
      const start = performance.now();
      for (let j = 0; j < batch; j++) await this.run(zeros);
      times.push((performance.now() - start) / batch);
    }
    times.sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)];
  }

  delete() {
    if (!this.model.deleted) this.model.delete();
  }
}

function spec(details) {
  return { name: details.name, shape: Array.from(details.shape), dtype: details.dtype };
}

/**
 * Which LiteRT.js wasm build this browser runs: "threaded" in a cross-origin isolated
 * page (SharedArrayBuffer) on a device with several cores, else the default build, or
 * "compat" where the browser lacks relaxed SIMD. The build ships exactly these three.
 */
export async function chooseBuild(scope = globalThis) {
  const relaxedSimd = await supportsFeature('relaxedSimd');
  if (!relaxedSimd) return 'compat';
  const cores = scope.navigator?.hardwareConcurrency ?? 1;
  if (scope.crossOriginIsolated === true && cores > 1 && (await supportsFeature('threads'))) return 'threaded';
  return 'default';
}

/**
 * Load LiteRT.js's wasm from ``wasmUrl`` and return the runtime the agent uses.
 * ``wasmUrl`` is a directory (the build is chosen by :func:`chooseBuild`) or one
 * build's ``.js`` file (used as it is).
 */
export async function loadRuntime({ wasmUrl, calibrationUrl, version }) {
  let build = 'as given';
  if (!/\.js$/.test(new URL(wasmUrl, globalThis.location?.href).pathname)) {
    build = await chooseBuild();
    await loadLiteRt(wasmUrl, build === 'threaded' ? { threads: true } : {});
  } else {
    await loadLiteRt(wasmUrl);
  }
  return {
    kind: 'litert.js',
    version,
    build,
    async load(bytes) {
      let model;
      try {
        model = await loadAndCompile(bytes, { accelerator: 'wasm' });
      } catch (error) {
        throw new ShardLoadError(`litert.js cannot load the shard: ${error.message ?? error}`);
      }
      try {
        return new LoadedShard(model);
      } catch (error) {
        model.delete();
        throw error;
      }
    },
    async calibrate(runs = 5) {
      const response = await fetch(calibrationUrl);
      if (!response.ok) throw new Error(`calibration net: HTTP ${response.status}`);
      const shard = await this.load(new Uint8Array(await response.arrayBuffer()));
      try {
        const ms = await shard.benchmark(runs);
        return CALIBRATION_FLOPS / Math.max(ms / 1000, 1e-9) / 1e9;
      } finally {
        shard.delete();
      }
    },
  };
}
