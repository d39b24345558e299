// The agent page's entry point: read the server's config.json (query parameters
// override it), start LiteRT.js, connect to the broker over WebSockets, serve, and
// keep the status panel and window.splitmqAgent up to date.

import { BrowserAgent, agentConfig } from './agent.js';
import { browserBattery } from './energy.js';
import { httpShardFetcher } from './fetch.js';
import { encode } from './messages.js';
import { loadRuntime } from './runtime.js';
import { STATUS, topicName } from './topics.js';
import { mqttTransport } from './transport.js';
import { renderPanel } from './panel.js';
import { ScreenWakeLock } from './wakelock.js';

/* global __LITERT_VERSION__, __SPLITMQ_WEB_VERSION__ */
const ID_KEY = 'splitmq.agentId';

/** config.json, with ?id=&profile=&user=&password= from the page's address over it. */
export async function pageConfig(location = window.location, storage = window.localStorage) {
  const response = await fetch(new URL('/config.json', location.href), { cache: 'no-store' });
  if (!response.ok) throw new Error(`GET /config.json: HTTP ${response.status}`);
  const config = await response.json();
  const query = new URLSearchParams(location.search);
  let agentId = query.get('id');
  if (!agentId) {
    agentId = storage?.getItem(ID_KEY);
    if (!agentId) {
      const random = crypto.getRandomValues(new Uint8Array(4));
      agentId = `web-${Array.from(random, (b) => b.toString(16).padStart(2, '0')).join('')}`;
      storage?.setItem(ID_KEY, agentId);
    }
  }
  return {
    ...config,
    agent_id: agentId,
    profile: query.get('profile') ?? config.profile ?? null,
    site: query.get('site') ?? config.site ?? '',
    username: query.get('user') ?? config.username ?? null,
    password: query.get('password') ?? config.password ?? null,
  };
}

/** The read-only view tests and people read: ``window.splitmqAgent``. */
function publishStatus(state) {
  const view = {};
  for (const key of ['connected', 'agentId', 'hosted', 'served', 'errors', 'lastError', 'runtime',
    'runtimeVersion', 'wasmBuild', 'speedGflops', 'battery', 'brokerRttMs', 'loading', 'duplicates', 'unroutable', 'fetch', 'queueDepth', 'computeMs']) {
    Object.defineProperty(view, key, { enumerable: true, get: () => state.snapshot()[key] });
  }
  Object.defineProperty(view, 'phase', { enumerable: true, get: () => state.phase });
  Object.defineProperty(view, 'startupError', { enumerable: true, get: () => state.startupError });
  Object.defineProperty(view, 'wakeLock', { enumerable: true, get: () => state.wakeLock?.state ?? 'not offered' });
  window.splitmqAgent = Object.freeze(view);
}

async function main() {
  const panel = document.getElementById('panel');
  const empty = () => ({ connected: false, agentId: null, hosted: [], served: 0, errors: 0, lastError: null, battery: null });
  const state = { phase: 'starting', startupError: null, agent: null, wakeLock: null, config: null, snapshot: () => (state.agent ? state.agent.snapshot() : empty()) };
  publishStatus(state);
  let drawing = false;
  const redraw = () => { // at most once a frame, however many requests finish in it
    if (drawing) return;
    drawing = true;
    const draw = () => {
      drawing = false;
      renderPanel(panel, state);
    };
    if (typeof requestAnimationFrame === 'function' && document.visibilityState === 'visible') requestAnimationFrame(draw);
    else setTimeout(draw, 250);
  };
  try {
    const config = await pageConfig();
    state.config = config;
    redraw();
    state.phase = 'loading LiteRT.js';
    redraw();
    const runtime = await loadRuntime({
      wasmUrl: new URL(config.wasm_url ?? '/wasm/', window.location.href).href,
      calibrationUrl: new URL('calibration.tflite', window.location.href).href,
      version: __LITERT_VERSION__,
    });
    const settings = agentConfig({
      agentId: config.agent_id,
      namespace: config.namespace,
      telemetryPeriodS: config.telemetry_period_s,
      profile: config.profile ?? 'browser',
      version: config.version ?? __SPLITMQ_WEB_VERSION__,
      coordinatorId: config.coordinator_id ?? 'coordinator',
      figures: config.profile_figures ?? null,
      site: config.site,
    });
    const offline = encode({ kind: 'status', agent_id: settings.agentId, state: 'offline' });
    const transport = mqttTransport({
      url: config.broker_url,
      clientId: `splitmq-${settings.agentId}`,
      username: config.username,
      password: config.password,
      maxPacketBytes: config.max_packet_bytes ?? undefined,
      will: { topic: topicName(STATUS, settings.namespace, { agent: settings.agentId }), payload: offline, qos: STATUS.qos, retain: STATUS.retain },
    });
    const agent = new BrowserAgent(settings, {
      transport,
      runtime,
      fetchShard: httpShardFetcher(config.shard_url ?? '/shards/{sha256}'), // relative to the page
      battery: await browserBattery(),
    });
    state.agent = agent;
    state.wakeLock = new ScreenWakeLock();
    agent.onChange(() => {
      state.wakeLock.want(agent.stages.size > 0);
      redraw();
    });
    state.phase = 'connecting';
    redraw();
    await transport.connect(agent);
    state.phase = 'calibrating';
    redraw();
    await agent.start();
    state.phase = 'serving';
    window.addEventListener('pagehide', () => agent.stop().then(() => transport.close()));
  } catch (error) {
    state.phase = 'failed';
    state.startupError = String(error?.message ?? error);
    console.error(error);
  }
  redraw();
}

main();
