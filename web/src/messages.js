// Every splitmq message, as splitmq/wire/messages.py defines it, and the codec:
// encode(message) -> Uint8Array, decode(bytes) -> message.
//
// A message in JavaScript is a plain object with its ``kind`` and its fields under
// their wire names: {kind: "cmd.ping", command_id: "c1", issuer: "coordinator",
// sent_ms: 12.5}. The schema below is a transcription of the Python dataclasses,
// field for field and in the same order, so both sides write the same bytes: fields
// in declaration order after ``kind`` and ``v``, a field whose default is None left
// out while it is None, a float field always as a float, an int field always as an
// integer. Fields a reader does not know are ignored; a newer schema version, an
// unknown kind, a missing or mistyped field is a WireDecodeError naming the field.

import { CborError, CborFloat, Tagged, Writer, decodeCbor, describe } from './cbor.js';
import { WireDecodeError, isInteger, numberOf, readTensor, writeTensor } from './tensors.js';

export { WireDecodeError };

export const REQUEST_ID_BYTES = 16;

// In a stage graph, the requester's end of an edge (a StageEdge's stage): the
// request's input tensors, or the model's outputs sent back to it.
export const REQUESTER = -1;

export const LIMITS = Object.freeze({
  max_message_bytes: 64 * 1024 * 1024,
  max_depth: 32,
  max_rank: 8,
  max_tensor_elements: 64 * 1024 * 1024,
  max_tensors: 256,
  max_items: 65536,
});

export const ErrorCode = Object.freeze({
  BAD_MESSAGE: 'bad_message',
  UNKNOWN_DEPLOYMENT: 'unknown_deployment',
  SHAPE_MISMATCH: 'shape_mismatch',
  DEADLINE_EXCEEDED: 'deadline_exceeded',
  OVERLOADED: 'overloaded',
  SHARD_NOT_LOADED: 'shard_not_loaded',
  INTERNAL: 'internal',
  BRANCH_MISSING: 'branch_missing',
  JOIN_FULL: 'join_full',
});

const REQUIRED = Symbol('required');
const AGENT_STATE = { enum: ['online', 'offline'] };
const ERROR_CODE = { enum: Object.values(ErrorCode) };
const ENERGY_LEVEL = { enum: ['performance', 'balanced', 'saver'] };
const DEPLOYMENT_STATE = { enum: ['active', 'retired'] };
const OBJECTIVE = { enum: ['latency', 'throughput', 'energy'] };
const optional = (type) => ({ optional: type });
const seq = (type) => ({ seq: type });
const map = (type) => ({ map: type });
const struct = (name) => ({ struct: name });
const ROUTE = seq(seq('str'));

// Nested parts (no kind, no version).
const STRUCTS = {
  Battery: [
    ['pct', 'float', REQUIRED],
    ['plugged', 'bool', REQUIRED],
    ['simulated', 'bool', false],
  ],
  Link: [
    ['bandwidth_mbps', 'float', REQUIRED],
    ['latency_ms', 'float', REQUIRED],
  ],
  TensorSpec: [
    ['name', 'str', REQUIRED],
    ['shape', seq('int'), REQUIRED],
    ['dtype', 'str', REQUIRED],
    ['scale', optional('float'), null],
    ['zero_point', optional('int'), null],
    ['size_bytes', 'int', 0],
  ],
  StagePrediction: [
    ['stage', 'int', REQUIRED],
    ['agent_id', 'str', REQUIRED],
    ['transfer_ms', 'float', REQUIRED],
    ['queueing_ms', 'float', REQUIRED],
    ['compute_ms', 'float', REQUIRED],
  ],
  TaskCandidate: [
    ['model', 'str', REQUIRED],
    ['version', 'str', REQUIRED],
    ['variant', 'str', REQUIRED],
    ['accuracy', optional('float'), null],
    ['agreement', optional('float'), null],
    ['predicted_latency_ms', optional('float'), null],
    ['predicted_energy_j', optional('float'), null],
    ['excluded', optional('str'), null],
  ],
  TraceEntry: [
    ['stage', 'int', REQUIRED],
    ['agent_id', 'str', REQUIRED],
    ['received_ms', 'float', REQUIRED],
    ['started_ms', 'float', REQUIRED],
    ['finished_ms', 'float', REQUIRED],
    ['bytes_in', 'int', 0],
    ['attempt', 'int', 0],
    ['bytes_out', 'int', 0],
    ['energy_j', 'float', 0.0],
  ],
  StageEdge: [
    ['stage', 'int', REQUIRED],
    ['tensors', seq('str'), REQUIRED],
  ],
  StageSpec: [
    ['stage', 'int', REQUIRED],
    ['start_op', 'int', REQUIRED],
    ['end_op', 'int', REQUIRED],
    ['digest', 'str', REQUIRED],
    ['size_bytes', 'int', REQUIRED],
    ['inputs', seq(struct('TensorSpec')), REQUIRED],
    ['outputs', seq(struct('TensorSpec')), REQUIRED],
    ['replicas', seq('str'), REQUIRED],
    ['sources', optional(seq(struct('StageEdge'))), null],
    ['targets', optional(seq(struct('StageEdge'))), null],
    ['operators', optional(seq('int')), null],
  ],
};

