// The browser agent: presence, telemetry, shards, stage workers, forwarding — the
// same contract as splitmq/agent/agent.py, in a page.
//
// It talks to three seams, so node's tests drive it with fakes:
//   transport: publish(topic, bytes, {qos, retain}) -> Promise, subscribe(filter, qos),
//              unsubscribe(filter); it calls agent.onMessage(topic, bytes) and
//              agent.onConnection(up).
//   runtime:   {kind, version, load(bytes) -> Promise<shard>, calibrate() -> Promise<GFLOP/s>};
//              shard: {inputs, outputs (specs by position), run(tensors) -> Promise<{outputs,
//              invokeMs}>, benchmark(runs) -> Promise<ms>, delete()}.
//   fetchShard(digest, sizeBytes, onProgress) -> Promise<Uint8Array>, digest verified.
//
// Every failure a request meets becomes an error message on its callback topic; when
// even that is unknown it is counted (telemetry ``unroutable``).

import { EnergyMeter } from './energy.js';
import {
  ErrorCode,
  REQUEST_ID_BYTES,
  WireDecodeError,
  decode,
  decodeRaw,
  encode,
} from './messages.js';
import {
  ANY_AGENT,
  COMMANDS,
  DEPLOYMENTS,
  EVENTS,
  LEASE,
  RESULTS,
  STAGE,
  STATUS,
  TELEMETRY,
  checkSegment,
  hopTopic,
  isCallback,
  parseTopic,
  sharedFilter,
  topicFilter,
  topicName,
} from './topics.js';
import { TENSOR_DTYPES } from './dtypes.js';
import { HeldTime } from './held.js';

export const RUNTIME_KIND = 'litert.js';
const RTT_WINDOW = 10;
const RTT_MIN_PROBES = 3;
// What a hop carries per second, as the Python agent measures it (splitmq/agent/presence.py):
// one probe in THROUGHPUT_EVERY (every other one until THROUGHPUT_WINDOW were) carries
// PROBE_BYTES of padding; its round trip beyond a small probe's gives hop_mbps.
export const PROBE_BYTES = 64 * 1024;
export const THROUGHPUT_EVERY = 5;
export const THROUGHPUT_WINDOW = 4;
export const MAX_HOP_MBPS = 100_000;

/** The agent's settings (what config.json and the page's query give). */
export function agentConfig(options) {
  const config = {
    agentId: options.agentId,
    namespace: options.namespace ?? 'splitmq/v1',
    coordinatorId: options.coordinatorId ?? 'coordinator',
    telemetryPeriodS: options.telemetryPeriodS ?? 1.0,
    profile: options.profile ?? 'browser',
    version: options.version ?? '',
    queueSize: options.queueSize ?? 16,
    dedupEntries: options.dedupEntries ?? 4096,
    benchRuns: options.benchRuns ?? 5,
    figures: options.figures ?? null,
    site: options.site ?? '',
  };
  checkSegment('agent id', config.agentId);
  if (config.site) checkSegment('site', config.site);
  if (config.agentId === ANY_AGENT) throw new Error("agent id 'any' is reserved for shared stage topics");
  for (const name of ['telemetryPeriodS', 'queueSize', 'dedupEntries', 'benchRuns']) {
    if (!(config[name] > 0)) throw new Error(`agent setting ${name} must be above 0, got ${config[name]}`);
  }
  return Object.freeze(config);
}

export function stageKey(deployment, stage) {
  return `${deployment}/${stage}`;
}

/** A request cannot go on at this stage: becomes an error message on its callback. */
export class RequestFailed extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** A bounded memory of (request id, stage, attempt): QoS 1 may deliver twice. */
export class SeenRequests {
  constructor(size) {
    this.size = size;
    this.seen = new Set();
  }

  firstTime(requestId, stage, attempt) {
    const key = `${hex(requestId)}/${stage}/${attempt}`;
    if (this.seen.has(key)) return false;
    this.seen.add(key);
    if (this.seen.size > this.size) this.seen.delete(this.seen.values().next().value);
    return true;
  }
}

