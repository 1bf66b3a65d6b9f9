// The search optimizer's per-row kernels (src/quant/search-kernel.ts is the definition this mirrors, operation
// for operation, so both give identical codes and scales; read the "why" there).
//
// One workgroup per row. `row_stats`: |w| max and Σ w² (exact fixed point) per row. `search`: rounds of
// candidate scales, four candidates per sweep over the row (every thread sums its elements' fixed-point squared
// errors and code lengths for the four, a tree reduction in workgroup memory adds them up exactly); the best
// candidate of a round (every invocation scans them identically) centres the next; then the row's codes at the
// chosen scale, packed four to a u32, and their histogram.
//
// Invariants kept here:
// - every decision uses exact values or one correctly rounded f32 +, −, ×; possibly-subnormal results are
//   flushed explicitly (`flush`), so a GPU that flushes subnormals agrees with the CPU;
// - no value can be infinite (λ is clamped to 2^90, errors to 2^41 per element);
// - integer sums are exact: 64-bit (hi, lo) pairs with explicit carries;
// - every index is in range whatever the weights: grid indices are clamped to max_index < 128 (guess_index),
//   candidate slots to the host-checked round sizes (≤ 8 rounds of ≤ 16), rows to the dispatch; the optimizer's
//   device runs this without bounds clamping (src/gpu/device.ts, DeviceChecks).

const WG: u32 = 128u;
const MAX_CANDIDATES: u32 = 16u;
const NO_INITIAL_INDEX: u32 = 0xffffffffu;
const UNIT_SCALE_INDEX: u32 = 0x3f80u;
const LAMBDA_CLAMP_EXPONENT: i32 = 90;
// Fixed point: squared errors in 2^-32 units (clamped at 2^41 = hi 512), row squares in 2^-40 units.
const ERROR_CLAMP_HI: u32 = 512u;
const SQUARES_SHIFT: i32 = 40;

// Candidates centre + offset·step, offset = first, first + 1, … (count of them, a multiple of 4), skipping 0
// when skip_centre (the centre is then the incumbent carried over with its cost); see search-kernel.ts.
struct Round {
  first: i32,
  count: u32,
  step: u32,
  skip_centre: u32,
}

struct Params {
  cols: u32,
  // First row of this dispatch in the tensor (indices are per tensor; weights and codes per chunk).
  row_base: u32,
  is_int8: u32,
  max_index: u32,
  rdo: u32,
  initial_index: u32,
  range_low: u32,
  range_high: u32,
  lambda_per_length: f32,
  round_count: u32,
  write_codes: u32,
  unused: u32,
  rounds: array<Round, 8>,
}

@group(0) @binding(0) var<storage, read> weights: array<u32>;
@group(0) @binding(1) var<uniform> params: Params;
// [0, 256): code lengths; [256, 384): grid values; [384, 512): midpoints; [512, 640): doubled gaps (f32 bits).
@group(0) @binding(2) var<storage, read> tables: array<u32>;
@group(0) @binding(3) var<storage, read_write> indices: array<u32>;
@group(0) @binding(4) var<storage, read_write> codes: array<u32>;
@group(0) @binding(5) var<storage, read_write> counts: array<atomic<u32>, 256>;
@group(0) @binding(6) var<storage, read_write> stats: array<u32>;

// Code length by (sign, magnitude index): [0, 128) positive, [128, 256) negative (index 0 is +0 in both).
var<workgroup> lengths: array<u32, 256>;
var<workgroup> grid_values: array<f32, 128>;
var<workgroup> grid_midpoints: array<f32, 128>;
var<workgroup> grid_gaps: array<f32, 128>;
var<workgroup> reduce_hi: array<vec4<u32>, WG>;
var<workgroup> reduce_lo: array<vec4<u32>, WG>;
var<workgroup> reduce_len: array<vec4<u32>, WG>;
var<workgroup> candidate_index: array<u32, MAX_CANDIDATES>;
var<workgroup> candidate_hi: array<u32, MAX_CANDIDATES>;
var<workgroup> candidate_lo: array<u32, MAX_CANDIDATES>;
var<workgroup> candidate_len: array<u32, MAX_CANDIDATES>;
var<workgroup> row_max: u32;
var<workgroup> local_counts: array<atomic<u32>, 256>;