// kind -> [schema version, fields]
export const MESSAGES = {
  status: [1, [
    ['agent_id', 'str', REQUIRED],
    ['state', AGENT_STATE, REQUIRED],
    ['ts_ms', 'int', 0],
    ['version', 'str', ''],
    ['runtime', 'str', ''],
    ['runtime_version', 'str', ''],
    ['cores', 'int', 0],
    ['memory_bytes', 'int', 0],
    ['profile', 'str', ''],
    ['cached_shards', seq('str'), []],
    ['speed_gflops', 'float', 0.0],
    ['active_power_w', 'float', 0.0],
    ['idle_power_w', 'float', 0.0],
    ['radio_j_per_mb', 'float', 0.0],
    ['compute_factor', 'float', 1.0],
    ['link', optional(struct('Link')), null],
    ['tensor_dtypes', optional(seq('str')), null],
    ['site', optional('str'), null],
    ['machine', optional('str'), null],
    ['cpu_model', optional('str'), null],
    ['kernels', optional('str'), null],
    ['emulator', optional('str'), null],
  ]],
  telemetry: [1, [
    ['agent_id', 'str', REQUIRED],
    ['ts_ms', 'int', REQUIRED],
    ['period_s', 'float', REQUIRED],
    ['cpu_pct', 'float', REQUIRED],
    ['mem_free_bytes', 'int', REQUIRED],
    ['battery', struct('Battery'), REQUIRED],
    ['profile', 'str', ''],
    ['temperature_c', optional('float'), null],
    ['queue_depth', map('int'), {}],
    ['compute_ms', map('float'), {}],
    ['msgs_in', 'int', 0],
    ['msgs_out', 'int', 0],
    ['bytes_in', 'int', 0],
    ['bytes_out', 'int', 0],
    ['broker_rtt_ms', optional('float'), null],
    ['energy_j', 'float', 0.0],
    ['link', optional(struct('Link')), null],
    ['duplicates', 'int', 0],
    ['unroutable', 'int', 0],
    ['joins', optional(map('int')), null],
    ['hop_mbps', optional('float'), null],
  ]],
  'cmd.load': [1, [
    ['command_id', 'str', REQUIRED],
    ['issuer', 'str', REQUIRED],
    ['deployment', 'str', REQUIRED],
    ['stage', 'int', REQUIRED],
    ['digest', 'str', REQUIRED],
    ['size_bytes', 'int', REQUIRED],
    ['inputs', seq(struct('TensorSpec')), []],
    ['outputs', seq(struct('TensorSpec')), []],
    ['threads', optional('int'), null],
    ['shared', 'bool', false],
    ['sources', optional(seq(struct('StageEdge'))), null],
    ['targets', optional(seq(struct('StageEdge'))), null],
  ]],
  'cmd.unload': [1, [
    ['command_id', 'str', REQUIRED],
    ['issuer', 'str', REQUIRED],
    ['deployment', 'str', REQUIRED],
    ['stage', 'int', REQUIRED],
  ]],
  'cmd.ping': [1, [
    ['command_id', 'str', REQUIRED],
    ['issuer', 'str', REQUIRED],
    ['sent_ms', 'float', REQUIRED],
    ['padding', optional('bytes'), null],
  ]],
  'event.reply': [1, [
    ['command_id', 'str', REQUIRED],
    ['agent_id', 'str', REQUIRED],
    ['ok', 'bool', REQUIRED],
    ['message', 'str', ''],
  ]],
  'event.shard_ready': [1, [
    ['command_id', 'str', REQUIRED],
    ['agent_id', 'str', REQUIRED],
    ['deployment', 'str', REQUIRED],
    ['stage', 'int', REQUIRED],
    ['digest', 'str', REQUIRED],
    ['runtime', 'str', REQUIRED],
    ['bench_ms', 'float', REQUIRED],
  ]],
  'event.pong': [1, [
    ['command_id', 'str', REQUIRED],
    ['agent_id', 'str', REQUIRED],
    ['sent_ms', 'float', REQUIRED],
    ['ts_ms', 'float', REQUIRED],
  ]],
  'pool.fetch': [1, [
    ['agent_id', 'str', REQUIRED],
    ['digest', 'str', REQUIRED],
    ['offset', 'int', REQUIRED],
    ['length', 'int', REQUIRED],
  ]],
  'pool.chunk': [1, [
    ['digest', 'str', REQUIRED],
    ['offset', 'int', REQUIRED],
    ['total_bytes', 'int', REQUIRED],
    ['data', 'bytes', REQUIRED],
  ]],
  'pool.error': [1, [
    ['digest', 'str', REQUIRED],
    ['message', 'str', REQUIRED],
  ]],
  activation: [1, [
    ['request_id', 'request_id', REQUIRED],
    ['attempt', 'int', REQUIRED],
    ['deployment', 'str', REQUIRED],
    ['stage', 'int', REQUIRED],
    ['route', ROUTE, REQUIRED],
    ['callback', 'str', REQUIRED],
    ['deadline_ms', 'int', REQUIRED],
    ['tensors', seq('tensor'), REQUIRED],
    ['trace', seq(struct('TraceEntry')), []],
    ['client_id', 'str', ''],
    ['source', optional('int'), null],
    ['branch', optional('int'), null],
    ['retry', optional('int'), null],
  ]],
  result: [1, [
    ['request_id', 'request_id', REQUIRED],
    ['attempt', 'int', REQUIRED],
    ['deployment', 'str', REQUIRED],
    ['tensors', seq('tensor'), REQUIRED],
    ['trace', seq(struct('TraceEntry')), []],
    ['agent_id', 'str', ''],
    ['stage', optional('int'), null],
  ]],
  error: [1, [
    ['request_id', 'request_id', REQUIRED],
    ['attempt', 'int', REQUIRED],
    ['stage', 'int', REQUIRED],
    ['agent_id', 'str', REQUIRED],
    ['code', ERROR_CODE, REQUIRED],
    ['message', 'str', REQUIRED],
    ['deployment', 'str', ''],
  ]],
  'plan.request': [1, [
    ['request_id', 'str', REQUIRED],
    ['client_id', 'str', REQUIRED],
    ['model', 'str', REQUIRED],
    ['version', optional('str'), null],
    ['max_latency_ms', optional('float'), null],
    ['min_fidelity', optional('float'), null],
    ['energy_j', optional('float'), null],
    ['energy_level', ENERGY_LEVEL, 'balanced'],
    ['client_battery', optional(struct('Battery')), null],
    ['task', optional('str'), null],
    ['min_accuracy', optional('float'), null],
    ['client_ms', optional('float'), null],
  ]],
  plan: [1, [
    ['request_id', 'str', REQUIRED],
    ['deployment', 'str', REQUIRED],
    ['epoch', 'int', REQUIRED],
    ['model', 'str', REQUIRED],
    ['version', 'str', REQUIRED],
    ['variant', 'str', REQUIRED],
    ['route', ROUTE, REQUIRED],
    ['predicted_latency_ms', 'float', REQUIRED],
    ['predicted_energy_j', 'float', REQUIRED],
    ['predicted_stages', optional(seq(struct('StagePrediction'))), null],
    ['predicted_final_hop_ms', optional('float'), null],
    ['task', optional('str'), null],
    ['accuracy', optional('float'), null],
    ['candidates', optional(seq(struct('TaskCandidate'))), null],
    ['predicted_client_ms', optional('float'), null],
  ]],
  'plan.refused': [1, [
    ['request_id', 'str', REQUIRED],
    ['model', 'str', REQUIRED],
    ['constraint', 'str', REQUIRED],
    ['message', 'str', REQUIRED],
  ]],
  deployment: [1, [
    ['deployment', 'str', REQUIRED],
    ['model', 'str', REQUIRED],
    ['version', 'str', REQUIRED],
    ['variant', 'str', REQUIRED],
    ['epoch', 'int', REQUIRED],
    ['stages', seq(struct('StageSpec')), REQUIRED],
    ['state', DEPLOYMENT_STATE, 'active'],
    ['created_ms', 'int', 0],
    ['objective', 'str', ''],
    ['target_replicas', 'int', 1],
    ['sites', map('str'), {}],
  ]],
  'deploy.request': [1, [
    ['request_id', 'str', REQUIRED],
    ['client_id', 'str', REQUIRED],
    ['model', 'str', REQUIRED],
    ['version', optional('str'), null],
    ['variant', optional('str'), null],
    ['stages', 'int', 0],
    ['replicas', 'int', 1],
    ['objective', OBJECTIVE, 'latency'],
    ['pin_first', optional('str'), null],
    ['pin_last', optional('str'), null],
    ['max_latency_ms', optional('float'), null],
    ['max_shard_bytes', optional('int'), null],
    ['ready_timeout_s', 'float', 60.0],
    ['retire', 'bool', false],
    ['task', optional('str'), null],
    ['plans', optional({ enum: ['chain', 'parallel', 'auto'] }), null],
  ]],
  'deploy.reply': [1, [
    ['request_id', 'str', REQUIRED],
    ['ok', 'bool', REQUIRED],
    ['message', 'str', REQUIRED],
    ['deployment', 'str', ''],
    ['epoch', 'int', 0],
    ['failed_agents', seq('str'), []],
    ['predicted_latency_ms', optional('float'), null],
  ]],
  'coordinator.lease': [1, [
    ['holder', 'str', REQUIRED],
    ['term', 'int', REQUIRED],
    ['period_s', 'float', REQUIRED],
    ['expiry_s', 'float', REQUIRED],
    ['released', 'bool', false],
    ['telemetry_period_s', 'float', 0.0],
  ]],
};

