// CBOR (RFC 8949) as splitmq's Python side writes and reads it.
//
// The writer produces exactly the bytes cbor2 writes for the same values: the shortest
// head for every integer and length (RFC 8949 section 3.1 "preferred" argument sizes),
// definite lengths only, every float as a 64-bit double (cbor2's default; NaN and the
// infinities as the 16-bit values cbor2 writes), map entries in the order given.
// A general CBOR library cannot do this on its own: JavaScript numbers do not say
// whether 1 is the integer or the float, so the schema (schema.js) picks the writer call.
//
// The reader accepts the language splitmq's decoder accepts (splitmq/wire/cbor.py):
// definite lengths, text map keys without duplicates, a depth limit, no trailing bytes,
// and no semantic tag splitmq does not use. Byte strings come back as views of the
// payload (Uint8Array.subarray): a tensor decoder copies them before viewing them as
// wider typed arrays, since they sit at unaligned offsets.

export class CborError extends Error {
  constructor(message) {
    super(message);
    this.name = 'CborError';
  }
}

/** A CBOR tag (RFC 8949 section 3.4): ``tag`` applied to ``value``. */
export class Tagged {
  constructor(tag, value) {
    this.tag = tag;
    this.value = value;
  }
}

const TEXT_ENCODER = new TextEncoder();
const TEXT_DECODER = new TextDecoder('utf-8', { fatal: true });
const TWO_32 = 0x100000000;

/**
 * A float read from the wire. JavaScript numbers cannot tell the float 1.0 from the
 * integer 1, and the schema must (Python refuses a float where an integer belongs), so
 * the reader hands floats back wrapped.
 */
export class CborFloat {
  constructor(value) {
    this.value = value;
  }
}

/** A growable byte buffer with the CBOR writer's primitives. */
export class Writer {
  constructor(initialBytes = 256) {
    this.bytes = new Uint8Array(initialBytes);
    this.view = new DataView(this.bytes.buffer);
    this.length = 0;
  }

  ensure(extra) {
    const needed = this.length + extra;
    if (needed <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < needed) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
    this.view = new DataView(grown.buffer);
  }

  /** The bytes written so far (a copy the caller owns). */
  result() {
    return this.bytes.slice(0, this.length);
  }

  /** The initial byte(s) of an item of major type ``major`` with argument ``value``. */
  head(major, value) {
    const mt = major << 5;
    if (typeof value === 'bigint') {
      if (value < 0n || value >= 1n << 64n) throw new CborError(`argument ${value} out of range`);
      if (value < BigInt(Number.MAX_SAFE_INTEGER)) return this.head(major, Number(value));
      this.ensure(9);
      this.bytes[this.length] = mt | 27;
      this.view.setBigUint64(this.length + 1, value);
      this.length += 9;
      return;
    }
    if (!Number.isInteger(value) || value < 0) {
      throw new CborError(`argument ${value} is not a non-negative integer`);
    }
    if (!Number.isSafeInteger(value)) {
      throw new CborError(`integer ${value} is beyond 2^53: pass it as a BigInt`);
    }
    if (value < 24) {
      this.ensure(1);
      this.bytes[this.length++] = mt | value;
    } else if (value < 0x100) {
      this.ensure(2);
      this.bytes[this.length++] = mt | 24;
      this.bytes[this.length++] = value;
    } else if (value < 0x10000) {
      this.ensure(3);
      this.bytes[this.length] = mt | 25;
      this.view.setUint16(this.length + 1, value);
      this.length += 3;
    } else if (value < TWO_32) {
      this.ensure(5);
      this.bytes[this.length] = mt | 26;
      this.view.setUint32(this.length + 1, value);
      this.length += 5;
    } else {
      this.ensure(9);
      this.bytes[this.length] = mt | 27;
      this.view.setUint32(this.length + 1, Math.floor(value / TWO_32));
      this.view.setUint32(this.length + 5, value % TWO_32);
      this.length += 9;
    }
  }

  /** An integer (major type 0 or 1); a Number must be a safe integer, else a BigInt. */
  integer(value) {
    if (typeof value === 'bigint') {
      if (value >= 0n) this.head(0, value);
      else this.head(1, -1n - value);
      return;
    }
    if (!Number.isInteger(value)) throw new CborError(`${value} is not an integer`);
    if (value >= 0) this.head(0, value);
    else this.head(1, -1 - value);
  }

