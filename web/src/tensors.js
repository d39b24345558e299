// Tensors on the wire: RFC 8746 typed arrays inside a tag 40 multi-dimensional array,
// as splitmq/wire/tensors.py writes them:
//
//   {"name": "dense/MatMul", "data": 40([[1, 10], 85(h'...')]), "scale": .., "zero_point": ..}
//
// A tensor in JavaScript is {name, dtype, shape, data, scale, zero_point}: ``dtype`` a
// numpy name ("float32", "int8", "bool"...), ``shape`` an array of integers, ``data`` a
// typed array of the values in row-major order (float16 as its raw Uint16 bits, bool
// as 0/1 bytes). Decoding copies the bytes (they sit at any offset of the payload, and
// wider typed arrays need aligned ones), encoding writes them as they are.

import { CborError, CborFloat, Tagged, describe } from './cbor.js';

export const MULTI_DIM_ARRAY_TAG = 40; // RFC 8746 section 3.1

// RFC 8746 section 2.1 typed-array tags, little endian only (and the one-byte ones).
export const DTYPES = {
  uint8: { tag: 64, array: Uint8Array },
  uint16: { tag: 69, array: Uint16Array },
  uint32: { tag: 70, array: Uint32Array },
  uint64: { tag: 71, array: BigUint64Array },
  int8: { tag: 72, array: Int8Array },
  int16: { tag: 77, array: Int16Array },
  int32: { tag: 78, array: Int32Array },
  int64: { tag: 79, array: BigInt64Array },
  float16: { tag: 84, array: Uint16Array },
  float32: { tag: 85, array: Float32Array },
  float64: { tag: 86, array: Float64Array },
  bool: { tag: 64, array: Uint8Array },
};
const DTYPE_OF_TAG = Object.fromEntries(
  Object.entries(DTYPES)
    .filter(([name]) => name !== 'bool')
    .map(([name, { tag }]) => [tag, name]),
);

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A tensor from its parts; checks that the data fits the shape and dtype. */
export function makeTensor(name, dtype, shape, data, scale = null, zero_point = null) {
  const kind = DTYPES[dtype];
  if (!kind) throw new CborError(`dtype ${dtype} cannot travel as an RFC 8746 typed array`);
  if (!(data instanceof kind.array)) {
    throw new CborError(`a ${dtype} tensor needs a ${kind.array.name}, got ${data?.constructor?.name}`);
  }
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) {
    throw new CborError(`shape [${shape}] needs ${count} values, the data has ${data.length}`);
  }
  return { name, dtype, shape: [...shape], data, scale, zero_point };
}

