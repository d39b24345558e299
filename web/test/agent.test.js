// The browser agent's logic over a fake transport and a fake runtime: presence,
// commands, forwarding, every error code, de-duplication, deadlines, overload.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { BrowserAgent, MAX_HOP_MBPS, PROBE_BYTES, THROUGHPUT_WINDOW, agentConfig } from '../src/agent.js';
import { Writer } from '../src/cbor.js';
import { decode, encode } from '../src/messages.js';
import { FakeRuntime, FakeTransport, activation } from './fakes.js';

const NS = 'splitmq/v1';
const RESULT = `${NS}/clients/alice/result`;
const QUIET = { info() {}, warn() {}, error() {}, debug() {} };

async function started({ queueSize = 4, battery = null, runtime = new FakeRuntime(), now = () => 1_000_000, site } = {}) {
  const transport = new FakeTransport();
  const shards = { ['ab'.repeat(32)]: new Uint8Array([1, 2, 3]), ['ff'.repeat(32)]: new Uint8Array([0xff]) };
  const progress = [];
  const agent = new BrowserAgent(agentConfig({ agentId: 'web', queueSize, telemetryPeriodS: 3600, site }), {
    transport, runtime, battery, clock: now, monotonic: () => 0, log: QUIET,
    fetchShard: async (digest, size, onProgress) => {
      if (!shards[digest]) throw new Error(`cannot fetch shard ${digest.slice(0, 12)}: HTTP 404`);
      onProgress(size, size);
      progress.push(digest);
      return shards[digest];
    },
  });
  await agent.start();
  clearTimeout(agent.timer);
  agent.timer = null;
  return { agent, transport, runtime, progress };
}

function command(agent, message) {
  return agent.onMessage(`${NS}/agents/web/cmd`, encode({ issuer: 'coordinator', ...message }));
}

async function load(agent, { stage = 0, deployment = 'd1', shared = false, digest = 'ab'.repeat(32), commandId = 'c1' } = {}) {
  await command(agent, {
    kind: 'cmd.load', command_id: commandId, deployment, stage, digest, size_bytes: 3, shared,
    inputs: [{ name: stage === 0 ? 'x' : 'y', shape: [1, 2], dtype: 'float32' }],
    outputs: [{ name: stage === 0 ? 'y' : 'z', shape: [1, 2], dtype: 'float32' }],
  });
}

function send(agent, stage, payload, agentId = 'web', deployment = 'd1') {
  return agent.onMessage(`${NS}/stage/${deployment}/${stage}/${agentId}`, payload);
}

test('birth: a retained online status with runtime litert.js and the calibrated speed', async () => {
  const { transport } = await started();
  const birth = transport.published.find((p) => p.topic === `${NS}/agents/web/status`);
  assert.equal(birth.retain, true);
  assert.equal(birth.qos, 1);
  const [status] = transport.on(`${NS}/agents/web/status`);
  assert.equal(status.state, 'online');
  assert.equal(status.runtime, 'litert.js');
  assert.equal(status.speed_gflops, 1.25);
  // What LiteRT.js can pass at a shard's boundary: the coordinator places stages by it.
  assert.deepEqual(status.tensor_dtypes, ['float32', 'int32', 'uint8']);
  assert.ok(transport.subscriptions.has(`${NS}/agents/web/cmd`));
  assert.ok(transport.subscriptions.has(`${NS}/stage/+/+/web`));
});

test('load fetches, announces the cached shard, then reports it ready; unload frees it', async () => {
  const { agent, transport, runtime } = await started();
  await load(agent);
  const [ready] = transport.on(`${NS}/agents/web/events`);
  assert.equal(ready.kind, 'event.shard_ready');
  assert.equal(ready.runtime, 'litert.js');
  assert.equal(ready.bench_ms, 2.5);
  const statuses = transport.on(`${NS}/agents/web/status`);
  assert.deepEqual(statuses.at(-1).cached_shards, ['ab'.repeat(32)]);
  assert.deepEqual(agent.snapshot().hosted, ['d1/0']);
  transport.clear();
  await command(agent, { kind: 'cmd.unload', command_id: 'c2', deployment: 'd1', stage: 0 });
  const [reply] = transport.on(`${NS}/agents/web/events`);
  assert.deepEqual([reply.kind, reply.ok], ['event.reply', true]);
  assert.equal(runtime.shards[0].deleted, true);
  assert.deepEqual(agent.snapshot().hosted, []);
});