  /** A float, as cbor2 writes it: a double, or the 16-bit NaN / infinities. */
  float(value) {
    if (typeof value !== 'number') throw new CborError(`${value} is not a number`);
    this.ensure(9);
    if (Number.isNaN(value)) {
      this.bytes.set([0xf9, 0x7e, 0x00], this.length);
      this.length += 3;
    } else if (value === Infinity) {
      this.bytes.set([0xf9, 0x7c, 0x00], this.length);
      this.length += 3;
    } else if (value === -Infinity) {
      this.bytes.set([0xf9, 0xfc, 0x00], this.length);
      this.length += 3;
    } else {
      this.bytes[this.length] = 0xfb;
      this.view.setFloat64(this.length + 1, value);
      this.length += 9;
    }
  }

  text(value) {
    if (typeof value !== 'string') throw new CborError(`${value} is not text`);
    const encoded = TEXT_ENCODER.encode(value);
    this.head(3, encoded.length);
    this.raw(encoded);
  }

  /** A plain byte string (major type 2): never a typed-array tag. */
  byteString(value) {
    if (!(value instanceof Uint8Array)) throw new CborError('a byte string must be a Uint8Array');
    this.head(2, value.length);
    this.raw(value);
  }

  raw(bytes) {
    this.ensure(bytes.length);
    this.bytes.set(bytes, this.length);
    this.length += bytes.length;
  }

  boolean(value) {
    if (typeof value !== 'boolean') throw new CborError(`${value} is not a boolean`);
    this.ensure(1);
    this.bytes[this.length++] = value ? 0xf5 : 0xf4;
  }

  nil() {
    this.ensure(1);
    this.bytes[this.length++] = 0xf6;
  }

  arrayHead(count) {
    this.head(4, count);
  }

  mapHead(count) {
    this.head(5, count);
  }

  tag(number) {
    this.head(6, number);
  }
}

// Tags splitmq never carries and cbor2 would interpret (splitmq/wire/cbor.py refuses the
// same list): refused on sight, so the two sides accept the same language.
const REFUSED_TAGS = new Set([
  0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004, 55799,
]);

/**
 * Decode exactly one CBOR item from ``bytes``.
 *
 * Maps become objects with no prototype (text keys only), arrays become arrays, tags
 * become {@link Tagged}, byte strings views of ``bytes``, integers Numbers (BigInts past
 * 2^53), floats {@link CborFloat}.
 */
export function decodeCbor(bytes, { maxDepth = 32 } = {}) {
  if (!(bytes instanceof Uint8Array)) throw new CborError('CBOR input must be a Uint8Array');
  const reader = new Reader(bytes, maxDepth);
  const value = reader.item(0);
  const trailing = bytes.length - reader.pos;
  if (trailing) throw new CborError(`${trailing} trailing bytes after the CBOR message`);
  return value;
}

