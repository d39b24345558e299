// The topics the browser agent uses, as splitmq/wire/topics.py names them.

export const DEFAULT_NAMESPACE = 'splitmq/v1';
export const ANY_AGENT = 'any';

const FORBIDDEN = /[/+#\u0000]/;

/** ``value`` if it can stand as one topic level, else an Error naming ``what``. */
export function checkSegment(what, value) {
  const text = String(value);
  if (!text || FORBIDDEN.test(text) || text.startsWith('$')) {
    throw new Error(
      `${what} ${JSON.stringify(text)} cannot be a topic level: it must be non-empty and hold ` +
        "no '/', '+', '#', NUL, nor start with '$'",
    );
  }
  return text;
}

// Each row: pattern below the namespace, QoS, retain (the same as the Python table).
export const STATUS = { pattern: 'agents/{agent}/status', qos: 1, retain: true };
export const TELEMETRY = { pattern: 'agents/{agent}/telemetry', qos: 0, retain: true };
export const COMMANDS = { pattern: 'agents/{agent}/cmd', qos: 1, retain: false };
export const EVENTS = { pattern: 'agents/{agent}/events', qos: 1, retain: false };
export const STAGE = { pattern: 'stage/{deployment}/{stage}/{agent}', qos: 1, retain: false };
export const RESULTS = { pattern: 'clients/{client}/result', qos: 1, retain: false };
export const DEPLOYMENTS = { pattern: 'deployments/{deployment}', qos: 1, retain: true };
export const LEASE = { pattern: 'coordinators/lease', qos: 1, retain: true };
export const SITE_STAGE = { pattern: 'sites/{site}/stage/{deployment}/{stage}/{agent}', qos: 1, retain: false };
export const CENTRAL_STAGE = { pattern: 'central/stage/{deployment}/{stage}/{agent}', qos: 1, retain: false };

/**
 * Where a hop to ``agent`` goes from a sender at site ``here`` ('': the central broker),
 * by the deployment's ``sites`` (agent id -> site): its own stage topic within one site
 * (it stays on that broker), else a topic the site brokers' bridges carry
 * (broker-config/bridge.conf). The same rule as splitmq.wire.topics.hop_topic.
 */
export function hopTopic(namespace, { deployment, stage, agent, sites, here = '' }) {
  const there = agent === ANY_AGENT ? '' : (sites?.[agent] ?? '');
  if (there === here || agent === ANY_AGENT) return topicName(STAGE, namespace, { deployment, stage, agent });
  if (!there) return topicName(CENTRAL_STAGE, namespace, { deployment, stage, agent });
  return topicName(SITE_STAGE, namespace, { site: there, deployment, stage, agent });
}

/** The concrete topic of ``row``; every parameter must be given. */
export function topicName(row, namespace, params) {
  return render(row, namespace, params, null);
}

/** A subscription filter of ``row``: parameters not given become ``+``. */
export function topicFilter(row, namespace, params) {
  return render(row, namespace, params, '+');
}

/** A shared subscription: one subscriber of ``group`` gets each message. */
export function sharedFilter(row, group, namespace, params) {
  return `$share/${checkSegment('group', group)}/${topicFilter(row, namespace, params)}`;
}

function render(row, namespace, params, wildcard) {
  const levels = row.pattern.replace(/\{(\w+)\}/g, (_, key) => {
    if (!(key in params)) {
      if (wildcard !== null) return wildcard;
      throw new Error(`topic ${row.pattern} needs ${key}`);
    }
    return checkSegment(key, params[key]);
  });
  return `${namespace}/${levels}`;
}

/** The parameters of a concrete ``topic`` of ``row``, or null if it is not one. */
export function parseTopic(row, namespace, topic) {
  const prefix = `${namespace}/`;
  if (typeof topic !== 'string' || !topic.startsWith(prefix)) return null;
  const levels = topic.slice(prefix.length).split('/');
  const pattern = row.pattern.split('/');
  if (levels.length !== pattern.length) return null;
  const params = {};
  for (let i = 0; i < levels.length; i++) {
    const match = /^\{(\w+)\}$/.exec(pattern[i]);
    if (match) params[match[1]] = levels[i];
    else if (levels[i] !== pattern[i]) return null;
  }
  return params;
}

/** Results go only to a ``clients/{client}/result`` topic: never anywhere a message says. */
export function isCallback(topic, namespace) {
  return (
    typeof topic === 'string' &&
    parseTopic(RESULTS, namespace, topic) !== null &&
    !/[+#\u0000]/.test(topic)
  );
}
