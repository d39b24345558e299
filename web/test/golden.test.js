// The golden vectors the Python codec wrote (tests/web/golden.py): every message kind
// and every tensor dtype decodes to what Python meant, and encodes back to the same bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import { decode, encode, MESSAGES } from '../src/messages.js';
import { plain } from './plain.js';

const GOLDEN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'golden');
const manifest = JSON.parse(readFileSync(path.join(GOLDEN, 'manifest.json'), 'utf-8'));
const names = readdirSync(GOLDEN).filter((f) => f.endsWith('.cbor')).map((f) => f.slice(0, -5));

test('the manifest and the vector files name the same vectors', () => {
  assert.deepEqual([...names].sort(), Object.keys(manifest).sort());
});

test('every message kind and every tensor dtype has a vector', () => {
  const kinds = new Set(Object.values(manifest).map((m) => m.kind));
  assert.deepEqual([...kinds].sort(), Object.keys(MESSAGES).sort());
  const dtypes = new Set(
    Object.values(manifest).flatMap((m) => (m.tensors ?? []).map((t) => t.dtype)),
  );
  for (const dtype of ['uint8', 'uint16', 'uint32', 'uint64', 'int8', 'int16', 'int32', 'int64',
    'float16', 'float32', 'float64', 'bool']) {
    assert.ok(dtypes.has(dtype), `no vector carries a ${dtype} tensor`);
  }
});

for (const name of names) {
  test(`golden ${name}: decodes to the Python message and encodes to the same bytes`, () => {
    const bytes = new Uint8Array(readFileSync(path.join(GOLDEN, `${name}.cbor`)));
    const message = decode(bytes);
    assert.deepEqual(plain(message), manifest[name]);
    const again = encode(message);
    assert.equal(Buffer.from(again).toString('hex'), Buffer.from(bytes).toString('hex'));
  });
}

test('golden tensors decode from unaligned offsets into aligned copies', () => {
  const bytes = new Uint8Array(readFileSync(path.join(GOLDEN, 'tensor_float64.cbor')));
  const shifted = new Uint8Array(bytes.length + 1).subarray(1);
  shifted.set(bytes);
  const [tensor] = decode(shifted).tensors;
  assert.equal(tensor.data.byteOffset % 8, 0);
  assert.deepEqual(plain(tensor), manifest.tensor_float64.tensors[0]);
});