fn pow2(e: i32) -> f32 {
  return bitcast<f32>(u32(e + 127) << 23u);
}

fn flush(x: f32) -> f32 {
  return select(x, 0.0, abs(x) < bitcast<f32>(0x00800000u));
}

// |w| with subnormals flushed to zero.
fn magnitude_of(bits: u32) -> f32 {
  let m = bits & 0x7fffffffu;
  return select(bitcast<f32>(m), 0.0, m < 0x00800000u);
}

// v·2^e for v positive normal or 0: exact, clamped to 2^90, flushed below 2^-126.
fn ldexp_clamped(v: f32, e: i32) -> f32 {
  if (v == 0.0) { return 0.0; }
  let bits = bitcast<u32>(v);
  let exponent = i32(bits >> 23u) + e;
  if (exponent >= 127 + LAMBDA_CLAMP_EXPONENT) { return pow2(LAMBDA_CLAMP_EXPONENT); }
  if (exponent <= 0) { return 0.0; }
  return bitcast<f32>((u32(exponent) << 23u) | (bits & 0x7fffffu));
}

// ⌊x·2^32⌋ for 0 ≤ x (an f32) as (hi, lo) = (⌊x⌋, ⌊frac(x)·2^32⌋): exact — the fraction of an f32 is an
// f32, scaling it by 2^32 is exact, and the conversion truncates — and clamped at 2^41 (hi 512).
fn error_fixed(x: f32) -> vec2<u32> {
  let whole = floor(x);
  if (whole >= f32(ERROR_CLAMP_HI)) { return vec2<u32>(ERROR_CLAMP_HI, 0u); }
  return vec2<u32>(u32(whole), u32((x - whole) * 4294967296.0));
}

// ⌊x·2^shift⌋ for x ≥ 0 an f32 (normal or 0), as (hi, lo); the result must stay below 2^55.
fn to_fixed(x: f32, shift: i32) -> vec2<u32> {
  let bits = bitcast<u32>(x);
  if (bits < 0x00800000u) { return vec2<u32>(0u, 0u); }
  let m = (bits & 0x7fffffu) | 0x800000u;
  let s = i32(bits >> 23u) - 150 + shift;
  if (s <= -24) { return vec2<u32>(0u, 0u); }
  if (s < 0) { return vec2<u32>(0u, m >> u32(-s)); }
  if (s == 0) { return vec2<u32>(0u, m); }
  return vec2<u32>(m >> u32(32 - s), m << u32(s));
}

fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
  let lo = a.y + b.y;
  return vec2<u32>(a.x + b.x + select(0u, 1u, lo < b.y), lo);
}

// A u64 truncated to its 24 leading bits, as an exact f32.
fn u64_to_f32(v: vec2<u32>) -> f32 {
  if (v.x == 0u) {
    if (v.y < 0x1000000u) { return f32(v.y); }
    let shift = 8u - countLeadingZeros(v.y);
    return f32(v.y >> shift) * pow2(i32(shift));
  }
  let shift = 40u - countLeadingZeros(v.x);
  var top: u32;
  if (shift >= 32u) { top = v.x >> (shift - 32u); } else { top = (v.x << (32u - shift)) | (v.y >> shift); }
  return f32(top) * pow2(i32(shift));
}

fn i32_to_f32(v: i32) -> f32 {
  let magnitude = u64_to_f32(vec2<u32>(0u, u32(abs(v))));
  return select(magnitude, -magnitude, v < 0);
}

fn code_of(index: u32, negative: bool) -> u32 {
  if (!negative || index == 0u) { return index; }
  return select(0x80u | index, 256u - index, params.is_int8 == 1u);
}

// An estimate of the grid index at or below t ≥ 0 (within one of it).
fn guess_index(t: f32) -> u32 {
  if (params.is_int8 == 1u) { return min(u32(t), params.max_index); }
  if (t < 0.015625) { return u32(t * 512.0); }
  let bits = bitcast<u32>(t);
  let exponent = (bits >> 23u) - 120u;
  return min((exponent << 3u) | ((bits >> 20u) & 7u), params.max_index);
}

