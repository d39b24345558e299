// The tensor dtypes LiteRT.js can hand across a shard's boundary (its DType), with the
// typed array of each. Kept apart from runtime.js (which imports LiteRT.js) so the agent
// and node's tests read them without npm's tree.

export const SUPPORTED = new Map([['float32', Float32Array], ['int32', Int32Array], ['uint8', Uint8Array]]);

/** Those dtypes by name: the page declares them in its status, so the coordinator
 * places on it only stages whose boundaries carry them. */
export const TENSOR_DTYPES = Object.freeze([...SUPPORTED.keys()]);