export class WireEncodeError extends Error {
  constructor(message) {
    super(message);
    this.name = 'WireEncodeError';
  }
}

// --- encoding ---------------------------------------------------------------------------

/** The CBOR bytes of ``message`` (an object with ``kind`` and its fields). */
export function encode(message) {
  const entry = MESSAGES[message?.kind];
  if (!entry) throw new WireEncodeError(`unknown message kind ${JSON.stringify(message?.kind)}`);
  const writer = new Writer(estimate(message));
  try {
    writeFields(writer, entry[1], message, { kind: message.kind, v: entry[0] }, message.kind);
  } catch (error) {
    if (error instanceof WireEncodeError) throw error;
    throw new WireEncodeError(`cannot encode ${message.kind}: ${error.message}`);
  }
  return writer.result();
}

function estimate(message) {
  let bytes = 256;
  for (const tensor of message.tensors ?? []) bytes += (tensor.data?.byteLength ?? 0) + 64;
  if (message.data instanceof Uint8Array) bytes += message.data.length;
  return bytes;
}

function writeFields(writer, fields, object, header, path) {
  const present = [];
  for (const [name, type, fallback] of fields) {
    let value = object[name];
    if (value === undefined) {
      if (fallback === REQUIRED) throw new WireEncodeError(`${path}: missing required field ${name}`);
      value = fallback;
    }
    if (value === null && fallback === null) continue;
    present.push([name, type, value]);
  }
  const extra = header ? 2 : 0;
  writer.mapHead(present.length + extra);
  if (header) {
    writer.text('kind');
    writer.text(header.kind);
    writer.text('v');
    writer.integer(header.v);
  }
  for (const [name, type, value] of present) {
    writer.text(name);
    writeValue(writer, type, value, `${path}.${name}`);
  }
}

