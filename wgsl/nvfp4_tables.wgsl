// The table update between two NVFP4 search passes over a row sample, on the GPU, so the sample's passes chain in
// one submission with no round trip to the host. It computes exactly what src/nvfp4/search.ts does on the host
// between passes: the code lengths of the pass's histogram (src/quant/rate.ts codeLengths: integer arithmetic
// only) and the over-relaxed step from the old lengths, 2·new − old clamped to [0, 24 bits].
//
// One workgroup; invocation t < 143 owns histogram entry t (codes 0..15, then scale codes 0..126) and its length.
// Every index is below 143 or a table offset plus one: in range by construction (it runs without bounds clamping,
// src/gpu/device.ts DeviceChecks).

const CODE_ENTRIES: u32 = 16u;
const COUNT_WORDS: u32 = 143u;
// tables (wgsl/nvfp4_search.wgsl): code lengths at [1016, 1032), scale lengths right after.
const CODE_LENGTHS_AT: u32 = 1016u;
const LOG_MANTISSA_BITS: u32 = 24u;
const LOG_FRACTION_BITS: u32 = 7u;
// LOG_FRACTION_BITS − log2(LENGTH_UNIT = 32): fixed-point logs are rounded to length units by this shift.
const LENGTH_SHIFT: u32 = 2u;
const MAX_LENGTH: i32 = 768;  // 24 bits × 32 units

@group(0) @binding(0) var<storage, read> counts: array<u32, COUNT_WORDS>;
@group(0) @binding(1) var<storage, read_write> tables: array<u32>;

var<workgroup> totals: vec2<u32>;

// (a · b) >> 24 for a, b < 2^25 (a 50-bit product): 16-bit limbs, since WGSL has no 64-bit integers.
fn mulShift24(a: u32, b: u32) -> u32 {
  let a0 = a & 0xFFFFu;
  let a1 = a >> 16u;
  let b0 = b & 0xFFFFu;
  let b1 = b >> 16u;
  let p00 = a0 * b0;
  let p01 = a0 * b1;
  let p10 = a1 * b0;
  let middle = (p00 >> 16u) + (p01 & 0xFFFFu) + (p10 & 0xFFFFu);
  let low = (p00 & 0xFFFFu) | (middle << 16u);
  let high = a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (middle >> 16u);
  return (high << 8u) | (low >> 24u);
}

// ⌊log2(x) · 2^7⌋ for 1 ≤ x < 2^32: rate.ts log2Fixed, by repeated squaring on a 24-bit mantissa.
fn log2Fixed(x: u32) -> u32 {
  let exponent = 31u - countLeadingZeros(x);
  var mantissa = select(x >> (exponent - LOG_MANTISSA_BITS), x << (LOG_MANTISSA_BITS - exponent), exponent <= LOG_MANTISSA_BITS);
  var result = exponent;
  for (var bit = 0u; bit < LOG_FRACTION_BITS; bit++) {
    mantissa = mulShift24(mantissa, mantissa);
    result *= 2u;
    if (mantissa >= (1u << (LOG_MANTISSA_BITS + 1u))) {
      result += 1u;
      mantissa >>= 1u;
    }
  }
  return result;
}

@compute @workgroup_size(256)
fn update(@builtin(local_invocation_index) t: u32) {
  if (t == 0u) {
    var sums = vec2<u32>(0u);
    for (var i = 0u; i < COUNT_WORDS; i++) {
      if (i < CODE_ENTRIES) { sums.x += counts[i]; } else { sums.y += counts[i]; }
    }
    totals = sums;
  }
  workgroupBarrier();
  if (t < COUNT_WORDS) {
    // Both tables are codeLengths over 256 entries: the unused ones count 0 but their ½ smoothing stays in.
    let total = select(totals.y, totals.x, t < CODE_ENTRIES);
    let fixed = log2Fixed(2u * total + 256u) - log2Fixed(2u * counts[t] + 1u);
    let fresh = min(i32((fixed + (1u << (LENGTH_SHIFT - 1u))) >> LENGTH_SHIFT), MAX_LENGTH);
    let old = i32(tables[CODE_LENGTHS_AT + t]);
    tables[CODE_LENGTHS_AT + t] = u32(clamp(2 * fresh - old, 0, MAX_LENGTH));
  }
}
