// eqz WASM codec: rANS coding of byte/nibble streams, byte planes of floats, byte histograms.
// The TypeScript bindings (src/codec/wasm.ts) own all memory above __heap_base; the fixed tables below it are
// laid out in layout.ts.

import { initRefillShuffles } from './rans-decode';
import { initPushShuffles } from './rans-encode';
import { DECODE_TABLES, FREQUENCIES } from './layout';

export { buildDecodeTable, decodeChunks, WORD_SLACK_BYTES } from './rans-decode';
export { buildEncodeTable, encodeChunks } from './rans-encode';
export { histogram } from './histogram';
export { extractPlane, mergePlanes } from './planes';

initRefillShuffles();
initPushShuffles();

/** First address the caller may use. */
export function heapBase(): usize {
  return __heap_base;
}
/** The DECODE_TABLE_SLOTS decode tables, 16 KiB each. */
export function decodeTables(): usize {
  return DECODE_TABLES;
}
/** Where the caller puts a stream's u32 frequencies before building a table. */
export function frequencies(): usize {
  return FREQUENCIES;
}
export { xxh32Stripes } from './xxh32';
export { eqz_decode_stream, EQZ_MALFORMED, EQZ_CORRUPT_STREAM, EQZ_LIMIT_EXCEEDED } from './abi';