function writeValue(writer, type, value, path) {
  if (typeof type === 'string') {
    switch (type) {
      case 'str':
        if (typeof value !== 'string') throw new WireEncodeError(`${path}: expected text, got ${describe(value)}`);
        return writer.text(value);
      case 'int':
        if (!isInteger(value)) throw new WireEncodeError(`${path}: expected an integer, got ${value}`);
        return writer.integer(value);
      case 'float':
        if (typeof value !== 'number') throw new WireEncodeError(`${path}: expected a number, got ${describe(value)}`);
        return writer.float(value);
      case 'bool':
        return writer.boolean(value);
      case 'bytes':
        return writer.byteString(value);
      case 'request_id':
        if (!(value instanceof Uint8Array) || value.length !== REQUEST_ID_BYTES) {
          throw new WireEncodeError(`${path}: request_id must be ${REQUEST_ID_BYTES} bytes`);
        }
        return writer.byteString(value);
      case 'tensor':
        return writeTensor(writer, value);
      default:
        throw new WireEncodeError(`${path}: unknown type ${type}`);
    }
  }
  if (type.optional) {
    if (value === null) return writer.nil();
    return writeValue(writer, type.optional, value, path);
  }
  if (type.enum) {
    if (!type.enum.includes(value)) {
      throw new WireEncodeError(`${path}: ${JSON.stringify(value)} is not one of ${type.enum.join(', ')}`);
    }
    return writer.text(value);
  }
  if (type.seq) {
    if (!Array.isArray(value)) throw new WireEncodeError(`${path}: expected an array`);
    writer.arrayHead(value.length);
    value.forEach((item, i) => writeValue(writer, type.seq, item, `${path}[${i}]`));
    return undefined;
  }
  if (type.map) {
    const entries = Object.entries(value);
    writer.mapHead(entries.length);
    for (const [key, item] of entries) {
      writer.text(key);
      writeValue(writer, type.map, item, `${path}[${key}]`);
    }
    return undefined;
  }
  if (type.struct) {
    if (value === null || typeof value !== 'object') throw new WireEncodeError(`${path}: expected a map`);
    return writeFields(writer, STRUCTS[type.struct], value, null, path);
  }
  throw new WireEncodeError(`${path}: unknown type`);
}