// The magnitude index for `scaled` (= |w|·2^-x) at scale mantissa `mantissa`, and its code length; see
// search-kernel.ts chooseIndex. `side` is 128 for a negative weight, 0 otherwise (the lengths table half).
fn choose_index(side: u32, scaled: f32, mantissa: f32, inverse: f32, lambda_relative: f32) -> vec2<u32> {
  var index = guess_index(scaled * inverse);
  if (index < params.max_index && scaled >= grid_values[index + 1u] * mantissa) {
    index = index + 1u;
  } else if (index > 0u && scaled < grid_values[index] * mantissa) {
    index = index - 1u;
  }
  let low_length = lengths[side + index];
  if (index == params.max_index) { return vec2<u32>(index, low_length); }
  let high_length = lengths[side + index + 1u];
  let offset = scaled - grid_midpoints[index] * mantissa;
  let error_gain = offset * (grid_gaps[index] * mantissa);
  let rate_gain = lambda_relative * f32(i32(high_length) - i32(low_length));
  let round_down = error_gain < rate_gain || (error_gain == rate_gain && (index & 1u) == 0u);
  return select(vec2<u32>(index + 1u, high_length), vec2<u32>(index, low_length), round_down);
}

fn load_tables(tid: u32) {
  for (var i = tid; i < 256u; i += WG) { lengths[i] = tables[code_of(i & 127u, i >= 128u)]; }
  if (tid < 128u) {
    grid_values[tid] = bitcast<f32>(tables[256u + tid]);
    grid_midpoints[tid] = bitcast<f32>(tables[384u + tid]);
    grid_gaps[tid] = bitcast<f32>(tables[512u + tid]);
  }
}

// The row's largest flushed |w| (f32 bits), the same in every invocation.
fn row_abs_max(tid: u32, start: u32) -> u32 {
  var m = 0u;
  for (var i = tid; i < params.cols; i += WG) {
    let bits = weights[start + i] & 0x7fffffffu;
    if (bits >= 0x00800000u) { m = max(m, bits); }
  }
  reduce_lo[tid].x = m;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (tid < stride) { reduce_lo[tid].x = max(reduce_lo[tid].x, reduce_lo[tid + stride].x); }
    workgroupBarrier();
  }
  if (tid == 0u) { row_max = reduce_lo[0].x; }
  return workgroupUniformLoad(&row_max);
}