export class BrowserAgent {
  constructor(config, { transport, runtime, fetchShard, battery = null, clock = Date.now, monotonic = () => performance.now(), log = console }) {
    this.config = config;
    this.transport = transport;
    this.runtime = runtime;
    this.fetchShard = fetchShard;
    this.clock = clock;
    this.monotonic = monotonic;
    this.log = log;
    this.energy = new EnergyMeter(config.figures, battery, monotonic);
    this.ns = config.namespace;
    this.stages = new Map(); // "deployment/stage" -> hosted stage
    this.loading = new Set();
    this.cache = new Map(); // digest -> shard bytes (the page's session cache)
    this.seen = new SeenRequests(config.dedupEntries);
    this.commands = Promise.resolve();
    this.counters = { served: 0, errors: 0, duplicates: 0, unroutable: 0, msgsIn: 0, msgsOut: 0, bytesIn: 0, bytesOut: 0 };
    this.lastError = null;
    this.connected = false;
    this.speedGflops = 0;
    this.rtts = [];
    this.largeRtts = []; // round trips of the probes that carried PROBE_BYTES
    this.rttMs = null;
    this.rttSequence = 0;
    this.busyMs = 0;
    this.busySince = monotonic();
    this.cpuPct = 0;
    this.listeners = new Set();
    this.timer = null;
    this.fetchProgress = null; // {digest, received, total} while a shard downloads
    this.sitesByDeployment = new Map(); // deployment -> {agent id: site}, from the retained deployments
    this.sites = {}; // every deployment's sites merged: where each agent is
    this.advisedPeriodS = 0; // the leading coordinator's advice on the telemetry period (0: none)
  }

  /** The telemetry period: ours, or longer when the leading coordinator advises it (a
   * large fleet: the broker's telemetry load stays bounded). */
  get telemetryPeriodS() {
    return Math.max(this.config.telemetryPeriodS, this.advisedPeriodS);
  }

  get agentId() {
    return this.config.agentId;
  }

  /** Calibrate, subscribe, announce, and start telemetry. */
  async start() {
    try {
      this.speedGflops = await this.runtime.calibrate();
    } catch (error) {
      this.log.warn(`could not calibrate the runtime's speed: ${error.message}`);
      this.speedGflops = 0;
    }
    await this.subscribeAll();
    this.connected = true;
    await this.announce();
    this.scheduleTelemetry(0);
    this.changed();
  }

  /** Say offline, stop telemetry, free every shard. */
  async stop() {
    clearTimeout(this.timer);
    this.timer = null;
    for (const hosted of this.stages.values()) this.retire(hosted);
    this.stages.clear();
    const offline = { kind: 'status', agent_id: this.agentId, state: 'offline', ts_ms: Math.floor(this.clock()) };
    try {
      await this.publish(topicName(STATUS, this.ns, { agent: this.agentId }), encode(offline), STATUS);
    } catch (error) {
      this.log.warn(`could not publish the offline status: ${error.message}`);
    }
    this.changed();
  }

  /** The transport's link went down or came back (it has subscribed again). */
  async onConnection(up) {
    this.connected = up;
    this.changed();
    if (up) {
      try {
        await this.subscribeAll();
        await this.announce();
      } catch (error) {
        this.log.warn(`could not announce: ${error.message}`);
      }
    }
  }

  async subscribeAll() {
    const me = this.agentId;
    await this.transport.subscribe(topicName(COMMANDS, this.ns, { agent: me }), COMMANDS.qos);
    await this.transport.subscribe(topicFilter(STAGE, this.ns, { agent: me }), STAGE.qos);
    await this.transport.subscribe(topicFilter(DEPLOYMENTS, this.ns, {}), DEPLOYMENTS.qos);
    await this.transport.subscribe(topicName(LEASE, this.ns, {}), LEASE.qos);
    for (const hosted of this.stages.values()) {
      if (hosted.sharedFilter) await this.transport.subscribe(hosted.sharedFilter, STAGE.qos);
    }
  }