/** Write ``tensor``'s CBOR map. */
export function writeTensor(writer, tensor) {
  const kind = DTYPES[tensor.dtype];
  if (!kind) throw new CborError(`dtype ${tensor.dtype} cannot travel as an RFC 8746 typed array`);
  if (!LITTLE_ENDIAN && kind.array.BYTES_PER_ELEMENT > 1) {
    throw new CborError('this host is big endian: tensors would need swapping');
  }
  const bool = tensor.dtype === 'bool';
  const entries = 2 + (bool ? 1 : 0) + (tensor.scale != null ? 1 : 0) + (tensor.zero_point != null ? 1 : 0);
  writer.mapHead(entries);
  writer.text('name');
  writer.text(tensor.name);
  writer.text('data');
  writer.tag(MULTI_DIM_ARRAY_TAG);
  writer.arrayHead(2);
  writer.arrayHead(tensor.shape.length);
  for (const dim of tensor.shape) writer.integer(dim);
  writer.tag(kind.tag);
  const data = tensor.data;
  writer.byteString(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  if (bool) {
    writer.text('dtype');
    writer.text('bool');
  }
  if (tensor.scale != null) {
    writer.text('scale');
    writer.float(tensor.scale);
  }
  if (tensor.zero_point != null) {
    writer.text('zero_point');
    writer.integer(tensor.zero_point);
  }
}

/** Rebuild a tensor from its decoded CBOR map, checking every part. */
export function readTensor(value, limits, field) {
  if (value === null || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array || value instanceof Tagged) {
    throw new WireDecodeError('a tensor must be a map', field);
  }
  if (typeof value.name !== 'string') throw new WireDecodeError("a tensor needs a text 'name'", field);
  let { dtype, shape, data } = readArray(value.data, limits, `${field}.data`);
  if (value.dtype !== undefined) {
    if (value.dtype !== 'bool' || dtype !== 'uint8') {
      throw new WireDecodeError(`'dtype' ${JSON.stringify(value.dtype)} is only allowed as 'bool' on uint8 data`, field);
    }
    if (data.some((b) => b > 1)) throw new WireDecodeError('bool tensor holds values other than 0 and 1', field);
    dtype = 'bool';
  }
  const scale = value.scale;
  const zeroPoint = value.zero_point;
  let scaleNumber = null;
  if (scale !== undefined && scale !== null) {
    scaleNumber = numberOf(scale);
    if (scaleNumber === null) throw new WireDecodeError("tensor 'scale' must be a number", field);
  }
  if (zeroPoint !== undefined && zeroPoint !== null && !isInteger(zeroPoint)) {
    throw new WireDecodeError("tensor 'zero_point' must be an integer", field);
  }
  return { name: value.name, dtype, shape, data, scale: scaleNumber, zero_point: zeroPoint ?? null };
}

function readArray(value, limits, field) {
  if (!(value instanceof Tagged) || value.tag !== MULTI_DIM_ARRAY_TAG) {
    throw new WireDecodeError('expected an RFC 8746 multi-dimensional array (tag 40)', field);
  }
  const content = value.value;
  if (!Array.isArray(content) || content.length !== 2) {
    throw new WireDecodeError('tag 40 must hold [shape, typed array]', field);
  }
  const [shapeRaw, typed] = content;
  const shape = checkedShape(shapeRaw, limits, field);
  if (!(typed instanceof Tagged) || !(typed.tag in DTYPE_OF_TAG)) {
    const got = typed instanceof Tagged ? `tag ${typed.tag}` : describe(typed);
    throw new WireDecodeError(`expected a little-endian RFC 8746 typed array, got ${got}`, field);
  }
  if (!(typed.value instanceof Uint8Array)) {
    throw new WireDecodeError('typed array content must be a byte string', field);
  }
  const dtype = DTYPE_OF_TAG[typed.tag];
  const kind = DTYPES[dtype];
  let count = 1;
  let span = 1;
  for (const dim of shape) {
    count *= dim;
    span *= Math.max(dim, 1);
  }
  if (span > limits.max_tensor_elements) {
    throw new WireDecodeError(
      `tensor of shape [${shape.join(', ')}] spans ${span} elements, above the limit of ${limits.max_tensor_elements}`,
      field,
    );
  }
  if (count * kind.array.BYTES_PER_ELEMENT !== typed.value.length) {
    throw new WireDecodeError(
      `shape [${shape.join(', ')}] of ${dtype} needs ${count * kind.array.BYTES_PER_ELEMENT} bytes, ` +
        `the typed array has ${typed.value.length}`,
      field,
    );
  }
  if (!LITTLE_ENDIAN && kind.array.BYTES_PER_ELEMENT > 1) {
    throw new WireDecodeError('this host is big endian: tensors would need swapping', field);
  }
  const copy = typed.value.slice(); // aligned, and ours: the payload may be reused
  return { dtype, shape, data: new kind.array(copy.buffer, 0, count) };
}

function checkedShape(value, limits, field) {
  if (!Array.isArray(value)) throw new WireDecodeError('tensor shape must be an array of integers', field);
  if (value.length > limits.max_rank) {
    throw new WireDecodeError(`tensor rank ${value.length} is above the limit of ${limits.max_rank}`, field);
  }
  for (const dim of value) {
    if (typeof dim !== 'number' || !Number.isInteger(dim) || dim < 0) {
      throw new WireDecodeError(`tensor shape ${JSON.stringify(value.map(String))} must hold non-negative integers`, field);
    }
    if (dim > limits.max_tensor_elements) throw new WireDecodeError(`tensor dimension ${dim} is absurdly large`, field);
  }
  return [...value];
}

/** A message that is not one: names the problem and the offending field. */
export class WireDecodeError extends Error {
  constructor(reason, field = null) {
    super(field ? `${field}: ${reason}` : reason);
    this.name = 'WireDecodeError';
    this.reason = reason;
    this.field = field;
  }
}

export function isInteger(value) {
  return (typeof value === 'number' && Number.isInteger(value)) || typeof value === 'bigint';
}

/** The number a wire value stands for (an integer or a float), else null. */
export function numberOf(value) {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  if (value instanceof CborFloat) return value.value;
  return null;
}
