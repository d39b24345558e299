// A decoded message as the plain JSON tests/web/golden.py writes (its ``plain``):
// bytes as {"$bytes": hex}, tensors with their little-endian bytes in hex, non-finite
// floats and integers past 2^53 as strings.
const PY_FLOAT = { NaN: 'nan', Infinity: 'inf', '-Infinity': '-inf' };

export function plain(value) {
  if (value instanceof Uint8Array) return { $bytes: Buffer.from(value).toString('hex') };
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number') {
    return Number.isFinite(value) ? value : PY_FLOAT[String(value)];
  }
  if (value !== null && typeof value === 'object') {
    if ('data' in value && 'dtype' in value && 'shape' in value) {
      const data = value.data;
      return {
        name: value.name,
        dtype: value.dtype,
        shape: value.shape,
        hex: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('hex'),
        scale: value.scale,
        zero_point: value.zero_point,
      };
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}
