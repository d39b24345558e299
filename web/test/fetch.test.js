// Shard fetch: progress, digest verification (WebCrypto and the fallback), refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, webcrypto } from 'node:crypto';

import { FetchError, httpShardFetcher, sha256Hex } from '../src/fetch.js';
import { sha256 } from '../src/sha256.js';

const hash = (bytes) => createHash('sha256').update(bytes).digest('hex');

test('the fallback SHA-256 agrees with node\'s on every padding boundary (FIPS 180-4)', () => {
  for (const length of [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 100_003]) {
    const bytes = new Uint8Array(length).map((_, i) => (i * 31 + 7) & 0xff);
    assert.equal(Buffer.from(sha256(bytes)).toString('hex'), hash(bytes), `length ${length}`);
  }
  assert.equal(Buffer.from(sha256(new TextEncoder().encode('abc'))).toString('hex'),
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'); // FIPS 180-2 example
});

function served(bytes, { status = 200, length = true, chunk = 1000 } = {}) {
  const requests = [];
  const fetchImpl = async (url) => {
    requests.push(url);
    let offset = 0;
    return {
      ok: status >= 200 && status < 300,
      status,
      headers: { get: (name) => (name === 'content-length' && length ? String(bytes.length) : null) },
      body: {
        getReader: () => ({
          read: async () => {
            if (offset >= bytes.length) return { done: true };
            const value = bytes.slice(offset, offset + chunk);
            offset += chunk;
            return { done: false, value };
          },
        }),
      },
    };
  };
  return { fetchImpl, requests };
}

test('a shard is fetched by its digest with progress and verified', async () => {
  const bytes = new Uint8Array(4500).map((_, i) => i & 0xff);
  for (const subtle of [webcrypto.subtle, null]) {
    const { fetchImpl, requests } = served(bytes);
    const progress = [];
    const fetchShard = httpShardFetcher('http://h/shards/{sha256}', { fetchImpl, subtle });
    const got = await fetchShard(hash(bytes), bytes.length, (received, total) => progress.push([received, total]));
    assert.deepEqual(got, bytes);
    assert.deepEqual(requests, [`http://h/shards/${hash(bytes)}`]);
    assert.deepEqual(progress.at(-1), [4500, 4500]);
    assert.equal(progress.length, 5);
  }
});

test('a shard whose bytes do not hash to its digest is refused', async () => {
  const bytes = new Uint8Array([1, 2, 3]);
  const { fetchImpl } = served(bytes);
  const fetchShard = httpShardFetcher('/shards/{sha256}', { fetchImpl, subtle: webcrypto.subtle });
  await assert.rejects(fetchShard('00'.repeat(32), 3), (error) => error instanceof FetchError && /digest mismatch/.test(error.message));
});

test('HTTP errors, a wrong size and a malformed digest are refused with the reason', async () => {
  const bytes = new Uint8Array([1, 2, 3]);
  const digest = hash(bytes);
  const missing = httpShardFetcher('/shards/{sha256}', { fetchImpl: served(bytes, { status: 404 }).fetchImpl });
  await assert.rejects(missing(digest, 3), /HTTP 404/);
  const short = httpShardFetcher('/shards/{sha256}', { fetchImpl: served(bytes, { length: false }).fetchImpl });
  await assert.rejects(short(digest, 4), /got 3 bytes, the load command said 4/);
  await assert.rejects(short('../../etc/passwd', 3), /not a sha256/);
  assert.equal(await sha256Hex(bytes, webcrypto.subtle), digest);
});
