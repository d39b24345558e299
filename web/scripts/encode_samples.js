// Write messages encoded by the JavaScript codec into a directory, for Python's tests
// (tests/web/test_js_codec.py) to decode: every message kind and every tensor dtype,
// built here from scratch. Each is NAME.cbor; manifest.json gives each as plain JSON
// (test/plain.js, the same form as tests/web/golden.py's ``plain``).
//
//   node web/scripts/encode_samples.js OUT_DIR
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { decode, encode } from '../src/messages.js';
import { plain } from '../test/plain.js';

const id = new Uint8Array(16).map((_, i) => 200 + i);
const tensor = (name, dtype, shape, data, scale = null, zero_point = null) => ({ name, dtype, shape, data, scale, zero_point });
const trace = [{ stage: 0, agent_id: 'web-1', received_ms: 1_700_000_000_000.5, started_ms: 1_700_000_000_001, finished_ms: 1_700_000_000_002.25, bytes_in: 300, attempt: 1, bytes_out: 40, energy_j: 0.5 }];
const spec = { name: 'serving_default_digit:0', shape: [1, 8, 8, 1], dtype: 'float32', scale: null, zero_point: null };
const qspec = { name: 'q', shape: [1, 4], dtype: 'int8', scale: 0.5, zero_point: -3 };

const samples = {
  status: { kind: 'status', agent_id: 'web-1', state: 'online', ts_ms: 1_700_000_000_000, version: '0.1.0', runtime: 'litert.js', runtime_version: '2.5.3', cores: 8, memory_bytes: 8 * 2 ** 30, profile: 'browser', cached_shards: ['ab'.repeat(32)], speed_gflops: 12, active_power_w: 3.5, idle_power_w: 0.6, radio_j_per_mb: 1.5, compute_factor: 1, link: null, site: 'home' },
  status_offline: { kind: 'status', agent_id: 'web-1', state: 'offline' },
  telemetry: { kind: 'telemetry', agent_id: 'web-1', ts_ms: 1_700_000_000_000, period_s: 1, cpu_pct: 0, mem_free_bytes: 2 ** 31, battery: { pct: 57, plugged: false, simulated: false }, profile: 'browser', temperature_c: null, queue_depth: { 'd1/0': 0 }, compute_ms: { 'd1/0': 0.25 }, msgs_in: 5, msgs_out: 6, bytes_in: 2 ** 33, bytes_out: 7, broker_rtt_ms: 0.75, energy_j: 3, link: { bandwidth_mbps: 25, latency_ms: 12 }, duplicates: 1, unroutable: 0 },
  cmd_load: { kind: 'cmd.load', command_id: 'c1', issuer: 'coordinator', deployment: 'd1', stage: 0, digest: 'ab'.repeat(32), size_bytes: 12128, inputs: [spec], outputs: [qspec], threads: 2, shared: true },
  cmd_unload: { kind: 'cmd.unload', command_id: 'c2', issuer: 'coordinator', deployment: 'd1', stage: 1 },
  cmd_ping: { kind: 'cmd.ping', command_id: 'rtt-1', issuer: 'web-1', sent_ms: 5 },
  event_reply: { kind: 'event.reply', command_id: 'c1', agent_id: 'web-1', ok: false, message: 'litert.js cannot load the shard' },
  event_shard_ready: { kind: 'event.shard_ready', command_id: 'c1', agent_id: 'web-1', deployment: 'd1', stage: 0, digest: 'ab'.repeat(32), runtime: 'litert.js', bench_ms: 0.125 },
  event_pong: { kind: 'event.pong', command_id: 'p1', agent_id: 'web-1', sent_ms: 12.5, ts_ms: 1_700_000_000_000 },
  pool_fetch: { kind: 'pool.fetch', agent_id: 'web-1', digest: 'cd'.repeat(32), offset: 0, length: 262144 },
  pool_chunk: { kind: 'pool.chunk', digest: 'cd'.repeat(32), offset: 65536, total_bytes: 70000, data: new Uint8Array(300).map((_, i) => i % 251) },
  pool_error: { kind: 'pool.error', digest: 'cd'.repeat(32), message: 'no such shard' },
  activation: { kind: 'activation', request_id: id, attempt: 1, deployment: 'd1', stage: 1, route: [['py-1'], ['web-1', 'py-2']], callback: 'splitmq/v1/clients/alice/result', deadline_ms: 1_765_000_000_123, tensors: [tensor('digits_cnn_1/pool_1/MaxPool2d', 'float32', [1, 2, 2, 1], new Float32Array([0.5, -1.25, 3e-39, 1e30]))], trace, client_id: 'alice' },
  result: { kind: 'result', request_id: id, attempt: 0, deployment: 'd1', tensors: [tensor('StatefulPartitionedCall_1:0', 'float32', [1, 3], new Float32Array([0.1, 0.2, 0.7]))], trace, agent_id: 'web-1' },
  error: { kind: 'error', request_id: id, attempt: 2, stage: 1, agent_id: 'web-1', code: 'overloaded', message: 'stage d1/1 on web-1 has 16 requests waiting', deployment: 'd1' },
  plan_request: { kind: 'plan.request', request_id: 'p1', client_id: 'alice', model: 'digits', version: null, max_latency_ms: 50, min_fidelity: null, energy_j: 1.5, energy_level: 'saver', client_battery: { pct: 20, plugged: false, simulated: true } },
  plan: { kind: 'plan', request_id: 'p1', deployment: 'd1', epoch: 4, model: 'digits', version: 'v1', variant: 'float32', route: [['web-1'], ['py-1']], predicted_latency_ms: 3, predicted_energy_j: 0.25 },
  plan_refused: { kind: 'plan.refused', request_id: 'p2', model: 'digits', constraint: 'unavailable', message: 'no replica online' },
  deployment: { kind: 'deployment', deployment: 'd1', model: 'digits', version: 'v1', variant: 'float32', epoch: 4, stages: [{ stage: 0, start_op: 0, end_op: 3, digest: 'ab'.repeat(32), size_bytes: 12128, inputs: [spec], outputs: [qspec], replicas: ['web-1', 'py-1'] }], state: 'retired', created_ms: 1_700_000_000_000, objective: 'latency', target_replicas: 2, sites: { 'py-1': 'kitchen' } },
  deploy_request: { kind: 'deploy.request', request_id: 'r1', client_id: 'ops', model: 'digits', version: null, variant: 'float32', stages: 2, replicas: 1, objective: 'throughput', pin_first: null, pin_last: 'web-1', max_latency_ms: null, max_shard_bytes: 100000, ready_timeout_s: 30, retire: false },
  deploy_reply: { kind: 'deploy.reply', request_id: 'r1', ok: true, message: 'deployed', deployment: 'd1', epoch: 4, failed_agents: [], predicted_latency_ms: null },
  lease: { kind: 'coordinator.lease', holder: 'splitmq-coordinator-a1b2c3', term: 3, period_s: 1.5, expiry_s: 4.5, released: true, telemetry_period_s: 0 },
};