// --- decoding ---------------------------------------------------------------------------

/**
 * Decode one message; throw WireDecodeError for anything that is not one.
 * ``expect``: the kinds the caller accepts (any other is an error).
 */
export function decode(bytes, { expect = null, limits = LIMITS } = {}) {
  if (!(bytes instanceof Uint8Array)) throw new WireDecodeError('payload must be bytes');
  if (bytes.length > limits.max_message_bytes) {
    throw new WireDecodeError(
      `payload of ${bytes.length} bytes is above the limit of ${limits.max_message_bytes} bytes`,
    );
  }
  const raw = decodeRaw(bytes, limits);
  return messageFromRaw(raw, { expect, limits });
}

/** The generic CBOR value of ``bytes`` (CBOR errors become WireDecodeError). */
export function decodeRaw(bytes, limits = LIMITS) {
  try {
    return decodeCbor(bytes, { maxDepth: limits.max_depth });
  } catch (error) {
    if (error instanceof CborError) throw new WireDecodeError(error.message);
    throw error;
  }
}

export function messageFromRaw(raw, { expect = null, limits = LIMITS } = {}) {
  if (!isMap(raw)) throw new WireDecodeError(`a message must be a CBOR map, not ${describe(raw)}`);
  const kind = raw.kind;
  if (typeof kind !== 'string') throw new WireDecodeError("a message needs a text 'kind'", 'kind');
  const entry = MESSAGES[kind];
  if (!entry) throw new WireDecodeError(`unknown message kind '${kind}'`, 'kind');
  if (expect !== null && !expect.includes(kind)) {
    throw new WireDecodeError(
      `expected a message of kind ${expect.map((k) => `'${k}'`).join(', ')}, got '${kind}'`,
      'kind',
    );
  }
  const version = raw.v;
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) {
    throw new WireDecodeError("a message needs a positive integer schema version 'v'", 'v');
  }
  if (version > entry[0]) {
    throw new WireDecodeError(
      `'${kind}' schema version ${version} is newer than this splitmq reads (up to ${entry[0]}): ` +
        'reload the page to get the newer agent',
      'v',
    );
  }
  const message = readFields(entry[1], raw, limits, '');
  return { kind, ...message };
}

