// NVFP4 dequantization (spec/eqz.md §7.6) for decode.wgsl, included in place of its per-row scales when the host
// sets NVFP4. The stream is a tensor's code stream: E2M1 codes one a symbol (SYMBOL_BITS 4, SYMBOL_ELEMENTS 1), or
// the packed bytes (SYMBOL_BITS 8, SYMBOL_ELEMENTS 2: element 2j in the low nibble of symbol j). Each block of 16
// elements has an E4M3 block scale, which an earlier dispatch of the same pass decoded from the tensor's
// block-scale stream into `blockScales`; the tensor's m = RNE_f32(1 / global_scale) comes in the stream
// descriptor, computed on the host because WGSL's division is not correctly rounded.
//
//     y = RNE_T( mul32( e2m1(code) × e4m3(block scale), m ) )
//
// The first product is exact in f32 (at most 6 significant bits, magnitude 0 or in [2^-10, 2688]); the second is
// the one rounding, its magnitude 0 or in [2^-42, 2^44): normal, so no flushing of subnormals matters.

/** Elements per block scale. */
const NVFP4_BLOCK = 16u;

/** The dispatch's decoded block scales, one E4M3 byte per block; a stream's `scales` is the byte of its block 0. */
@group(0) @binding(3) var<storage, read> blockScales: array<u32>;

/** Where a lane's next symbol lies: its index in the stream, which gives its block. */
struct Cursor {
  symbol: u32,
}

fn startCursor(symbol: u32, stream: Stream) -> Cursor {
  return Cursor(symbol);
}

/** Moves a lane's cursor one chunk row (32 symbols) on. */
fn advanceCursor(cursor: ptr<function, Cursor>, stream: Stream) {
  (*cursor).symbol += LANES;
}

/** f32 bits of E2M1 code `code`: sign bit 3, magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6. */
fn e2m1Bits(code: u32) -> u32 {
  let magnitude = code & 7u;
  // From index 2 on, magnitude i is (1 + (i & 1) / 2) × 2^((i >> 1) − 1): exponent field (i >> 1) + 126.
  let normal = (((magnitude >> 1u) + 126u) << 23u) | ((magnitude & 1u) << 22u);
  let small = select(0u, 0x3F000000u, magnitude == 1u);
  return ((code & 8u) << 28u) | select(normal, small, magnitude < 2u);
}

/** The output bits of one element: E2M1 code `code` in a block of scale `blockScale`, times m. */
fn nvfp4Element(code: u32, blockScale: f32, reciprocal: f32) -> u32 {
  let exact = bitcast<f32>(e2m1Bits(code)) * blockScale;
  return outputBits(bitcast<u32>(exact * reciprocal));
}

/**
 * The output bits of `symbol` at `cursor`: one element, or (SYMBOL_ELEMENTS 2) two, low nibble first; two F32
 * elements take .x and .y, two 16-bit ones share .x.
 */
fn symbolOutput(symbol: u32, cursor: Cursor, stream: Stream) -> vec2<u32> {
  // A symbol's elements share a block: blocks start at even elements.
  let scaleByte = stream.scales + cursor.symbol / (NVFP4_BLOCK / SYMBOL_ELEMENTS);
  let scaleCode = (blockScales[scaleByte >> 2u] >> ((scaleByte & 3u) << 3u)) & 0xFFu;
  let blockScale = bitcast<f32>(codeValues[scaleCode]);
  if (SYMBOL_ELEMENTS == 1u) {
    return vec2<u32>(nvfp4Element(symbol, blockScale, stream.reciprocal), 0u);
  }
  let low = nvfp4Element(symbol & 0xFu, blockScale, stream.reciprocal);
  let high = nvfp4Element(symbol >> 4u, blockScale, stream.reciprocal);
  if (OUTPUT_FORMAT == FORMAT_F32) {
    return vec2<u32>(low, high);
  }
  return vec2<u32>(low | (high << 16u), 0u);
}