  /** Called whenever what the status panel shows changes. */
  onChange(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  changed() {
    for (const listener of this.listeners) {
      try {
        listener(this);
      } catch (error) {
        this.log.warn(`a status listener failed: ${error.message}`);
      }
    }
  }

  hosted() {
    return [...this.stages.keys()].sort();
  }

  // -- presence and telemetry ------------------------------------------------------------

  status() {
    const figures = this.energy.figures;
    return {
      kind: 'status',
      agent_id: this.agentId,
      state: 'online',
      ts_ms: Math.floor(this.clock()),
      version: this.config.version,
      runtime: RUNTIME_KIND,
      runtime_version: this.runtime.version,
      cores: globalThis.navigator?.hardwareConcurrency ?? 0,
      memory_bytes: Math.floor((globalThis.navigator?.deviceMemory ?? 0) * 2 ** 30),
      profile: this.config.profile,
      cached_shards: [...this.cache.keys()],
      speed_gflops: this.speedGflops,
      active_power_w: figures.active_power_w,
      idle_power_w: figures.idle_power_w,
      radio_j_per_mb: figures.radio_j_per_mb,
      compute_factor: 1.0,
      link: null,
      tensor_dtypes: [...TENSOR_DTYPES],
      site: this.config.site || null,
      // a page knows its instruction set (wasm) and runtime, not the CPU under them
      machine: 'wasm32',
      kernels: 'wasm',
    };
  }

  telemetry() {
    const queueDepth = {};
    const computeMs = {};
    for (const hosted of this.stages.values()) {
      queueDepth[hosted.key] = hosted.queue.length; // waiting, as the Python agent counts
      const held = hosted.held.ms;
      if (held !== null) computeMs[hosted.key] = held;
    }
    const c = this.counters;
    return {
      kind: 'telemetry',
      agent_id: this.agentId,
      ts_ms: Math.floor(this.clock()),
      period_s: this.telemetryPeriodS,
      cpu_pct: this.sampleCpuPct(),
      mem_free_bytes: memFreeBytes(),
      battery: this.energy.battery(),
      profile: this.config.profile,
      temperature_c: null,
      queue_depth: queueDepth,
      compute_ms: computeMs,
      msgs_in: c.msgsIn,
      msgs_out: c.msgsOut,
      bytes_in: c.bytesIn,
      bytes_out: c.bytesOut,
      broker_rtt_ms: this.rttMs,
      energy_j: this.energy.energyJ(),
      link: null,
      duplicates: c.duplicates,
      unroutable: c.unroutable,
      hop_mbps: this.hopMbps(),
    };
  }

  /** What a hop through the broker carries per second (Mbit/s): a large probe's padding
   * over its round trip beyond a small probe's, the fastest of each; null until both. */
  hopMbps() {
    if (this.rttMs === null || this.largeRtts.length === 0) return null;
    const extraMs = Math.min(...this.largeRtts) - this.rttMs;
    return extraMs > 0 ? Math.min(MAX_HOP_MBPS, (PROBE_BYTES * 8) / (extraMs * 1e3)) : MAX_HOP_MBPS;
  }

  /** The share of the last period the page spent computing shards (a page has no CPU meter). */
  sampleCpuPct() {
    const now = this.monotonic();
    const span = Math.max(1, now - this.busySince);
    this.cpuPct = Math.min(100, (100 * this.busyMs) / span);
    this.busyMs = 0;
    this.busySince = now;
    return this.cpuPct;
  }

  announce() {
    return this.publish(topicName(STATUS, this.ns, { agent: this.agentId }), encode(this.status()), STATUS);
  }

  scheduleTelemetry(delayMs) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.telemetryTick(), delayMs);
  }

  async telemetryTick() {
    try {
      if (this.connected) {
        await this.probeBroker();
        await this.publish(topicName(TELEMETRY, this.ns, { agent: this.agentId }), encode(this.telemetry()), TELEMETRY);
      }
    } catch (error) {
      this.log.debug?.(`telemetry not sent: ${error.message}`);
    }
    this.changed();
    if (this.timer !== null) this.scheduleTelemetry(this.telemetryPeriodS * 1000);
  }

  /** A ping to ourselves through the broker; its return gives the round trip. */
  probeBroker() {
    this.rttSequence += 1;
    const early = this.rttSequence <= 2 * THROUGHPUT_WINDOW;
    const large = this.rttSequence % (early ? 2 : THROUGHPUT_EVERY) === 0;
    const probe = { kind: 'cmd.ping', command_id: `rtt-${this.rttSequence}`, issuer: this.agentId, sent_ms: this.monotonic() };
    if (large) probe.padding = new Uint8Array(PROBE_BYTES);
    return this.publish(topicName(COMMANDS, this.ns, { agent: this.agentId }), encode(probe), COMMANDS);
  }

  // -- inbound -----------------------------------------------------------------------------

  /** Every message the transport delivers, with the QoS it came at (a request's hops
   * keep the QoS its client chose: its next hop and its result go at the same). */
  onMessage(topic, payload, qos = STAGE.qos) {
    this.counters.msgsIn += 1;
    this.counters.bytesIn += payload.length;
    if (parseTopic(COMMANDS, this.ns, topic)) return this.onCommand(topic, payload);
    if (parseTopic(STAGE, this.ns, topic)) return this.onStage(topic, payload, qos);
    if (parseTopic(DEPLOYMENTS, this.ns, topic)) return this.onDeployment(payload);
    if (parseTopic(LEASE, this.ns, topic)) return this.onLease(payload);
    this.log.warn(`ignored a message on ${topic}: no handler`);
    return undefined;
  }

  onCommand(topic, payload) {
    let command;
    try {
      command = decode(payload, { expect: ['cmd.load', 'cmd.unload', 'cmd.ping'] });
    } catch (error) {
      this.log.warn(`ignored a bad command on ${topic}: ${error.message}`);
      return undefined;
    }
    if (command.kind === 'cmd.ping' && command.issuer === this.agentId) {
      const rtt = this.monotonic() - command.sent_ms;
      const [window, size] = command.padding ? [this.largeRtts, THROUGHPUT_WINDOW] : [this.rtts, RTT_WINDOW];
      window.push(rtt);
      if (window.length > size) window.shift();
      if (this.rtts.length >= RTT_MIN_PROBES) this.rttMs = Math.min(...this.rtts);
      return undefined;
    }
    if (command.issuer !== this.config.coordinatorId) {
      this.log.warn(`refused ${command.kind} from ${command.issuer}: not the coordinator`);
      return this.reply(command.command_id, false,
        `'${command.issuer}' may not command this agent: only '${this.config.coordinatorId}' may`);
    }
    if (command.kind === 'cmd.ping') {
      const pong = { kind: 'event.pong', command_id: command.command_id, agent_id: this.agentId, sent_ms: command.sent_ms, ts_ms: this.clock() };
      return this.publishEvent(pong);
    }
    if (command.kind === 'cmd.load') this.loading.add(stageKey(command.deployment, command.stage));
    // Commands run one after another, as on the Python agent's command thread.
    this.commands = this.commands.then(() => this.runCommand(command));
    return this.commands;
  }

  async runCommand(command) {
    try {
      if (command.kind === 'cmd.load') await this.load(command);
      else await this.unload(command);
    } catch (error) {
      this.log.error(`command ${command.command_id} failed: ${error.stack ?? error}`);
      this.noteError(`command ${command.command_id}: ${error.message}`);
      await this.reply(command.command_id, false, `internal error: ${error.message}`).catch(() => {});
    }
    this.changed();
  }

  reply(commandId, ok, message = '') {
    return this.publishEvent({ kind: 'event.reply', command_id: commandId, agent_id: this.agentId, ok, message });
  }

  publishEvent(message) {
    return this.publish(topicName(EVENTS, this.ns, { agent: this.agentId }), encode(message), EVENTS);
  }

  // -- shards ------------------------------------------------------------------------------

  async load(command) {
    const key = stageKey(command.deployment, command.stage);
    let hosted;
    try {
      hosted = await this.install(command);
    } catch (error) {
      this.loading.delete(key);
      this.fetchProgress = null;
      this.log.warn(`load of ${key} failed: ${error.message}`);
      this.noteError(`load of ${key}: ${error.message}`);
      await this.reply(command.command_id, false, error.message);
      return;
    }
    const benchMs = await hosted.shard.benchmark(this.config.benchRuns);
    hosted.held.reset(benchMs);
    if (command.shared) {
      hosted.sharedFilter = sharedFilter(STAGE, `splitmq-${command.deployment}-${command.stage}`, this.ns, {
        deployment: command.deployment, stage: command.stage, agent: ANY_AGENT,
      });
      await this.transport.subscribe(hosted.sharedFilter, STAGE.qos);
    }
    const previous = this.stages.get(key);
    this.stages.set(key, hosted);
    this.loading.delete(key);
    if (previous) this.retire(previous);
    this.log.info(`serving ${key}: shard ${command.digest.slice(0, 12)}, ${benchMs.toFixed(2)} ms per run`);
    await this.announce(); // the cached shards changed: say so before the shard is ready
    await this.publishEvent({
      kind: 'event.shard_ready', command_id: command.command_id, agent_id: this.agentId,
      deployment: command.deployment, stage: command.stage, digest: command.digest,
      runtime: RUNTIME_KIND, bench_ms: benchMs,
    });
  }

  async install(command) {
    let data = this.cache.get(command.digest);
    if (!data) {
      this.fetchProgress = { digest: command.digest, received: 0, total: command.size_bytes };
      this.changed();
      data = await this.fetchShard(command.digest, command.size_bytes, (received, total) => {
        this.fetchProgress = { digest: command.digest, received, total };
        this.changed();
      });
      this.fetchProgress = null;
      this.cache.set(command.digest, data);
    }
    const shard = await this.runtime.load(data);
    try {
      return {
        key: stageKey(command.deployment, command.stage),
        deployment: command.deployment,
        stage: command.stage,
        digest: command.digest,
        shard,
        inputs: boundary('inputs', command.inputs, shard.inputs),
        outputs: boundary('outputs', command.outputs, shard.outputs),
        queue: [],
        busy: false,
        retired: false,
        sharedFilter: null,
        held: new HeldTime(),
      };
    } catch (error) {
      shard.delete();
      throw error;
    }
  }

  async unload(command) {
    const key = stageKey(command.deployment, command.stage);
    const hosted = this.stages.get(key);
    if (!hosted) {
      await this.reply(command.command_id, false, `this agent does not host ${key}`);
      return;
    }
    this.stages.delete(key);
    this.retire(hosted);
    this.log.info(`unloaded ${key}`);
    await this.reply(command.command_id, true);
  }

  /** Stop taking requests for ``hosted``; its shard is freed once its queue is done. */
  retire(hosted) {
    hosted.retired = true;
    if (hosted.sharedFilter) {
      Promise.resolve(this.transport.unsubscribe(hosted.sharedFilter)).catch((error) =>
        this.log.warn(`could not unsubscribe ${hosted.sharedFilter}: ${error.message}`));
    }
    if (!hosted.busy && hosted.queue.length === 0) hosted.shard.delete();
  }

  // -- requests ----------------------------------------------------------------------------

  onStage(topic, payload, qos) {
    const receivedMs = this.clock();
    const params = parseTopic(STAGE, this.ns, topic);
    const hosted = /^\d+$/.test(params.stage) ? this.stages.get(stageKey(params.deployment, Number(params.stage))) : undefined;
    if (hosted) {
      if (hosted.queue.length >= this.config.queueSize) {
        return this.refuse(payload, ErrorCode.OVERLOADED,
          `stage ${hosted.key} on ${this.agentId} has ${this.config.queueSize} requests waiting: try a fallback replica`);
      }
      hosted.queue.push({ topic, payload, receivedMs, qos });
      this.changed();
      if (!hosted.busy) return this.drain(hosted);
      return undefined;
    }
    let activation;
    try {
      activation = decode(payload, { expect: ['activation'] });
    } catch (error) {
      return this.refuse(payload, ErrorCode.BAD_MESSAGE, error.message);
    }
    const [code, reason] = this.whyNotServed(activation.deployment, activation.stage);
    return this.sendError(activation, code, reason);
  }

  whyNotServed(deployment, stage) {
    const known = new Set([...this.stages.values()].map((s) => s.deployment));
    for (const key of this.loading) known.add(key.slice(0, key.lastIndexOf('/')));
    if (!known.has(deployment)) {
      return [ErrorCode.UNKNOWN_DEPLOYMENT,
        `agent ${this.agentId} hosts nothing of deployment '${deployment}': the plan is stale; ask the coordinator for a new one`];
    }
    const state = this.loading.has(stageKey(deployment, stage)) ? 'is still loading' : 'is not loaded';
    return [ErrorCode.SHARD_NOT_LOADED, `stage ${stage} of '${deployment}' ${state} on agent ${this.agentId}`];
  }

  /** The stage's worker: one request at a time, in arrival order. */
  async drain(hosted) {
    hosted.busy = true;
    try {
      while (hosted.queue.length) {
        const job = hosted.queue.shift();
        try {
          await this.process(hosted, job);
        } catch (error) { // a bug must not kill the stage: tell the requester
          this.log.error(`stage ${hosted.key} failed on a request: ${error.stack ?? error}`);
          await this.refuse(job.payload, ErrorCode.INTERNAL, `internal error: ${error.message}`);
        }
        this.changed();
      }
    } finally {
      hosted.busy = false;
      if (hosted.retired) hosted.shard.delete();
    }
  }

  async process(hosted, job) {
    let activation;
    try {
      activation = decode(job.payload, { expect: ['activation'] });
    } catch (error) {
      return this.refuse(job.payload, ErrorCode.BAD_MESSAGE, error.message);
    }
    if (activation.deployment !== hosted.deployment || activation.stage !== hosted.stage) {
      return this.sendError(activation, ErrorCode.BAD_MESSAGE,
        `sent to stage ${hosted.key} but addressed to ${stageKey(activation.deployment, activation.stage)}`);
    }
    let current = activation;
    let stage = hosted;
    let receivedMs = job.receivedMs;
    let bytesIn = job.payload.length;
    const { qos } = job;
    this.energy.spendRadio(bytesIn);
    for (;;) {
      if (!this.seen.firstTime(current.request_id, current.stage, current.attempt)) {
        this.counters.duplicates += 1;
        return undefined;
      }
      let following;
      try {
        following = await this.compute(stage, current, receivedMs, bytesIn, qos);
      } catch (error) {
        if (error instanceof RequestFailed) return this.sendError(current, error.code, error.message);
        throw error;
      }
      if (!following) return undefined;
      [current, stage] = following;
      receivedMs = this.clock();
      bytesIn = 0;
    }
  }

  /** Run one stage; forward, answer, or hand back the next stage hosted here; what it
   * sends goes at ``qos``, the QoS the request came at. */
  async compute(hosted, activation, receivedMs, bytesIn, qos) {
    const deadline = Number(activation.deadline_ms);
    if (deadline && this.clock() > deadline) {
      const late = this.clock() - deadline;
      throw new RequestFailed(ErrorCode.DEADLINE_EXCEEDED,
        `arrived at stage ${activation.stage} on ${this.agentId} ${late.toFixed(0)} ms after its deadline`);
    }
    const nextTopic = this.nextHop(activation); // nothing is computed for nowhere
    const inputs = checkedInputs(hosted.inputs, activation.tensors);
    const started = this.clock();
    const busyFrom = this.monotonic();
    let run;
    try {
      run = await hosted.shard.run(inputs);
    } catch (error) {
      throw new RequestFailed(ErrorCode.INTERNAL, `the runtime failed on stage ${hosted.key}: ${error.message}`);
    } finally {
      this.busyMs += this.monotonic() - busyFrom;
    }
    const finished = this.clock();
    const computeS = run.invokeMs / 1000;
    this.energy.spendCompute(computeS);
    hosted.held.add(run.invokeMs);
    const outputs = run.outputs.map((tensor, i) => ({
      name: hosted.outputs[i].name,
      dtype: tensor.dtype,
      shape: tensor.shape,
      data: tensor.data,
      scale: hosted.outputs[i].scale ?? null,
      zero_point: hosted.outputs[i].zero_point ?? null,
    }));
    const bytesOut = outputs.reduce((sum, t) => sum + t.data.byteLength, 0);
    const trace = [...activation.trace, {
      stage: activation.stage, agent_id: this.agentId, received_ms: receivedMs,
      started_ms: started, finished_ms: finished, bytes_in: bytesIn, attempt: activation.attempt,
      bytes_out: bytesOut, energy_j: this.energy.stageEnergyJ(computeS, bytesIn + bytesOut),
    }];
    if (nextTopic === null) { // the last stage
      const result = { kind: 'result', request_id: activation.request_id, attempt: activation.attempt,
        deployment: activation.deployment, tensors: outputs, trace, agent_id: this.agentId };
      await this.sendToCallback(activation, result, qos);
      return null;
    }
    const nextStage = activation.stage + 1;
    const forward = { ...activation, stage: nextStage, tensors: outputs, trace };
    if (activation.route[nextStage][0] === this.agentId) {
      const local = this.stages.get(stageKey(activation.deployment, nextStage));
      if (local) return [forward, local]; // in the page: no broker hop
    }
    await this.send(nextTopic, encode(forward), qos);
    this.counters.served += 1; // a stage run and handed on counts as served, as an answer does
    return null;
  }

  /** A retained deployment: where its agents are (its ``sites``), for routing hops. */
  onDeployment(payload) {
    if (!payload.length) return; // a retired deployment's retained message cleared
    let deployment;
    try {
      deployment = decode(payload, { expect: ['deployment'] });
    } catch (error) {
      this.log.debug?.(`ignored a bad deployment: ${error.message}`);
      return;
    }
    this.sitesByDeployment.set(deployment.deployment, { ...deployment.sites });
    const merged = {};
    for (const sites of this.sitesByDeployment.values()) Object.assign(merged, sites);
    this.sites = merged;
  }

  /** The coordinators' lease: its holder's advice on the telemetry period. */
  onLease(payload) {
    if (!payload.length) return;
    let lease;
    try {
      lease = decode(payload, { expect: ['coordinator.lease'] });
    } catch (error) {
      this.log.warn(`ignored a bad lease: ${error.message}`);
      return;
    }
    if (lease.released || lease.telemetry_period_s === this.advisedPeriodS) return;
    const before = this.telemetryPeriodS;
    this.advisedPeriodS = Math.max(0, lease.telemetry_period_s);
    if (this.telemetryPeriodS !== before) {
      this.log.info?.(`telemetry every ${this.telemetryPeriodS.toFixed(1)} s (the coordinator's advice)`);
      // say the new period at once: the coordinator counts silence by it
      if (this.timer !== null) this.scheduleTelemetry(0);
    }
  }

  /** The next stage's topic (null after the last stage), checked before computing. */
  nextHop(activation) {
    if (!isCallback(activation.callback, this.ns)) {
      throw new RequestFailed(ErrorCode.BAD_MESSAGE, `the callback '${activation.callback}' is not a result topic`);
    }
    const nextStage = activation.stage + 1;
    if (nextStage >= activation.route.length) return null;
    const candidates = activation.route[nextStage];
    if (!candidates.length) throw new RequestFailed(ErrorCode.BAD_MESSAGE, `the route names no agent for stage ${nextStage}`);
    try {
      return hopTopic(this.ns, {
        deployment: activation.deployment, stage: nextStage, agent: candidates[0], sites: this.sites, here: this.config.site,
      });
    } catch (error) {
      throw new RequestFailed(ErrorCode.BAD_MESSAGE, `bad route: ${error.message}`);
    }
  }

  // -- sending -----------------------------------------------------------------------------

  async send(topic, payload, qos) {
    try {
      await this.publish(topic, payload, { ...STAGE, qos });
    } catch (error) {
      throw new RequestFailed(ErrorCode.INTERNAL, `cannot send to ${topic}: ${error.message}`);
    }
    this.energy.spendRadio(payload.length);
  }

  /** A result at ``qos`` (the QoS its hops came at); an error, sent without one, at its topic's own. */
  async sendToCallback(activation, message, qos = RESULTS.qos) {
    if (!isCallback(activation.callback, this.ns)) {
      this.counters.unroutable += 1;
      this.log.warn(`request ${hex(activation.request_id)}: callback '${activation.callback}' is not a result topic; dropped its ${message.kind}`);
      return;
    }
    try {
      await this.send(activation.callback, encode(message), qos);
    } catch (error) {
      if (message.kind === 'error') {
        this.counters.unroutable += 1;
        this.log.error(`could not report an error on ${activation.callback}: ${error.message}`);
        return;
      }
      await this.sendToCallback(activation, errorFor(activation, this.agentId, error.code ?? ErrorCode.INTERNAL, error.message));
      return;
    }
    if (message.kind === 'error') this.counters.errors += 1;
    else this.counters.served += 1;
  }

  sendError(activation, code, reason) {
    this.log.info(`request ${hex(activation.request_id)} stage ${activation.stage}: ${code}: ${reason}`);
    this.noteError(`${code}: ${reason}`);
    return this.sendToCallback(activation, errorFor(activation, this.agentId, code, reason));
  }

  /** Answer a message we cannot (fully) decode, from whatever of it can be read. */
  refuse(payload, code, reason) {
    const salvaged = salvage(payload);
    if (!salvaged) {
      this.counters.unroutable += 1;
      this.noteError(`${code}: ${reason} (no callback to tell)`);
      this.log.warn(`dropped a message (${code}: ${reason}): no callback`);
      return undefined;
    }
    return this.sendError(salvaged, code, reason);
  }

  noteError(text) {
    this.lastError = text;
    this.changed();
  }

  async publish(topic, payload, row) {
    await this.transport.publish(topic, payload, { qos: row.qos, retain: row.retain });
    this.counters.msgsOut += 1;
    this.counters.bytesOut += payload.length;
  }

  /** The read-only view a test (or the status panel) reads. */
  snapshot() {
    const battery = this.energy.battery();
    return Object.freeze({
      connected: this.connected,
      agentId: this.agentId,
      runtime: RUNTIME_KIND,
      runtimeVersion: this.runtime.version,
      wasmBuild: this.runtime.build ?? null,
      speedGflops: this.speedGflops,
      hosted: Object.freeze(this.hosted()),
      loading: Object.freeze([...this.loading].sort()),
      served: this.counters.served,
      errors: this.counters.errors,
      duplicates: this.counters.duplicates,
      unroutable: this.counters.unroutable,
      lastError: this.lastError,
      battery: Object.freeze({ ...battery, reading: !battery.simulated }),
      brokerRttMs: this.rttMs,
      fetch: this.fetchProgress ? Object.freeze({ ...this.fetchProgress }) : null,
      queueDepth: Object.freeze(Object.fromEntries([...this.stages.values()].map((s) => [s.key, s.queue.length]))),
      computeMs: Object.freeze(Object.fromEntries([...this.stages.values()].map((s) => [s.key, s.held.ms]))),
    });
  }
}