test('a load that fails (fetch, or a shard the runtime refuses) is answered not ok', async () => {
  const { agent, transport } = await started();
  await load(agent, { digest: 'cd'.repeat(32) });
  await load(agent, { digest: 'ff'.repeat(32), commandId: 'c9' });
  const replies = transport.on(`${NS}/agents/web/events`);
  assert.deepEqual(replies.map((r) => [r.kind, r.ok]), [['event.reply', false], ['event.reply', false]]);
  assert.match(replies[0].message, /HTTP 404/);
  assert.match(replies[1].message, /not a TFLite model/);
  assert.deepEqual(agent.snapshot().hosted, []);
});

test('a load whose shard does not match the announced boundary is refused', async () => {
  const { agent, transport } = await started();
  await command(agent, {
    kind: 'cmd.load', command_id: 'c1', deployment: 'd1', stage: 0, digest: 'ab'.repeat(32), size_bytes: 3,
    inputs: [{ name: 'x', shape: [1, 3], dtype: 'float32' }], outputs: [],
  });
  const [reply] = transport.on(`${NS}/agents/web/events`);
  assert.equal(reply.ok, false);
  assert.match(reply.message, /not the .* the load command announced/);
});

test('ping is answered with a pong; a command from anyone but the coordinator is refused', async () => {
  const { agent, transport } = await started();
  await command(agent, { kind: 'cmd.ping', command_id: 'p1', sent_ms: 12.5 });
  await agent.onMessage(`${NS}/agents/web/cmd`, encode({ kind: 'cmd.unload', command_id: 'x', issuer: 'mallory', deployment: 'd1', stage: 0 }));
  const [pong, refusal] = transport.on(`${NS}/agents/web/events`);
  assert.deepEqual([pong.kind, pong.command_id, pong.sent_ms], ['event.pong', 'p1', 12.5]);
  assert.deepEqual([refusal.kind, refusal.ok], ['event.reply', false]);
  assert.match(refusal.message, /mallory/);
});

test('the first stage forwards to the next stage\'s agent with its trace', async () => {
  const { agent, transport } = await started();
  await load(agent);
  await send(agent, 0, activation());
  const [forward] = transport.on(`${NS}/stage/d1/1/py`);
  assert.equal(forward.stage, 1);
  assert.deepEqual([...forward.tensors[0].data], [2, 3]);
  assert.equal(forward.tensors[0].name, 'y'); // the announced name, not the runtime's
  assert.equal(forward.trace[0].agent_id, 'web');
  assert.equal(agent.snapshot().served, 1); // run and forwarded: served, like an answer
});

for (const qos of [0, 1]) {
  test(`a request that came at QoS ${qos} is forwarded and answered at QoS ${qos}; an error at 1`, async () => {
    const { agent, transport } = await started({ now: () => 1_000 });
    await load(agent, { stage: 0 });
    await load(agent, { stage: 1, commandId: 'c2' });
    const stage = (n, agentId = 'web') => `${NS}/stage/d1/${n}/${agentId}`;
    await agent.onMessage(stage(0), activation(), qos); // stage 1 on another agent
    await agent.onMessage(stage(1), activation({ stage: 1, route: [['py'], ['web']] }), qos);
    await agent.onMessage(stage(0), activation({ id: 2, deadline: 500 }), qos); // past it: an error
    const sent = (topic) => transport.published.filter((p) => p.topic === topic);
    assert.deepEqual(sent(stage(1, 'py')).map((p) => p.qos), [qos]);
    const answers = sent(RESULT).map((p) => [decode(p.payload).kind, p.qos]);
    assert.deepEqual(answers, [['result', qos], ['error', 1]]);
  });
}

function deployment(sites) {
  return encode({ kind: 'deployment', deployment: 'd1', model: 'm', version: 'v', variant: 'float32', epoch: 1, stages: [], sites });
}

