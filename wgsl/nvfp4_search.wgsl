// eqz's NVFP4 optimizer, one thread per block of 16 weights (src/nvfp4/search-kernel.ts is the definition this
// mirrors operation for operation, so both choose the same block scales and codes; read the "why" there).
//
// Each thread tries every block-scale code k = 0..126 (0: the zero scale), quantizes its 16 weights at k (nearest
// decoded value below or above, or the cheaper of the two under error + μ·length with rate–distortion optimised
// rounding), and keeps the k of least cost D + μ·L, the lowest k on a tie. Then it writes that k, the 16 codes
// packed as compressed-tensors' weight_packed (element 2j in the low nibble of byte j), and counts them.
// A second entry point, `update` (at the end), turns a pass's counts into the next pass's code lengths.
//
// Invariants kept here:
// - the decoded values come from the host table, so the only float operations are single correctly rounded
//   f32 −, × (never a product added to something: no fused multiply-add can change a result);
// - errors are capped at twice the block's binade 2^E, so scaled errors stay finite; squared errors are integers
//   (units 2^-24 of 2^(2E), each ≤ 2^26, a block's sum ≤ 2^30), so every difference of two sums fits an i32;
// - cost comparisons are integer against ceil/floor of one f32 product clamped into the i32 range;
// - subnormal weights are flushed to zero explicitly; a subnormal scaled error or square can only give 0 units;
// - every index is in range whatever the weights (codes < 16, scale codes k < 127, sign | index < 16, tid < 64,
//   block < block_count, which the bindings hold): the optimizer's device runs this without bounds clamping
//   (src/gpu/device.ts, DeviceChecks).

const WG: u32 = 64u;
const BLOCK: u32 = 16u;
const CANDIDATES: u32 = 127u;
// tables: [0, 1016) decoded magnitudes (f32 bits, k·8 + i), [1016, 1032) code lengths, [1032, 1159) scale lengths.
const CODE_LENGTHS_AT: u32 = 1016u;
const SCALE_LENGTHS_AT: u32 = 1032u;
const TABLE_WORDS: u32 = 1159u;
// counts: [0, 16) codes, [16, 143) scale codes.
const COUNT_WORDS: u32 = 143u;
const ERROR_UNITS: f32 = 16777216.0;
const PRODUCT_CLAMP: f32 = 2147483520.0;
const LAMBDA_CLAMP_EXPONENT: i32 = 90;

struct Params {
  block_count: u32,
  // λ per length unit (absolute squared error), an f32.
  lambda_per_length: f32,
  rdo: u32,
  write_result: u32,
}

@group(0) @binding(0) var<storage, read> weights: array<vec4<u32>>;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> tables: array<u32>;
@group(0) @binding(3) var<storage, read_write> scales: array<u32>;
@group(0) @binding(4) var<storage, read_write> packed: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> counts: array<atomic<u32>, COUNT_WORDS>;

var<workgroup> decoded: array<f32, 1016>;
var<workgroup> lengths: array<u32, 143>;
var<workgroup> local_counts: array<atomic<u32>, COUNT_WORDS>;

// v·2^e for a positive normal f32 v (or 0): exact, exponent clamped to 2^90 above, flushed to 0 below 2^-126.
fn ldexp_clamped(v: f32, e: i32) -> f32 {
  if (v == 0.0) { return 0.0; }
  let bits = bitcast<u32>(v);
  let exponent = i32(bits >> 23u) + e;
  if (exponent >= 127 + LAMBDA_CLAMP_EXPONENT) { return bitcast<f32>(u32(127 + LAMBDA_CLAMP_EXPONENT) << 23u); }
  if (exponent <= 0) { return 0.0; }
  return bitcast<f32>((u32(exponent) << 23u) | (bits & 0x7fffffu));
}

