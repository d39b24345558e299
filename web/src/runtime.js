// LiteRT.js as the agent's runtime: load a shard from its bytes, run it, benchmark it,
// and calibrate the page's speed on the calibration net splitmq ships.
//
// LiteRT.js keys a model's tensors by signature names ("output_0"...), not by the
// graph's tensor names the wire carries, so shards are run positionally: the agent
// maps wire names to positions with the load command's boundary (agent.js, boundary).
// Every LiteRT.js tensor (inputs made here, outputs it returns) is freed with delete().

import { Tensor, loadAndCompile, loadLiteRt } from '@litertjs/core';

// What LiteRT.js can hand across its boundary (its DType): anything else is refused at load.
const SUPPORTED = new Map([['float32', Float32Array], ['int32', Int32Array], ['uint8', Uint8Array]]);

/** The FLOPs of splitmq/agent/calibration.tflite (splitmq.agent.runtime.CALIBRATION_FLOPS). */
export const CALIBRATION_FLOPS = 23_170_304;

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
          throw new ShardLoadError(`LiteRT.js cannot pass the ${s.dtype} ${side} ${s.name}: only float32, int32 and uint8`);
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

  /** Median invoke time in ms over ``runs`` runs on zeros, after one warm-up. */
  async benchmark(runs) {
    const zeros = this.inputs.map((s) => {
      const count = s.shape.reduce((a, b) => a * Math.max(b, 1), 1);
      return { shape: s.shape.map((d) => Math.max(d, 1)), data: new (SUPPORTED.get(s.dtype))(count) };
    });
    await this.run(zeros);
    const times = [];
    for (let i = 0; i < Math.max(1, runs); i++) times.push((await this.run(zeros)).invokeMs);
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
 * Load LiteRT.js's wasm from ``wasmUrl`` (a directory: LiteRT.js picks the build the
 * browser can run) and return the runtime the agent uses.
 */
export async function loadRuntime({ wasmUrl, calibrationUrl, version }) {
  await loadLiteRt(wasmUrl);
  return {
    kind: 'litert.js',
    version,
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