// Site brokers (broker-config/bridge.conf): the same rule as splitmq.wire.topics.hop_topic.
test('hops follow the deployment\'s sites: within a site, to another site, to the central broker', async () => {
  const { agent, transport } = await started({ site: 'kitchen' });
  assert.ok(transport.subscriptions.has(`${NS}/deployments/+`));
  assert.equal(transport.on(`${NS}/agents/web/status`)[0].site, 'kitchen');
  await load(agent);
  const cases = [
    [{ web: 'kitchen', py: 'kitchen' }, `${NS}/stage/d1/1/py`], // stays on the site broker
    [{ web: 'kitchen', py: 'garage' }, `${NS}/sites/garage/stage/d1/1/py`],
    [{ web: 'kitchen' }, `${NS}/central/stage/d1/1/py`], // py is on the central broker
  ];
  for (const [index, [sites, topic]] of cases.entries()) {
    await agent.onMessage(`${NS}/deployments/d1`, deployment(sites));
    transport.clear();
    await send(agent, 0, activation({ id: index + 1 }));
    assert.equal(transport.on(topic).length, 1, JSON.stringify(sites));
  }
  // A bad or cleared deployment changes nothing.
  await agent.onMessage(`${NS}/deployments/d1`, new Uint8Array([0xff]));
  await agent.onMessage(`${NS}/deployments/d2`, new Uint8Array());
  assert.deepEqual(agent.sites, { web: 'kitchen' });
});

test('a page without a site sends to a site\'s agent through the bridge', async () => {
  const { agent, transport } = await started();
  assert.equal(transport.on(`${NS}/agents/web/status`)[0].site, null);
  await load(agent);
  await agent.onMessage(`${NS}/deployments/d1`, deployment({ py: 'garage' }));
  await send(agent, 0, activation());
  assert.equal(transport.on(`${NS}/sites/garage/stage/d1/1/py`).length, 1);
});

test('telemetry follows the leading coordinator\'s advice when it is longer than the page\'s own', async () => {
  const { agent, transport } = await started();
  assert.ok(transport.subscriptions.has(`${NS}/coordinators/lease`));
  const lease = (period, released = false) => encode({
    kind: 'coordinator.lease', holder: 'c1', term: 1, period_s: 1, expiry_s: 3, released, telemetry_period_s: period,
  });
  await agent.onMessage(`${NS}/coordinators/lease`, lease(7200));
  assert.equal(agent.telemetryPeriodS, 7200);
  assert.equal(agent.telemetry().period_s, 7200); // the coordinator counts silence by it
  await agent.onMessage(`${NS}/coordinators/lease`, lease(60)); // shorter than ours: ours
  assert.equal(agent.telemetryPeriodS, 3600);
  await agent.onMessage(`${NS}/coordinators/lease`, lease(7200, true)); // a release advises nothing
  assert.equal(agent.telemetryPeriodS, 3600);
  await agent.onMessage(`${NS}/coordinators/lease`, new Uint8Array([0x01]));
  assert.equal(agent.telemetryPeriodS, 3600);
});

test('a site that cannot be a topic level is refused', () => {
  assert.throws(() => agentConfig({ agentId: 'web', site: 'a/b' }), /site "a\/b" cannot be a topic level/);
});

test('the last stage answers on the callback topic; two local stages run without a broker hop', async () => {
  const { agent, transport } = await started();
  await load(agent, { stage: 0 });
  await load(agent, { stage: 1, commandId: 'c2' });
  await send(agent, 0, activation({ route: [['web'], ['web']] }));
  assert.equal(transport.on(`${NS}/stage/d1/1/web`).length, 0);
  const [result] = transport.on(RESULT);
  assert.equal(result.kind, 'result');
  assert.deepEqual([...result.tensors[0].data], [3, 4]);
  assert.deepEqual(result.trace.map((t) => t.stage), [0, 1]);
  assert.equal(agent.snapshot().served, 1);
});