const dtypes = {
  uint8: new Uint8Array([0, 255, 7, 8, 9, 10]),
  uint16: new Uint16Array([0, 65535, 7, 8, 9, 10]),
  uint32: new Uint32Array([0, 4294967295, 7, 8, 9, 10]),
  uint64: new BigUint64Array([0n, 18446744073709551615n, 7n, 8n, 9n, 10n]),
  int8: new Int8Array([-128, 127, -1, 0, 1, 2]),
  int16: new Int16Array([-32768, 32767, -1, 0, 1, 2]),
  int32: new Int32Array([-2147483648, 2147483647, -1, 0, 1, 2]),
  int64: new BigInt64Array([-9223372036854775808n, 9223372036854775807n, -1n, 0n, 1n, 2n]),
  float16: new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0x7e00]),
  float32: new Float32Array([1, -2.5, 3.4e38, 1e-45, -0, 0.1]),
  float64: new Float64Array([1, -2.5, 1.7e308, 5e-324, -0, 0.1]),
  bool: new Uint8Array([1, 0, 0, 1, 1, 0]),
};
for (const [dtype, data] of Object.entries(dtypes)) {
  const quantized = dtype === 'int8' || dtype === 'uint8';
  samples[`tensor_${dtype}`] = { kind: 'result', request_id: id, attempt: 0, deployment: 'd1', tensors: [tensor(`t_${dtype}`, dtype, [2, 3], data, quantized ? 0.25 : null, quantized ? 3 : null)], trace: [], agent_id: 'web-1' };
}

const out = process.argv[2];
if (!out) {
  console.error('usage: node encode_samples.js OUT_DIR');
  process.exit(2);
}
mkdirSync(out, { recursive: true });
const manifest = {};
for (const [name, message] of Object.entries(samples)) {
  writeFileSync(path.join(out, `${name}.cbor`), encode(message));
  manifest[name] = plain(decode(encode(message))); // every field, defaults filled in
}
writeFileSync(path.join(out, 'manifest.json'), `${JSON.stringify(manifest, (_, v) => (typeof v === 'bigint' ? v.toString() : v), 1)}\n`);
console.log(`wrote ${Object.keys(samples).length} messages to ${out}`);
