// The status panel: what the page hosts, requests served, battery, broker link.

function text(value) {
  return String(value).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
}

function battery(b) {
  if (!b) return '—';
  if (!b.reading) return `no battery reading (simulated ${b.pct.toFixed(0)}%)`;
  return `${b.pct.toFixed(0)}% ${b.plugged ? '(charging)' : '(on battery)'}`;
}

export function renderPanel(element, state) {
  if (!element) return;
  const s = state.snapshot();
  const link = s.connected
    ? `connected${s.brokerRttMs != null ? `, ${s.brokerRttMs.toFixed(1)} ms round trip` : ''}`
    : state.phase === 'serving' ? 'reconnecting…' : 'not connected';
  const rows = [
    ['agent', s.agentId ?? '—'],
    ['state', state.phase + (state.startupError ? `: ${state.startupError}` : '')],
    ['broker', `${state.config?.broker_url ?? '—'} — ${link}`],
    ['runtime', s.runtime ? `${s.runtime} ${s.runtimeVersion} (${s.wasmBuild} wasm build), ${s.speedGflops.toFixed(2)} GFLOP/s` : '—'],
    ['battery', battery(s.battery)],
    ['requests served', s.served],
    ['errors sent', s.errors],
    ['last error', s.lastError ?? 'none'],
    ['screen wake lock', state.wakeLock?.state ?? 'not offered'],
  ];
  const ms = (key) => (s.computeMs?.[key] == null ? '—' : s.computeMs[key].toFixed(2));
  const hosted = (s.hosted ?? []).map((key) => `<tr><td>${text(key)}</td><td>${s.queueDepth?.[key] ?? 0}</td><td>${ms(key)}</td></tr>`).join('');
  const loading = (s.loading ?? []).map((key) => `<tr><td>${text(key)}</td><td colspan="2">loading</td></tr>`).join('');
  let fetch = '';
  if (s.fetch) {
    const pct = s.fetch.total ? (100 * s.fetch.received) / s.fetch.total : 0;
    fetch = `<p>fetching shard ${text(s.fetch.digest.slice(0, 12))}: <progress max="100" value="${pct.toFixed(0)}"></progress> ${s.fetch.received} / ${s.fetch.total} bytes</p>`;
  }
  element.innerHTML = `
    <table class="facts">${rows.map(([k, v]) => `<tr><th>${text(k)}</th><td>${text(v)}</td></tr>`).join('')}</table>
    <h2>Hosted stages</h2>
    <table class="stages"><tr><th>deployment/stage</th><th>queued</th><th>compute ms</th></tr>${hosted}${loading}${hosted || loading ? '' : '<tr><td colspan="3">none yet: the coordinator will assign one</td></tr>'}</table>
    ${fetch}`;
}