// Errors (≥ 0) beyond `cap` = 2^(E+1) count as `cap`, so the scaled value stays finite (≤ 2, square ≤ 4). A
// subnormal scaled error or square gives 0 units whether or not the device flushes it.
fn error_units(error: f32, to_unit: f32, cap: f32) -> i32 {
  let scaled = min(error, cap) * to_unit;
  return i32((scaled * scaled) * ERROR_UNITS);
}

fn clamped_product(mu: f32, delta: i32) -> f32 {
  return clamp(mu * f32(delta), -PRODUCT_CLAMP, PRODUCT_CLAMP);
}

// What a thread knows about its block while it tries the candidates. Everything the per-element work touches is
// a scalar or a vector indexed by constants (registers); the one table indexed by data, the rounding thresholds,
// lives in workgroup memory.
struct Block {
  to_unit: f32,
  cap: f32,
  mu: f32,
  rdo: bool,
  // This thread's column of `thresholds`.
  tid: u32,
}

struct Quad {
  units: i32,
  length: i32,
  // Four codes, four bits each, element j of the quad at bits 4j.
  codes: u32,
}

// Rounding up from magnitude index i (sign s) wins iff the error units drop by more than thresholds[(s·8 + i)·WG
// + tid] = floor(μ'·(len(up) − len(down))): the block's 14 rate differences, set once per block.
var<workgroup> thresholds: array<i32, 1024>;

// One element of magnitude a (sign bit `sign` = 0 or 8) at the candidate whose decoded magnitudes start at
// decoded[base]: the nearest decoded value below or above it (or the cheaper under error + μ·length).
fn element(block: Block, a: f32, sign: u32, base: u32, d2: f32, d4: f32, d6: f32) -> vec2<u32> {
  // Largest i with d[i] ≤ a (d[0] = 0 ≤ a): three exact comparisons.
  let at_least_4 = a >= d4;
  var index = select(0u, 4u, at_least_4);
  if (a >= select(d2, d6, at_least_4)) { index += 2u; }
  if (a >= decoded[base + index + 1u]) { index += 1u; }
  let low = a - decoded[base + index];
  var units = error_units(low, block.to_unit, block.cap);
  var code = select(sign | index, 0u, index == 0u);
  if (index < 7u) {
    let high = decoded[base + index + 1u] - a;
    let high_units = error_units(high, block.to_unit, block.cap);
    var up: bool;
    if (block.rdo) {
      up = units - high_units > thresholds[(sign | index) * WG + block.tid];
    } else {
      up = high < low;
    }
    if (up) {
      units = high_units;
      code = sign | (index + 1u);
    }
  }
  return vec2<u32>(u32(units), code);
}

// Four elements (magnitudes v, sign bits in the low four bits of `negative`).
fn quad(block: Block, v: vec4<f32>, negative: u32, base: u32, d2: f32, d4: f32, d6: f32) -> Quad {
  let e0 = element(block, v.x, (negative & 1u) << 3u, base, d2, d4, d6);
  let e1 = element(block, v.y, ((negative >> 1u) & 1u) << 3u, base, d2, d4, d6);
  let e2 = element(block, v.z, ((negative >> 2u) & 1u) << 3u, base, d2, d4, d6);
  let e3 = element(block, v.w, ((negative >> 3u) & 1u) << 3u, base, d2, d4, d6);
  let units = i32(e0.x) + i32(e1.x) + i32(e2.x) + i32(e3.x);
  let length = i32(lengths[e0.y] + lengths[e1.y] + lengths[e2.y] + lengths[e3.y]);
  return Quad(units, length, e0.y | (e1.y << 4u) | (e2.y << 8u) | (e3.y << 12u));
}

struct Cost {
  distortion: i32,
  length: i32,
  // Codes 0..7 and 8..15, four bits each (element j at bits 4·(j mod 8)).
  codes_low: u32,
  codes_high: u32,
}

