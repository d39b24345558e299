// Shards over HTTP: GET the shard by its sha256 with progress, verify the digest with
// WebCrypto before anyone loads it (with our own SHA-256 where the page is not a secure
// context and has no WebCrypto).

import { sha256 } from './sha256.js';

export class FetchError extends Error {
  constructor(digest, reason) {
    super(`cannot fetch shard ${digest.slice(0, 12)}: ${reason}`);
    this.name = 'FetchError';
    this.digest = digest;
  }
}

const HEX_DIGEST = /^[0-9a-f]{64}$/;

/** sha256 of ``bytes`` in hex: by WebCrypto, or by sha256.js where there is none. */
export async function sha256Hex(bytes, subtle = globalThis.crypto?.subtle) {
  const digest = subtle ? new Uint8Array(await subtle.digest('SHA-256', bytes)) : sha256(bytes);
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * A ``fetchShard(digest, sizeBytes, onProgress)`` for the agent: GET ``urlTemplate``
 * with ``{sha256}`` replaced, read it in chunks reporting (received, total), and
 * resolve to the bytes once their sha256 is the digest asked for.
 */
export function httpShardFetcher(urlTemplate, { fetchImpl = globalThis.fetch, subtle } = {}) {
  return async function fetchShard(digest, sizeBytes, onProgress = () => {}) {
    if (!HEX_DIGEST.test(digest)) throw new FetchError(digest, 'the digest is not a sha256 in hex');
    const url = urlTemplate.replace('{sha256}', digest);
    let response;
    try {
      response = await fetchImpl(url);
    } catch (error) {
      throw new FetchError(digest, `GET ${url} failed: ${error.message}`);
    }
    if (!response.ok) throw new FetchError(digest, `GET ${url}: HTTP ${response.status}`);
    const header = Number(response.headers.get('content-length'));
    const total = Number.isFinite(header) && header > 0 ? header : sizeBytes;
    const bytes = await readAll(response, total, onProgress);
    if (sizeBytes && bytes.length !== sizeBytes) {
      throw new FetchError(digest, `got ${bytes.length} bytes, the load command said ${sizeBytes}`);
    }
    const actual = await sha256Hex(bytes, subtle);
    if (actual !== digest) throw new FetchError(digest, `digest mismatch: the bytes served hash to ${actual.slice(0, 12)}`);
    return bytes;
  };
}

async function readAll(response, total, onProgress) {
  if (!response.body || !response.body.getReader) {
    const bytes = new Uint8Array(await response.arrayBuffer());
    onProgress(bytes.length, total);
    return bytes;
  }
  const reader = response.body.getReader();
  let buffer = new Uint8Array(total || 1 << 16);
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (received + value.length > buffer.length) {
      const grown = new Uint8Array(Math.max(buffer.length * 2, received + value.length));
      grown.set(buffer.subarray(0, received));
      buffer = grown;
    }
    buffer.set(value, received);
    received += value.length;
    onProgress(received, Math.max(total, received));
  }
  return buffer.slice(0, received);
}