class Reader {
  constructor(bytes, maxDepth) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
    this.end = bytes.length;
    this.maxDepth = maxDepth;
  }

  need(count) {
    if (this.pos + count > this.end) {
      throw new CborError(
        `truncated CBOR: ${count} bytes needed at offset ${this.pos}, ${this.end - this.pos} left`,
      );
    }
  }

  argument(info) {
    const at = this.pos;
    if (info < 24) return info;
    if (info === 24) {
      this.need(1);
      this.pos += 1;
      return this.bytes[at];
    }
    if (info === 25) {
      this.need(2);
      this.pos += 2;
      return this.view.getUint16(at);
    }
    if (info === 26) {
      this.need(4);
      this.pos += 4;
      return this.view.getUint32(at);
    }
    if (info === 27) {
      this.need(8);
      this.pos += 8;
      const big = this.view.getBigUint64(at);
      return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
    }
    if (info === 31) {
      throw new CborError(
        `malformed CBOR: indefinite-length item at offset ${at - 1} ` +
          '(the wire format uses definite lengths only)',
      );
    }
    throw new CborError(`malformed CBOR: reserved additional information ${info}`);
  }

  length(info) {
    const value = this.argument(info);
    if (typeof value === 'bigint') throw new CborError(`a length of ${value} cannot fit`);
    return value;
  }

  nest(depth) {
    if (depth >= this.maxDepth) throw new CborError(`nesting deeper than ${this.maxDepth} levels`);
  }

  item(depth) {
    if (this.pos >= this.end) {
      throw new CborError(`truncated CBOR: an item expected at offset ${this.pos}`);
    }
    const initial = this.bytes[this.pos++];
    const major = initial >> 5;
    const info = initial & 31;
    switch (major) {
      case 0:
        return this.argument(info);
      case 1: {
        const value = this.argument(info);
        return typeof value === 'bigint' || value >= Number.MAX_SAFE_INTEGER
          ? -1n - BigInt(value)
          : -1 - value;
      }
      case 2: {
        const count = this.length(info);
        this.need(count);
        const start = this.pos;
        this.pos += count;
        return this.bytes.subarray(start, this.pos);
      }
      case 3: {
        const count = this.length(info);
        this.need(count);
        const start = this.pos;
        this.pos += count;
        try {
          return TEXT_DECODER.decode(this.bytes.subarray(start, this.pos));
        } catch {
          throw new CborError(`malformed CBOR: invalid UTF-8 at offset ${start}`);
        }
      }
      case 4: {
        this.nest(depth);
        const count = this.length(info);
        if (count > this.end - this.pos) {
          throw new CborError(`truncated CBOR: an array of ${count} items cannot fit`);
        }
        const out = new Array(count);
        for (let i = 0; i < count; i++) out[i] = this.item(depth + 1);
        return out;
      }
      case 5: {
        this.nest(depth);
        const count = this.length(info);
        if (count * 2 > this.end - this.pos) {
          throw new CborError(`truncated CBOR: a map of ${count} entries cannot fit`);
        }
        const out = Object.create(null);
        for (let i = 0; i < count; i++) {
          const key = this.item(depth + 1);
          if (typeof key !== 'string') {
            throw new CborError(`map keys must be text, got ${describe(key)}`);
          }
          if (Object.prototype.hasOwnProperty.call(out, key)) {
            throw new CborError(`malformed CBOR: duplicate map key ${JSON.stringify(key)}`);
          }
          out[key] = this.item(depth + 1);
        }
        return out;
      }
      case 6: {
        this.nest(depth);
        const number = this.argument(info);
        if (REFUSED_TAGS.has(number)) {
          throw new CborError(`CBOR tag ${number} is not part of the splitmq wire format`);
        }
        return new Tagged(number, this.item(depth + 1));
      }
      default:
        return this.simple(info);
    }
  }

  simple(info) {
    if (info === 20) return false;
    if (info === 21) return true;
    if (info === 22) return null;
    if (info === 25) {
      this.need(2);
      const value = float16(this.view.getUint16(this.pos));
      this.pos += 2;
      return new CborFloat(value);
    }
    if (info === 26) {
      this.need(4);
      const value = this.view.getFloat32(this.pos);
      this.pos += 4;
      return new CborFloat(value);
    }
    if (info === 27) {
      this.need(8);
      const value = this.view.getFloat64(this.pos);
      this.pos += 8;
      return new CborFloat(value);
    }
    if (info === 31) throw new CborError('malformed CBOR: a break byte outside an indefinite item');
    if (info >= 28) throw new CborError(`malformed CBOR: reserved additional information ${info}`);
    throw new CborError(`CBOR simple value ${info} is not part of the splitmq wire format`);
  }
}

/** An IEEE 754 half-precision value from its 16 bits. */
export function float16(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

export function describe(value) {
  if (value === null) return 'null';
  if (value instanceof Uint8Array) return 'a byte string';
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Tagged) return `tag ${value.tag}`;
  if (value instanceof CborFloat) return 'a float';
  if (typeof value === 'string') return 'text';
  if (typeof value === 'boolean') return 'a boolean';
  if (typeof value === 'bigint') return 'an integer';
  if (typeof value === 'number') return Number.isInteger(value) ? 'an integer' : 'a float';
  if (typeof value === 'object') return 'a map';
  return typeof value;
}