@compute @workgroup_size(WG)
fn search(@builtin(global_invocation_id) id: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  for (var i = tid; i < 1016u; i += WG) { decoded[i] = bitcast<f32>(tables[i]); }
  for (var i = tid; i < 143u; i += WG) {
    lengths[i] = tables[CODE_LENGTHS_AT + i];
    atomicStore(&local_counts[i], 0u);
  }
  workgroupBarrier();

  let index = id.x;
  if (index < params.block_count) {
    // Magnitudes (subnormals flushed), sign bits, and the binade of the absmax.
    var m: array<vec4<f32>, 4>;
    var max_bits = 0u;
    var negative = 0u;
    for (var q = 0u; q < 4u; q++) {
      let word = weights[index * 4u + q];
      let magnitude_bits = word & vec4<u32>(0x7fffffffu);
      let normal = magnitude_bits >= vec4<u32>(0x00800000u);
      m[q] = select(vec4<f32>(0.0), bitcast<vec4<f32>>(magnitude_bits), normal);
      let sign_bits = select(vec4<u32>(0u), word >> vec4<u32>(31u), normal);
      negative |= (sign_bits.x | (sign_bits.y << 1u) | (sign_bits.z << 2u) | (sign_bits.w << 3u)) << (4u * q);
      let largest = max(max(select(0u, magnitude_bits.x, normal.x), select(0u, magnitude_bits.y, normal.y)),
                        max(select(0u, magnitude_bits.z, normal.z), select(0u, magnitude_bits.w, normal.w)));
      max_bits = max(max_bits, largest);
    }
    let m0 = m[0];
    let m1 = m[1];
    let m2 = m[2];
    let m3 = m[3];
    var exponent = 0;
    if (max_bits != 0u) { exponent = clamp(i32(max_bits >> 23u) - 127, -126, 126); }
    var block: Block;
    block.to_unit = bitcast<f32>(u32(127 - exponent) << 23u);
    block.cap = bitcast<f32>(u32(128 + exponent) << 23u);
    block.mu = ldexp_clamped(params.lambda_per_length, 24 - 2 * exponent);
    block.rdo = params.rdo == 1u;
    block.tid = tid;
    for (var sign = 0u; sign <= 8u; sign += 8u) {
      for (var i = 0u; i < 7u; i++) {
        let down = select(sign | i, 0u, i == 0u);
        let delta = i32(lengths[sign | (i + 1u)]) - i32(lengths[down]);
        thresholds[(sign | i) * WG + tid] = i32(floor(clamped_product(block.mu, delta)));
      }
    }

    // Candidate 0, the zero scale: every code 0, the error is the weight itself.
    var zero_units = vec4<i32>(0);
    for (var q = 0u; q < 4u; q++) {
      let v = m[q];
      zero_units += vec4<i32>(error_units(v.x, block.to_unit, block.cap), error_units(v.y, block.to_unit, block.cap),
                              error_units(v.z, block.to_unit, block.cap), error_units(v.w, block.to_unit, block.cap));
    }
    var best = Cost(zero_units.x + zero_units.y + zero_units.z + zero_units.w, i32(lengths[16u] + BLOCK * lengths[0]), 0u, 0u);
    var best_k = 0u;
    for (var k = 1u; k < CANDIDATES; k++) {
      let base = k * 8u;
      let d2 = decoded[base + 2u];
      let d4 = decoded[base + 4u];
      let d6 = decoded[base + 6u];
      let q0 = quad(block, m0, negative, base, d2, d4, d6);
      let q1 = quad(block, m1, negative >> 4u, base, d2, d4, d6);
      let q2 = quad(block, m2, negative >> 8u, base, d2, d4, d6);
      let q3 = quad(block, m3, negative >> 12u, base, d2, d4, d6);
      let distortion = q0.units + q1.units + q2.units + q3.units;
      let length = i32(lengths[16u + k]) + q0.length + q1.length + q2.length + q3.length;
      let threshold = i32(ceil(clamped_product(block.mu, best.length - length)));
      if (distortion - best.distortion < threshold) {
        best = Cost(distortion, length, q0.codes | (q1.codes << 16u), q2.codes | (q3.codes << 16u));
        best_k = k;
      }
    }
    atomicAdd(&local_counts[16u + best_k], 1u);
    for (var j = 0u; j < 8u; j++) {
      atomicAdd(&local_counts[(best.codes_low >> (4u * j)) & 15u], 1u);
      atomicAdd(&local_counts[(best.codes_high >> (4u * j)) & 15u], 1u);
    }
    if (params.write_result == 1u) {
      scales[index] = best_k;
      // weight_packed bytes of this block as two little-endian words: element 2j low nibble of byte j.
      packed[index] = vec2<u32>(best.codes_low, best.codes_high);
    }
  }
  workgroupBarrier();
  for (var i = tid; i < COUNT_WORDS; i += WG) {
    let count = atomicLoad(&local_counts[i]);
    if (count != 0u) { atomicAdd(&counts[i], count); }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Entry point `update`: the table update between two search passes over a row sample, on the GPU, so the
// sample's passes chain in one submission with no round trip to the host. It computes exactly what
// src/nvfp4/search.ts does on the host between passes: the code lengths of the pass's histogram
// (src/quant/rate.ts codeLengths: integer arithmetic only) and the over-relaxed step from the old lengths,
// 2·new − old clamped to [0, 24 bits]. It shares the table layout above; its bindings are its own (6, 7).
//
// One workgroup; invocation t < 143 owns histogram entry t (codes 0..15, then scale codes 0..126) and its length.
// Every index is below 143 or a table offset plus one: in range by construction, like the search's.

const CODE_ENTRIES: u32 = 16u;
const LOG_MANTISSA_BITS: u32 = 24u;
const LOG_FRACTION_BITS: u32 = 7u;
// LOG_FRACTION_BITS − log2(LENGTH_UNIT = 32): fixed-point logs are rounded to length units by this shift.
const LENGTH_SHIFT: u32 = 2u;
const MAX_LENGTH: i32 = 768;  // 24 bits × 32 units

@group(0) @binding(6) var<storage, read> pass_counts: array<u32, COUNT_WORDS>;
@group(0) @binding(7) var<storage, read_write> next_tables: array<u32>;

var<workgroup> totals: vec2<u32>;

// (a · b) >> 24 for a, b < 2^25 (a 50-bit product): 16-bit limbs, since WGSL has no 64-bit integers.
fn mul_shift_24(a: u32, b: u32) -> u32 {
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
fn log2_fixed(x: u32) -> u32 {
  let exponent = 31u - countLeadingZeros(x);
  var mantissa = select(x >> (exponent - LOG_MANTISSA_BITS), x << (LOG_MANTISSA_BITS - exponent), exponent <= LOG_MANTISSA_BITS);
  var result = exponent;
  for (var bit = 0u; bit < LOG_FRACTION_BITS; bit++) {
    mantissa = mul_shift_24(mantissa, mantissa);
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
      if (i < CODE_ENTRIES) { sums.x += pass_counts[i]; } else { sums.y += pass_counts[i]; }
    }
    totals = sums;
  }
  workgroupBarrier();
  if (t < COUNT_WORDS) {
    // Both tables are codeLengths over 256 entries: the unused ones count 0 but their ½ smoothing stays in.
    let total = select(totals.y, totals.x, t < CODE_ENTRIES);
    let fixed = log2_fixed(2u * total + 256u) - log2_fixed(2u * pass_counts[t] + 1u);
    let fresh = min(i32((fixed + (1u << (LENGTH_SHIFT - 1u))) >> LENGTH_SHIFT), MAX_LENGTH);
    let old = i32(next_tables[CODE_LENGTHS_AT + t]);
    next_tables[CODE_LENGTHS_AT + t] = u32(clamp(2 * fresh - old, 0, MAX_LENGTH));
  }
}