// -- helpers ---------------------------------------------------------------------------------

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function memFreeBytes() {
  const memory = globalThis.performance?.memory;
  if (memory && memory.jsHeapSizeLimit) return Math.max(0, Math.floor(memory.jsHeapSizeLimit - memory.usedJSHeapSize));
  const device = globalThis.navigator?.deviceMemory;
  if (device) return Math.floor((device * 2 ** 30) / 4);
  return 512 * 2 ** 20;
}

/**
 * The shard's boundary tensors: names from the load command (LiteRT.js keys tensors by
 * signature names such as "output_0", not by the graph's names the wire carries), shapes
 * and dtypes checked against the runtime's, position by position.
 */
export function boundary(side, announced, actual) {
  if (!announced || !announced.length) return actual.map((spec) => ({ ...spec, scale: null, zero_point: null }));
  const describe = (specs) => JSON.stringify(specs.map((s) => [s.shape, s.dtype]));
  const same = announced.length === actual.length && announced.every((spec, i) =>
    spec.dtype === actual[i].dtype && spec.shape.length === actual[i].shape.length &&
    spec.shape.every((dim, j) => dim === actual[i].shape[j]));
  if (!same) {
    throw new Error(`the shard's ${side} ${describe(actual)} are not the ${describe(announced)} the load command announced`);
  }
  return announced.map((spec) => ({ name: spec.name, shape: [...spec.shape], dtype: spec.dtype, scale: spec.scale ?? null, zero_point: spec.zero_point ?? null }));
}

