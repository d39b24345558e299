// Fakes for the agent's seams: an in-memory transport that records what is published,
// and a runtime whose shards add one to every value (or wait, or fail, on demand).
import { decode, encode } from '../src/messages.js';

export class FakeTransport {
  constructor() {
    this.published = [];
    this.subscriptions = new Set();
    this.fail = null; // a topic prefix whose publications fail
  }

  async publish(topic, payload, options) {
    if (this.fail && topic.startsWith(this.fail)) throw new Error('link down');
    this.published.push({ topic, payload, ...options });
  }

  async subscribe(filter) {
    this.subscriptions.add(filter);
  }

  async unsubscribe(filter) {
    this.subscriptions.delete(filter);
  }

  /** Decoded messages published on ``topic``. */
  on(topic) {
    return this.published.filter((p) => p.topic === topic).map((p) => decode(p.payload));
  }

  clear() {
    this.published.length = 0;
  }
}

export class FakeShard {
  constructor(specs, runtime) {
    this.inputs = specs.inputs;
    this.outputs = specs.outputs;
    this.runtime = runtime;
    this.deleted = false;
    this.runs = 0;
  }

  async run(tensors) {
    if (this.deleted) throw new Error('run on a deleted shard');
    this.runs += 1;
    if (this.runtime.gate) await this.runtime.gate;
    if (this.runtime.failRun) throw new Error('wasm trap');
    const outputs = this.outputs.map((spec) => {
      const data = new Float32Array(spec.shape.reduce((a, b) => a * b, 1));
      const source = tensors[0].data;
      for (let i = 0; i < data.length; i++) data[i] = (source[i % source.length] ?? 0) + 1;
      return { dtype: spec.dtype, shape: [...spec.shape], data };
    });
    return { outputs, invokeMs: 2 };
  }

  async benchmark() {
    return 2.5;
  }

  delete() {
    this.deleted = true;
  }
}

export class FakeRuntime {
  constructor(specs = SPECS) {
    this.kind = 'litert.js';
    this.version = 'test';
    this.specs = specs;
    this.shards = [];
    this.gate = null;
    this.failRun = false;
  }

  async load(bytes) {
    if (bytes[0] === 0xff) throw new Error('not a TFLite model');
    const shard = new FakeShard(this.specs, this);
    this.shards.push(shard);
    return shard;
  }

  async calibrate() {
    return 1.25;
  }
}

export const SPECS = {
  inputs: [{ name: 'x', shape: [1, 2], dtype: 'float32' }],
  outputs: [{ name: 'y', shape: [1, 2], dtype: 'float32' }],
};

export function activation({ stage = 0, attempt = 0, id = 1, route = [['web'], ['py']], deadline = 0, tensors, callback = 'splitmq/v1/clients/alice/result', deployment = 'd1' } = {}) {
  return encode({
    kind: 'activation', request_id: new Uint8Array(16).fill(id), attempt, deployment, stage,
    route, callback, deadline_ms: deadline,
    tensors: tensors ?? [{ name: stage === 0 ? 'x' : 'y', dtype: 'float32', shape: [1, 2], data: new Float32Array([1, 2]), scale: null, zero_point: null }],
    trace: [], client_id: 'alice',
  });
}