// Adds four (hi, lo) u64 sums and four u32 lengths over the workgroup; the totals are in reduce_*[0] afterwards.
fn reduce_sums(tid: u32, hi: vec4<u32>, lo: vec4<u32>, len: vec4<u32>) {
  reduce_hi[tid] = hi;
  reduce_lo[tid] = lo;
  reduce_len[tid] = len;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (tid < stride) {
      let other_lo = reduce_lo[tid + stride];
      let sum_lo = reduce_lo[tid] + other_lo;
      reduce_hi[tid] = reduce_hi[tid] + reduce_hi[tid + stride] + select(vec4<u32>(0u), vec4<u32>(1u), sum_lo < other_lo);
      reduce_lo[tid] = sum_lo;
      reduce_len[tid] = reduce_len[tid] + reduce_len[tid + stride];
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn row_stats(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let row = group.x;
  let start = row * params.cols;
  let max_bits = row_abs_max(tid, start);
  var sum = vec2<u32>(0u, 0u);
  if (max_bits != 0u) {
    let to_unit = pow2(127 - i32(max_bits >> 23u));
    for (var i = tid; i < params.cols; i += WG) {
      let scaled = magnitude_of(weights[start + i]) * to_unit;
      sum = add64(sum, to_fixed(flush(scaled * scaled), SQUARES_SHIFT));
    }
  }
  workgroupBarrier();
  reduce_sums(tid, vec4<u32>(sum.x, 0u, 0u, 0u), vec4<u32>(sum.y, 0u, 0u, 0u), vec4<u32>(0u));
  if (tid == 0u) {
    let out = 3u * (params.row_base + row);
    stats[out] = max_bits;
    stats[out + 1u] = reduce_hi[0].x;
    stats[out + 2u] = reduce_lo[0].x;
  }
}

// The smallest scale index that does not clip the row's absmax, and the one beyond which all codes are zero.
fn row_bounds(max_bits: u32) -> vec2<u32> {
  let abs_max = bitcast<f32>(max_bits);
  let max_value = grid_values[params.max_index];
  let guess = i32(max_bits >> 16u) - i32(bitcast<u32>(max_value) >> 16u) + i32(UNIT_SCALE_INDEX);
  var low = u32(clamp(guess, i32(params.range_low), i32(params.range_high)));
  while (low < params.range_high && bitcast<f32>(low << 16u) * max_value < abs_max) { low += 1u; }
  while (low > params.range_low && bitcast<f32>((low - 1u) << 16u) * max_value >= abs_max) { low -= 1u; }
  let exponent = i32(max_bits >> 23u) - 127;
  let high = u32(exponent + 127 + select(11, 2, params.is_int8 == 1u)) << 7u;
  return vec2<u32>(low, max(min(high, params.range_high), low));
}

// A candidate's summed error (u64 in units of 2^(2x−32), x its scale's exponent) as an f32 in units of
// 2^(2E−32), E the row's exponent.
fn candidate_error(k: u32, hi: u32, lo: u32, row_exponent: i32) -> f32 {
  let exponent = i32(k >> 7u) - 127;
  return u64_to_f32(vec2<u32>(hi, lo)) * pow2(2 * (exponent - row_exponent));
}

fn scale_mantissa(k: u32) -> f32 {
  return bitcast<f32>(((127u << 7u) | (k & 127u)) << 16u);
}

// Squared error (fixed point, hi and lo) and code length of one element at one candidate.
fn element_cost(magnitude: f32, side: u32, mantissa: f32, to_binade: f32, inverse: f32, lambda_relative: f32) -> vec3<u32> {
  let scaled = flush(magnitude * to_binade);
  let chosen = choose_index(side, scaled, mantissa, inverse, lambda_relative);
  let error = scaled - grid_values[chosen.x] * mantissa;
  return vec3<u32>(error_fixed(flush(error * error)), chosen.y);
}

fn candidate_offset(r: Round, j: u32) -> i32 {
  let offset = r.first + i32(j);
  return select(offset, offset + 1, r.skip_centre == 1u && offset >= 0);
}

@compute @workgroup_size(WG)
fn search(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let row = group.x;
  let start = row * params.cols;
  let words = (params.cols + 3u) / 4u;
  load_tables(tid);
  atomicStore(&local_counts[tid], 0u);
  atomicStore(&local_counts[tid + WG], 0u);
  let max_bits = row_abs_max(tid, start);
  var centre = UNIT_SCALE_INDEX;
  if (max_bits != 0u) {
    let bounds = row_bounds(max_bits);
    let row_exponent = i32(max_bits >> 23u) - 127;
    let lambda_row = ldexp_clamped(params.lambda_per_length, 32 - 2 * row_exponent);
    var start_index = params.initial_index;
    if (start_index == NO_INITIAL_INDEX) { start_index = indices[params.row_base + row]; }
    centre = clamp(start_index, bounds.x, bounds.y);
    // The incumbent: the best candidate so far with its sums (the same in every invocation).
    var have_incumbent = false;
    var incumbent = vec4<u32>(centre, 0u, 0u, 0u);
    for (var round = 0u; round < params.round_count; round++) {
      let r = params.rounds[round];
      for (var j0 = 0u; j0 < r.count; j0 += 4u) {
        var k: vec4<u32>;
        var mantissa: vec4<f32>;
        var to_binade: vec4<f32>;
        var inverse: vec4<f32>;
        var lambda_relative: vec4<f32>;
        for (var c = 0u; c < 4u; c++) {
          k[c] = u32(clamp(i32(centre) + candidate_offset(r, j0 + c) * i32(r.step), i32(bounds.x), i32(bounds.y)));
          let exponent = i32(k[c] >> 7u) - 127;
          mantissa[c] = scale_mantissa(k[c]);
          to_binade[c] = pow2(-exponent);
          inverse[c] = 1.0 / mantissa[c];
          lambda_relative[c] = select(0.0, ldexp_clamped(params.lambda_per_length, -2 * exponent), params.rdo == 1u);
        }
        var hi = vec4<u32>(0u);
        var lo = vec4<u32>(0u);
        var len = vec4<u32>(0u);
        for (var i = tid; i < params.cols; i += WG) {
          let bits = weights[start + i];
          let magnitude = magnitude_of(bits);
          let side = (bits >> 24u) & 128u;
          let c0 = element_cost(magnitude, side, mantissa.x, to_binade.x, inverse.x, lambda_relative.x);
          let c1 = element_cost(magnitude, side, mantissa.y, to_binade.y, inverse.y, lambda_relative.y);
          let c2 = element_cost(magnitude, side, mantissa.z, to_binade.z, inverse.z, lambda_relative.z);
          let c3 = element_cost(magnitude, side, mantissa.w, to_binade.w, inverse.w, lambda_relative.w);
          let add_lo = vec4<u32>(c0.y, c1.y, c2.y, c3.y);
          let sum_lo = lo + add_lo;
          hi = hi + vec4<u32>(c0.x, c1.x, c2.x, c3.x) + select(vec4<u32>(0u), vec4<u32>(1u), sum_lo < add_lo);
          lo = sum_lo;
          len = len + vec4<u32>(c0.z, c1.z, c2.z, c3.z);
        }
        reduce_sums(tid, hi, lo, len);
        if (tid < 4u) {
          candidate_index[j0 + tid] = k[tid];
          candidate_hi[j0 + tid] = reduce_hi[0][tid];
          candidate_lo[j0 + tid] = reduce_lo[0][tid];
          candidate_len[j0 + tid] = reduce_len[0][tid];
        }
        workgroupBarrier();
      }
      // Every invocation scans the same way (incumbent first, then candidates in order, strictly lower cost
      // wins), so all agree on the new incumbent.
      var best: vec4<u32>;
      var j_first = 0u;
      if (r.skip_centre == 1u && have_incumbent) {
        best = incumbent;
      } else {
        best = vec4<u32>(candidate_index[0], candidate_hi[0], candidate_lo[0], candidate_len[0]);
        j_first = 1u;
      }
      var best_error = candidate_error(best.x, best.y, best.z, row_exponent);
      for (var j = j_first; j < r.count; j++) {
        let error = candidate_error(candidate_index[j], candidate_hi[j], candidate_lo[j], row_exponent);
        let error_gain = error - best_error;
        let rate_gain = lambda_row * i32_to_f32(i32(best.w) - i32(candidate_len[j]));
        if (error_gain < rate_gain) {
          best = vec4<u32>(candidate_index[j], candidate_hi[j], candidate_lo[j], candidate_len[j]);
          best_error = error;
        }
      }
      incumbent = best;
      have_incumbent = true;
      centre = best.x;
    }
  }
  // The codes at the chosen scale (a row of zeros: scale 1, all codes 0).
  let exponent = i32(centre >> 7u) - 127;
  let mantissa = scale_mantissa(centre);
  let to_binade = pow2(-exponent);
  let inverse = 1.0 / mantissa;
  let lambda_relative = select(0.0, ldexp_clamped(params.lambda_per_length, -2 * exponent), params.rdo == 1u);
  let code_base = row * words;
  for (var w = tid; w < words; w += WG) {
    var packed = 0u;
    for (var b = 0u; b < 4u; b++) {
      let i = 4u * w + b;
      if (i < params.cols) {
        var code = 0u;
        if (max_bits != 0u) {
          let bits = weights[start + i];
          let scaled = flush(magnitude_of(bits) * to_binade);
          code = code_of(choose_index((bits >> 24u) & 128u, scaled, mantissa, inverse, lambda_relative).x, (bits >> 31u) == 1u);
        }
        packed |= code << (8u * b);
        atomicAdd(&local_counts[code], 1u);
      }
    }
    if (params.write_codes == 1u) { codes[code_base + w] = packed; }
  }
  workgroupBarrier();
  for (var c = tid; c < 256u; c += WG) {
    let n = atomicLoad(&local_counts[c]);
    if (n != 0u) { atomicAdd(&counts[c], n); }
  }
  if (tid == 0u) { indices[params.row_base + row] = centre; }
}