test('a duplicate (request, stage, attempt) is computed once; a new attempt is computed again', async () => {
  const { agent, transport, runtime } = await started();
  await load(agent, { stage: 1 });
  await send(agent, 1, activation({ stage: 1 , route: [['py'], ['web']] }));
  await send(agent, 1, activation({ stage: 1 , route: [['py'], ['web']] }));
  await send(agent, 1, activation({ stage: 1, attempt: 1, route: [['py'], ['web']] }));
  assert.equal(runtime.shards[0].runs, 2);
  assert.equal(transport.on(RESULT).length, 2);
  assert.equal(agent.snapshot().duplicates, 1);
});

test('deadline_exceeded: a request past its deadline is not computed', async () => {
  const { agent, transport, runtime } = await started({ now: () => 2_000_000_000_000 });
  await load(agent);
  await send(agent, 0, activation({ deadline: 2_000_000_000_000 - 50 }));
  const [error] = transport.on(RESULT);
  assert.deepEqual([error.kind, error.code, error.stage, error.agent_id], ['error', 'deadline_exceeded', 0, 'web']);
  assert.equal(runtime.shards[0].runs, 0);
});

test('overloaded: a request past the bounded queue is refused at once', async () => {
  const runtime = new FakeRuntime();
  const { agent, transport } = await started({ queueSize: 2, runtime });
  await load(agent);
  let open;
  runtime.gate = new Promise((resolve) => { open = resolve; });
  const first = send(agent, 0, activation({ id: 1 })); // running
  send(agent, 0, activation({ id: 2 })); // waiting
  send(agent, 0, activation({ id: 3 })); // waiting
  await send(agent, 0, activation({ id: 4 })); // refused
  const errors = transport.on(RESULT);
  assert.deepEqual(errors.map((e) => [e.code, e.request_id[0]]), [['overloaded', 4]]);
  open();
  await first;
  assert.equal(transport.on(`${NS}/stage/d1/1/py`).length, 3);
});

test('unknown_deployment and shard_not_loaded for stages this agent does not serve', async () => {
  const { agent, transport } = await started();
  await send(agent, 0, activation({ deployment: 'd9' }), 'web', 'd9');
  await load(agent, { stage: 0 });
  await send(agent, 1, activation({ stage: 1 }));
  const [unknown, notLoaded] = transport.on(RESULT);
  assert.equal(unknown.code, 'unknown_deployment');
  assert.equal(notLoaded.code, 'shard_not_loaded');
  assert.match(notLoaded.message, /is not loaded/);
});

test('shape_mismatch: wrong name, shape or dtype', async () => {
  const { agent, transport } = await started();
  await load(agent);
  const tensor = (over) => ({ name: 'x', dtype: 'float32', shape: [1, 2], data: new Float32Array(2), scale: null, zero_point: null, ...over });
  await send(agent, 0, activation({ id: 1, tensors: [tensor({ name: 'q' })] }));
  await send(agent, 0, activation({ id: 2, tensors: [tensor({ shape: [2, 1] })] }));
  await send(agent, 0, activation({ id: 3, tensors: [tensor({ dtype: 'int32', data: new Int32Array(2) })] }));
  const errors = transport.on(RESULT);
  assert.deepEqual(errors.map((e) => e.code), ['shape_mismatch', 'shape_mismatch', 'shape_mismatch']);
  assert.match(errors[1].message, /shape \[2, 1\], the shard needs \[1, 2\]/);
});

test('bad_message: a broken activation is answered from what can be salvaged', async () => {
  const { agent, transport } = await started();
  await load(agent);
  const writer = new Writer();
  writer.mapHead(6);
  for (const [key, write] of [['kind', () => writer.text('activation')], ['v', () => writer.integer(1)],
    ['request_id', () => writer.byteString(new Uint8Array(16).fill(7))], ['attempt', () => writer.integer(2)],
    ['callback', () => writer.text(RESULT)], ['tensors', () => writer.text('not an array')]]) {
    writer.text(key);
    write();
  }
  await send(agent, 0, writer.result());
  await send(agent, 0, new Uint8Array([0xff, 0x00]));
  const [error] = transport.on(RESULT);
  assert.equal(error.code, 'bad_message');
  assert.equal(error.request_id[0], 7);
  assert.equal(error.attempt, 2);
  assert.match(error.message, /missing required field|expected/);
  assert.equal(agent.snapshot().unroutable, 1); // the second had nothing to answer to
});