/** The tensors in the shard's input order, once names, shapes, dtypes and quantization match. */
export function checkedInputs(specs, tensors) {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const wanted = specs.map((s) => s.name);
  if (byName.size !== tensors.length || [...byName.keys()].sort().join('\n') !== [...wanted].sort().join('\n')) {
    throw new RequestFailed(ErrorCode.SHAPE_MISMATCH,
      `the shard reads tensors ${JSON.stringify(wanted)}, the message carries ${JSON.stringify(tensors.map((t) => t.name))}`);
  }
  return specs.map((spec) => {
    const tensor = byName.get(spec.name);
    const shape = tensor.shape;
    if (shape.length !== spec.shape.length || spec.shape.some((want, i) => want !== -1 && want !== shape[i])) {
      throw new RequestFailed(ErrorCode.SHAPE_MISMATCH,
        `tensor '${spec.name}' has shape [${shape.join(', ')}], the shard needs [${spec.shape.join(', ')}]`);
    }
    if (tensor.dtype !== spec.dtype) {
      throw new RequestFailed(ErrorCode.SHAPE_MISMATCH, `tensor '${spec.name}' is ${tensor.dtype}, the shard needs ${spec.dtype}`);
    }
    if (spec.scale != null && tensor.scale != null &&
        (Math.abs(tensor.scale - spec.scale) > 1e-6 * Math.abs(spec.scale) + 1e-8 || tensor.zero_point !== spec.zero_point)) {
      throw new RequestFailed(ErrorCode.SHAPE_MISMATCH,
        `tensor '${spec.name}' is quantized with scale ${tensor.scale} and zero point ${tensor.zero_point}, ` +
        `the shard needs ${spec.scale} and ${spec.zero_point}`);
    }
    return tensor;
  });
}

export function errorFor(activation, agentId, code, reason) {
  return {
    kind: 'error', request_id: activation.request_id, attempt: activation.attempt, stage: activation.stage,
    agent_id: agentId, code, message: reason, deployment: activation.deployment,
  };
}

/** Enough of a malformed activation to answer it: request id, attempt, stage, callback. */
export function salvage(payload) {
  let raw;
  try {
    raw = decodeRaw(payload);
  } catch (error) {
    if (error instanceof WireDecodeError) return null;
    throw error;
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || raw instanceof Uint8Array) return null;
  const requestId = raw.request_id;
  if (!(requestId instanceof Uint8Array) || requestId.length !== REQUEST_ID_BYTES) return null;
  if (typeof raw.callback !== 'string') return null;
  const integer = (key) => (typeof raw[key] === 'number' && Number.isInteger(raw[key]) ? raw[key] : 0);
  return {
    request_id: requestId.slice(), attempt: integer('attempt'),
    deployment: typeof raw.deployment === 'string' ? raw.deployment : '',
    stage: integer('stage'), route: [], callback: raw.callback, deadline_ms: 0, tensors: [], trace: [],
  };
}