function isMap(value) {
  return (
    value !== null &&
    typeof value === 'object' &&
    !Array.isArray(value) &&
    !(value instanceof Uint8Array) &&
    !(value instanceof Tagged) &&
    !(value instanceof CborFloat)
  );
}

function readFields(fields, raw, limits, path) {
  if (!isMap(raw)) throw new WireDecodeError(`expected a map, got ${describe(raw)}`, path || null);
  const out = {};
  for (const [name, type, fallback] of fields) {
    const where = path ? `${path}.${name}` : name;
    if (Object.prototype.hasOwnProperty.call(raw, name)) {
      out[name] = readValue(type, raw[name], limits, where);
    } else if (fallback === REQUIRED) {
      throw new WireDecodeError(`missing required field '${name}'`, where);
    } else {
      out[name] = Array.isArray(fallback) ? [] : isMap(fallback) ? {} : fallback;
    }
  }
  return out;
}

function readValue(type, value, limits, path) {
  if (typeof type === 'string') {
    switch (type) {
      case 'str':
        if (typeof value !== 'string') throw wrong('str', value, path);
        return value;
      case 'bool':
        if (typeof value !== 'boolean') throw wrong('bool', value, path);
        return value;
      case 'int':
        if (!isInteger(value)) throw wrong('int', value, path);
        return value;
      case 'float': {
        const number = numberOf(value);
        if (number === null) throw wrong('float', value, path);
        return number;
      }
      case 'bytes':
        if (!(value instanceof Uint8Array)) throw wrong('bytes', value, path);
        return value.slice();
      case 'request_id':
        if (!(value instanceof Uint8Array)) throw wrong('bytes', value, path);
        if (value.length !== REQUEST_ID_BYTES) {
          throw new WireDecodeError(`request_id must be ${REQUEST_ID_BYTES} bytes`, path);
        }
        return value.slice();
      case 'tensor':
        return readTensor(value, limits, path);
      default:
        throw new WireDecodeError(`unknown type ${type}`, path);
    }
  }
  if (type.optional) return value === null ? null : readValue(type.optional, value, limits, path);
  if (type.enum) {
    if (!type.enum.includes(value)) {
      const shown = typeof value === 'string' ? `'${value}'` : describe(value);
      throw new WireDecodeError(`${shown} is not one of ${type.enum.map((v) => `'${v}'`).join(', ')}`, path);
    }
    return value;
  }
  if (type.seq) {
    if (!Array.isArray(value)) throw new WireDecodeError(`expected an array, got ${describe(value)}`, path);
    const limit = type.seq === 'tensor' ? limits.max_tensors : limits.max_items;
    if (value.length > limit) throw new WireDecodeError(`${value.length} entries, above the limit of ${limit}`, path);
    return value.map((item, i) => readValue(type.seq, item, limits, `${path}[${i}]`));
  }
  if (type.map) {
    if (!isMap(value)) throw new WireDecodeError(`expected a map, got ${describe(value)}`, path);
    const entries = Object.entries(value);
    if (entries.length > limits.max_items) {
      throw new WireDecodeError(`${entries.length} entries, above the limit of ${limits.max_items}`, path);
    }
    const out = {};
    for (const [key, item] of entries) out[key] = readValue(type.map, item, limits, `${path}['${key}']`);
    return out;
  }
  if (type.struct) return readFields(STRUCTS[type.struct], value, limits, path);
  throw new WireDecodeError('unknown type', path);
}

function wrong(kind, value, path) {
  return new WireDecodeError(`expected ${kind}, got ${describe(value)}`, path);
}