test('bad_message: a callback that is not a result topic is never published to', async () => {
  const { agent, transport } = await started();
  await load(agent);
  await send(agent, 0, activation({ callback: `${NS}/agents/web/cmd` }));
  assert.equal(transport.published.filter((p) => p.topic === `${NS}/agents/web/cmd`).length, 0);
  assert.equal(agent.snapshot().unroutable, 1);
});

test('internal: a runtime failure is reported and the stage keeps serving', async () => {
  const runtime = new FakeRuntime();
  const { agent, transport } = await started({ runtime });
  await load(agent, { stage: 1 });
  runtime.failRun = true;
  await send(agent, 1, activation({ stage: 1, id: 1, route: [['py'], ['web']] }));
  runtime.failRun = false;
  await send(agent, 1, activation({ stage: 1, id: 2, route: [['py'], ['web']] }));
  const [failure, result] = transport.on(RESULT);
  assert.deepEqual([failure.code, result.kind], ['internal', 'result']);
  assert.match(agent.snapshot().lastError, /wasm trap/);
});

test('internal: a next hop that cannot be published to becomes an error on the callback', async () => {
  const { agent, transport } = await started();
  await load(agent);
  transport.fail = `${NS}/stage/`;
  await send(agent, 0, activation());
  const [error] = transport.on(RESULT);
  assert.equal(error.code, 'internal');
  assert.match(error.message, /cannot send to/);
});

test('telemetry: the real battery where the browser reads one, else a simulated one', async () => {
  const real = await started({ battery: { read: () => ({ pct: 42, plugged: true }) } });
  assert.deepEqual(real.agent.telemetry().battery, { pct: 42, plugged: true, simulated: false });
  const none = await started({ battery: null });
  const battery = none.agent.telemetry().battery;
  assert.equal(battery.simulated, true);
  assert.equal(none.agent.snapshot().battery.reading, false);
  await none.agent.telemetryTick();
  const [telemetry] = none.transport.on(`${NS}/agents/web/telemetry`);
  assert.equal(telemetry.agent_id, 'web');
  const probe = none.transport.on(`${NS}/agents/web/cmd`);
  assert.equal(probe[0].kind, 'cmd.ping'); // the broker round-trip probe
});

test('stop publishes a retained offline status', async () => {
  const { agent, transport } = await started();
  await agent.stop();
  const statuses = transport.on(`${NS}/agents/web/status`);
  assert.equal(statuses.at(-1).state, 'offline');
});

test('one probe in a few carries 64 KiB: its extra round trip gives hop_mbps', async () => {
  let now = 0;
  const transport = new FakeTransport();
  const agent = new BrowserAgent(agentConfig({ agentId: 'web', telemetryPeriodS: 3600 }), {
    transport, runtime: new FakeRuntime(), monotonic: () => now, log: QUIET, fetchShard: async () => new Uint8Array(),
  });
  const sizes = [];
  for (let i = 0; i < 10; i += 1) {
    await agent.probeBroker();
    const probe = transport.published.at(-1);
    const ping = decode(probe.payload);
    sizes.push(ping.padding ? ping.padding.length : 0);
    now += ping.padding ? 2.3 : 0.3; // 64 KiB take 2 ms more than a small probe
    await agent.onMessage(probe.topic, probe.payload);
  }
  // every other one until THROUGHPUT_WINDOW were large, then one in five
  assert.deepEqual(sizes, [0, PROBE_BYTES, 0, PROBE_BYTES, 0, PROBE_BYTES, 0, PROBE_BYTES, 0, PROBE_BYTES]);
  assert.equal(THROUGHPUT_WINDOW, 4);
  const mbps = agent.telemetry().hop_mbps;
  assert.ok(Math.abs(mbps - (PROBE_BYTES * 8) / 2e3) < 1, `${mbps}`);
  agent.largeRtts = [0.2]; // no slower than a small probe: more than any link
  assert.equal(agent.telemetry().hop_mbps, MAX_HOP_MBPS);
});
