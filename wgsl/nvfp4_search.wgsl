// eqz's NVFP4 optimizer, one thread per block of 16 weights (src/nvfp4/search-kernel.ts is the definition this
// mirrors operation for operation, so both choose the same block scales and codes; read the "why" there).
//
// Each thread tries every block-scale code k = 0..126 (0: the zero scale), quantizes its 16 weights at k (nearest
// decoded value below or above, or the cheaper of the two under error + μ·length with rate–distortion optimised
// rounding), and keeps the k of least cost D + μ·L, the lowest k on a tie. Then it writes that k, the 16 codes
// packed as compressed-tensors' weight_packed (element 2j in the low nibble of byte j), and counts them.
//
// Invariants kept here:
// - the decoded values come from the host table, so the only float operations are single correctly rounded
//   f32 −, × (never a product added to something: no fused multiply-add can change a result);
// - errors are capped at twice the block's binade 2^E, so scaled errors stay finite; squared errors are integers
//   (units 2^-24 of 2^(2E), each ≤ 2^26, a block's sum ≤ 2^30), so every difference of two sums fits an i32;
// - cost comparisons are integer against ceil/floor of one f32 product clamped into the i32 range;
// - subnormal weights are flushed to zero explicitly; a subnormal scaled error or square can only give 0 units.

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

struct Block {
  magnitudes: array<f32, 16>,
  negative: u32,
  to_unit: f32,
  cap: f32,
  mu: f32,
  // Rounding up from magnitude index i (sign s) wins iff the error units drop by more than up_threshold[s·8 + i]
  // = floor(μ'·(len(up) − len(down))), computed once per block.
  up_threshold: array<i32, 16>,
}

struct Cost {
  distortion: i32,
  length: i32,
  // Codes 0..7 and 8..15, four bits each (element j at bits 4·(j mod 8)).
  codes_low: u32,
  codes_high: u32,
}

fn evaluate(block: ptr<function, Block>, k: u32) -> Cost {
  var distortion = 0;
  var length = i32(lengths[16u + k]);
  var codes_low = 0u;
  var codes_high = 0u;
  if (k == 0u) {
    for (var j = 0u; j < BLOCK; j++) {
      distortion += error_units((*block).magnitudes[j], (*block).to_unit, (*block).cap);
    }
    return Cost(distortion, length + i32(BLOCK * lengths[0]), 0u, 0u);
  }
  let base = k * 8u;
  let d4 = decoded[base + 4u];
  let rdo = params.rdo == 1u;
  for (var j = 0u; j < BLOCK; j++) {
    let a = (*block).magnitudes[j];
    let sign = (((*block).negative >> j) & 1u) << 3u;
    // Largest i with d[i] ≤ a (d[0] = 0 ≤ a): three exact comparisons.
    var index = select(0u, 4u, a >= d4);
    if (a >= decoded[base + index + 2u]) { index += 2u; }
    if (a >= decoded[base + index + 1u]) { index += 1u; }
    let low = a - decoded[base + index];
    var units = error_units(low, (*block).to_unit, (*block).cap);
    var code = select(sign | index, 0u, index == 0u);
    if (index < 7u) {
      let high = decoded[base + index + 1u] - a;
      let high_units = error_units(high, (*block).to_unit, (*block).cap);
      var up: bool;
      if (rdo) {
        up = units - high_units > (*block).up_threshold[sign | index];
      } else {
        up = high < low;
      }
      if (up) {
        units = high_units;
        code = sign | (index + 1u);
      }
    }
    distortion += units;
    length += i32(lengths[code]);
    if (j < 8u) {
      codes_low |= code << (4u * j);
    } else {
      codes_high |= code << (4u * (j - 8u));
    }
  }
  return Cost(distortion, length, codes_low, codes_high);
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
    var block: Block;
    var max_bits = 0u;
    var negative = 0u;
    for (var q = 0u; q < 4u; q++) {
      let word = weights[index * 4u + q];
      for (var c = 0u; c < 4u; c++) {
        let bits = word[c];
        let magnitude_bits = bits & 0x7fffffffu;
        let normal = magnitude_bits >= 0x00800000u;
        let j = q * 4u + c;
        block.magnitudes[j] = select(0.0, bitcast<f32>(magnitude_bits), normal);
        if (normal && (bits >> 31u) == 1u) { negative |= 1u << j; }
        if (normal && magnitude_bits > max_bits) { max_bits = magnitude_bits; }
      }
    }
    var exponent = 0;
    if (max_bits != 0u) { exponent = clamp(i32(max_bits >> 23u) - 127, -126, 126); }
    block.negative = negative;
    block.to_unit = bitcast<f32>(u32(127 - exponent) << 23u);
    block.cap = bitcast<f32>(u32(128 + exponent) << 23u);
    block.mu = ldexp_clamped(params.lambda_per_length, 24 - 2 * exponent);
    for (var sign = 0u; sign <= 8u; sign += 8u) {
      for (var i = 0u; i < 7u; i++) {
        let down = select(sign | i, 0u, i == 0u);
        let delta = i32(lengths[sign | (i + 1u)]) - i32(lengths[down]);
        block.up_threshold[sign | i] = i32(floor(clamped_product(block.mu, delta)));
      }
    }

    var best = evaluate(&block, 0u);
    var best_k = 0u;
    for (var k = 1u; k < CANDIDATES; k++) {
      let cost = evaluate(&block, k);
      let threshold = i32(ceil(clamped_product(block.mu, best.length - cost.length)));
      if (cost.distortion - best.distortion < threshold) {
        best = cost;
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
