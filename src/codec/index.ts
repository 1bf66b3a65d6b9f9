/**
 * The eqz codec: rANS-coded streams (spec/eqz.md §6), the lossless planes encoding, frequency
 * tables, and XXH32. Call `await initCodec()` once per thread (main thread or worker); everything else is
 * synchronous. No Node-only imports: this module runs in browsers too. The worker pool is in ./pool.js (Node).
 */
export { initCodec, codecReady } from './wasm.js';
export { decodeStream, type DecodedStream, type DecodeStreamOptions } from './stream-decode.js';
export { encodeStream, type EncodeStreamOptions } from './stream-encode.js';
export {
  parseRansLayout, parseStreamHeader, type RansLayout, type StreamContext, type StreamHeader, type StreamMode,
  type SymbolBits,
} from './stream-format.js';
export {
  decodePlanes, decodePlanesRange, encodeLossless, encodePlanes, planesWidth, preparePlanes, type LosslessPayload,
  type PlanesDecoder,
} from './planes.js';
export {
  CHUNK_OVERHEAD_BUDGET, chooseChunkLog2, codedSizeBits, entropyBitsPerSymbol, normalizeFrequencies,
} from './frequencies.js';
export { Xxh32, xxh32 } from './xxh32.js';
export {
  CHUNK_OVERHEAD_BYTES, LANES, MAX_CHUNK_LOG2, MIN_CHUNK_LOG2, PROB_SCALE, STATE_LOW, STREAM_HEADER_SIZE,
} from './constants.js';
