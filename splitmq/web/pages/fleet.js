// The fleet page: polls /fleet.json (the rows `splitmq fleet --watch` prints) and draws them.
const PERIOD_MS = 1000;

function cells(row, tag) {
  const tr = document.createElement("tr");
  for (const value of row) {
    const cell = document.createElement(tag);
    cell.textContent = value;
    tr.append(cell);
  }
  return tr;
}

function drawAgents(columns, agents) {
  const table = document.getElementById("agents");
  table.tHead.replaceChildren(cells(columns, "th"));
  const state = columns.indexOf("state");
  table.tBodies[0].replaceChildren(
    ...agents.map((row) => {
      const tr = cells(row, "td");
      tr.className = row[state];
      tr.dataset.agent = row[0];
      return tr;
    }),
  );
  document.getElementById("no-agents").hidden = agents.length > 0;
}

function drawDeployments(deployments) {
  const body = document.querySelector("#deployments tbody");
  body.replaceChildren(
    ...deployments.map((d) => {
      const stages = d.stages
        .map((s) => `${s.stage} [${s.ops[0]}, ${s.ops[1]}): ${s.replicas.join(", ") || "-"}`)
        .join(" | ");
      const tr = cells([d.deployment, `${d.model} ${d.version}`, d.variant, d.epoch, d.state, stages], "td");
      tr.dataset.deployment = d.deployment;
      return tr;
    }),
  );
  document.getElementById("no-deployments").hidden = deployments.length > 0;
}

function drawRequests(requests) {
  const body = document.querySelector("#requests tbody");
  const recent = requests?.recent ?? [];
  body.replaceChildren(
    ...recent.map((r) => {
      const when = new Date(r.ts_ms).toLocaleTimeString();
      const tr = r.error
        ? cells([when, r.deployment ?? "", `error: ${r.error}`, "", r.attempt], "td")
        : cells([when, r.deployment, r.route.join(" \u2192 "), r.latency_ms?.toFixed(1) ?? "-", r.attempt], "td");
      if (r.error) tr.className = "bad";
      return tr;
    }),
  );
  const none = document.getElementById("no-requests");
  none.hidden = recent.length > 0;
  if (requests && !requests.available) none.textContent = "The broker does not let this server read results.";
  const medians = Object.entries(requests?.median_ms ?? {})
    .map(([name, ms]) => `${name}: median ${ms.toFixed(1)} ms`)
    .join(" · ");
  document.getElementById("medians").textContent = medians
    ? `over the last ${requests.count} requests: ${medians}`
    : "";
}

function drawLink(fleet) {
  const link = document.getElementById("link");
  const relay = fleet.relay ?? {};
  link.textContent =
    `broker ${fleet.broker ?? "?"} ${fleet.connected ? "connected" : "not connected"} · ` +
    `${relay.open_connections ?? 0} page(s) on the relay · updated ${new Date(fleet.ts_ms).toLocaleTimeString()}`;
  link.className = fleet.connected ? "ok" : "bad";
  const join = document.getElementById("join-url");
  join.href = fleet.join_url;
  join.textContent = fleet.join_url;
}

async function refresh() {
  try {
    const response = await fetch("/fleet.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const fleet = await response.json();
    drawAgents(fleet.columns, fleet.agents);
    drawDeployments(fleet.deployments);
    drawRequests(fleet.requests);
    drawLink(fleet);
    document.body.dataset.updated = String(fleet.ts_ms);
  } catch (error) {
    const link = document.getElementById("link");
    link.textContent = `the server does not answer: ${error.message}`;
    link.className = "bad";
  } finally {
    setTimeout(refresh, PERIOD_MS);
  }
}

refresh();
