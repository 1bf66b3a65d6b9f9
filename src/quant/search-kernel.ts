/**
 * The per-row work of the search optimizer on the CPU — the same arithmetic, step for step, as
 * wgsl/quant_search.wgsl, so both produce identical codes and scales. This file is the definition; the
 * kernel mirrors it (test/quant-search.test.ts compares them on both software adapters).
 *
 * Why the results cannot depend on the device: every decision is taken on values that are exact or that
 * come out of one correctly rounded f32 operation (+, −, × — WGSL guarantees these), never on division,
 * exp/log, or float sums whose order varies:
 * - the scale s is a BF16 value m·2^x (m ∈ [1, 2) with 8 significant bits); a weight is first scaled to
 *   a' = |w|·2^-x (exact), so every product value·m, midpoint·m, gap·m is exact in f32 (≤ 17 bits). An
 *   exact product also makes a fused multiply-add give the same result as the separate operations, so a
 *   compiler that contracts `a − v·m` cannot change it;
 * - the nearest lower grid point is found from an approximate guess (a'·(1/m), any precision) corrected by
 *   exact comparisons a' ≥ value·m;
 * - rounding up or down (with the rate term when rate–distortion optimised rounding is on) compares two
 *   singly-rounded products: d_lo² − d_hi² = 2(a' − mid·m)·gap·m against λ'·(len_hi − len_lo);
 * - squared errors are truncated to fixed point (units 2^-32 of the scale's binade squared) and summed as
 *   exact integers; code lengths are integers too; a row's candidates are compared through one subtraction
 *   and one product of f32 values obtained from those integers by truncation;
 * - results that could be subnormal are flushed to zero explicitly (GPUs may flush them, CPUs do not).
 */
import type { MagnitudeGrid } from './grid.js';

/** Per-element squared errors are truncated to multiples of 2^-32 (relative to the scale's binade squared)… */
const ERROR_FRACTION_SCALE = 2 ** 32;
/** …and clamped here, so a row of MAX_ROW_LENGTH elements cannot overflow its 64-bit sum (only heavy clipping reaches it). */
const ERROR_CLAMP = 2 ** 41;
/** Row sums of squared weights (row stats) are in units of 2^-40 of the row's binade squared. */
const SQUARES_FRACTION_SCALE = 2 ** 40;
/** Smallest normal f32: anything below is flushed to zero on every device. */
const MIN_NORMAL = 2 ** -126;
/** Longest row the search supports: keeps summed code lengths below 2^31 and error sums below 2^64. */
export const MAX_ROW_LENGTH = 2 ** 21;
/** Most candidates one round of the search may try (bounded by the kernel's workgroup memory). */
export const MAX_CANDIDATES = 16;
/** Scratch slot holding the incumbent (the centre carried over from the previous round). */
const INCUMBENT = MAX_CANDIDATES;

/**
 * One round of the search: `count` candidates (a multiple of 4: the kernel evaluates four per sweep over
 * the row) at centre + offset·step for offset = first, first + 1, …, skipping offset 0 when `skipCentre`
 * (the centre is then the incumbent with the cost the previous round found for it).
 */
export interface SearchRound {
  first: number;
  count: number;
  step: number;
  skipCentre: boolean;
}

/** Offset (in steps) of candidate j of a round. */
export function roundOffset(round: SearchRound, j: number): number {
  const offset = round.first + j;
  return round.skipCentre && offset >= 0 ? offset + 1 : offset;
}

/** Everything a pass over the rows needs besides the weights. */
export interface SearchPassParams {
  grid: MagnitudeGrid;
  /** Code length of each code byte, in 1/LENGTH_UNIT bit (rate.ts codeLengths). */
  lengths: Uint32Array;
  /** λ in absolute squared-error units per length unit (an f32; 0 = distortion only). */
  lambdaPerLength: number;
  /** Rate–distortion optimised rounding: weigh the code lengths when rounding each weight. */
  rdo: boolean;
  /** Rounds of the search; none = quantize at the centre scale. */
  rounds: SearchRound[];
  /** Centre of the first round for every row (a scale index), or null to continue from each row's last choice. */
  initialIndex: number | null;
  /** Scale indices the scale dtype allows, [lowest, highest]. */
  indexRange: [number, number];
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

function bitsOf(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0]!;
}

function fromBits(bits: number): number {
  scratchU32[0] = bits >>> 0;
  return scratchF32[0]!;
}

/** 2^e as an f32 (−126 ≤ e ≤ 127). */
function pow2(e: number): number {
  return fromBits((e + 127) << 23);
}

/**
 * Largest λ a decision uses: λ·(length difference < 2^31) must stay finite, since WGSL lets an implementation
 * assume no infinities.
 */
const LAMBDA_CLAMP_EXPONENT = 90;

/** v·2^e for a positive normal f32 v (or 0): exact, clamped to 2^90 above, flushed to 0 below 2^-126. */
export function ldexpClamped(v: number, e: number): number {
  if (v === 0) return 0;
  const bits = bitsOf(v);
  const exponent = (bits >>> 23) + e;
  if (exponent >= 127 + LAMBDA_CLAMP_EXPONENT) return pow2(LAMBDA_CLAMP_EXPONENT);
  if (exponent <= 0) return 0;
  return fromBits((exponent << 23) | (bits & 0x7fffff));
}

/** Bit length of a u32. */
function bitLength32(x: number): number {
  return 32 - Math.clz32(x);
}

/** The u64 hi·2^32 + lo truncated to its 24 leading bits, as an (exact) f32 value. */
export function u64ToF32Truncated(hi: number, lo: number): number {
  if (hi === 0) {
    const length = bitLength32(lo);
    if (length <= 24) return lo;
    const shift = length - 24;
    return Math.floor(lo / 2 ** shift) * 2 ** shift;
  }
  const shift = 32 + bitLength32(hi) - 24;
  const top = shift >= 32 ? Math.floor(hi / 2 ** (shift - 32)) : hi * 2 ** (32 - shift) + Math.floor(lo / 2 ** shift);
  return top * 2 ** shift;
}

/** A signed 32-bit integer truncated (towards zero) to 24 significant bits, as an f32 value. */
export function i32ToF32Truncated(v: number): number {
  return v < 0 ? -u64ToF32Truncated(0, -v) : u64ToF32Truncated(0, v);
}

/** Magnitude of weight i, subnormals flushed to zero (so a GPU that flushes them on load agrees). */
function magnitudeOf(bits: number): number {
  const magnitudeBits = bits & 0x7fffffff;
  return magnitudeBits < 0x00800000 ? 0 : fromBits(magnitudeBits);
}

/** Largest flushed |w| of row r, as f32 bits (0 for a row of zeros). */
export function rowAbsMaxBits(bits: Uint32Array, start: number, length: number): number {
  let max = 0;
  for (let i = start; i < start + length; i++) {
    const magnitudeBits = bits[i]! & 0x7fffffff;
    if (magnitudeBits >= 0x00800000 && magnitudeBits > max) max = magnitudeBits;
  }
  return max;
}

/** Per-row statistics of the first pass: |w| max (f32 bits) and Σ w² as an exact integer (hi, lo). */
export interface RowStats {
  absMaxBits: Uint32Array;
  /** Σ (|w|·2^-E)² truncated per element to 2^-40 units, E = exponent of the row's absmax: (hi, lo) pairs. */
  squares: Float64Array;
}

/** Row statistics on the CPU (wgsl/quant_search.wgsl `row_stats` computes the same). */
export function rowStatsCpu(weights: Float32Array, rows: number, cols: number): RowStats {
  const bits = new Uint32Array(weights.buffer, weights.byteOffset, weights.length);
  const absMaxBits = new Uint32Array(rows);
  const squares = new Float64Array(2 * rows);
  for (let r = 0; r < rows; r++) {
    const start = r * cols;
    const maxBits = rowAbsMaxBits(bits, start, cols);
    absMaxBits[r] = maxBits;
    if (maxBits === 0) continue;
    const toUnit = pow2(127 - (maxBits >>> 23));
    let hiSum = 0;
    let loSum = 0;
    for (let i = start; i < start + cols; i++) {
      const scaled = magnitudeOf(bits[i]!) * toUnit;
      let square = Math.fround(scaled * scaled);
      if (square < MIN_NORMAL) square = 0;
      const fixed = Math.floor(square * SQUARES_FRACTION_SCALE);
      const hi = Math.floor(fixed / 2 ** 32);
      hiSum += hi;
      loSum += fixed - hi * 2 ** 32;
    }
    const carry = Math.floor(loSum / 2 ** 32);
    squares[2 * r] = hiSum + carry;
    squares[2 * r + 1] = loSum - carry * 2 ** 32;
  }
  return { absMaxBits, squares };
}

/** Σ w² of the whole tensor from its row statistics (f64, rows in order: the same on every device). */
export function sumOfSquares(stats: RowStats): number {
  let total = 0;
  for (let r = 0; r < stats.absMaxBits.length; r++) {
    if (stats.absMaxBits[r] === 0) continue;
    const exponent = (stats.absMaxBits[r]! >>> 23) - 127;
    const units = stats.squares[2 * r]! * 2 ** 32 + stats.squares[2 * r + 1]!;
    total += units * 2 ** (2 * exponent) / SQUARES_FRACTION_SCALE;
  }
  return total;
}

/** Scale index of 1.0, the scale of a row of zeros. */
export const UNIT_SCALE_INDEX = 0x3f80;

/**
 * The scale indices a row may use: from the smallest that does not clip its absmax (scale·maxValue ≥ absmax)
 * to the one beyond which every code is zero; both inside the dtype's range.
 */
export function rowIndexBounds(absMaxBits: number, grid: MagnitudeGrid, indexRange: [number, number]): [number, number] {
  const absMax = fromBits(absMaxBits);
  const [first, last] = indexRange;
  const guess = (absMaxBits >>> 16) - (bitsOf(grid.maxValue) >>> 16) + UNIT_SCALE_INDEX;
  let low = Math.min(Math.max(guess, first), last);
  // The guess is within a few steps of the answer; exact products (≤ 15 significant bits) settle it.
  while (low < last && fromBits(low << 16) * grid.maxValue < absMax) low++;
  while (low > first && fromBits((low - 1) << 16) * grid.maxValue >= absMax) low--;
  const exponent = (absMaxBits >>> 23) - 127;
  // Beyond 2^(E+11) (E4M3: smallest step 2^-9·s) or 2^(E+2) (INT8: step s) every weight rounds to zero.
  const high = (exponent + 127 + (grid.format === 'fp8-e4m3' ? 11 : 2)) << 7;
  return [low, Math.max(Math.min(high, last), low)];
}

/** Scratch state of one row's search (allocated once per pass, reused across rows). */
class RowScratch {
  errorHi = new Float64Array(MAX_CANDIDATES + 1);
  errorLo = new Float64Array(MAX_CANDIDATES + 1);
  lengthSum = new Float64Array(MAX_CANDIDATES + 1);
  indices = new Int32Array(MAX_CANDIDATES + 1);
  /** Per candidate: s·2^-x ∈ [1, 2), 2^-x, ≈1/mantissa, λ per length unit relative to 2^(2x). */
  mantissa = new Float64Array(MAX_CANDIDATES);
  toBinade = new Float64Array(MAX_CANDIDATES);
  inverse = new Float64Array(MAX_CANDIDATES);
  lambdaRelative = new Float64Array(MAX_CANDIDATES);

  /** Fills candidate j's constants for scale index k. */
  setCandidate(j: number, k: number, rdo: boolean, lambdaPerLength: number): void {
    const exponent = (k >>> 7) - 127;
    this.indices[j] = k;
    this.mantissa[j] = fromBits(((127 << 7) | (k & 127)) << 16);
    this.toBinade[j] = pow2(-exponent);
    this.inverse[j] = Math.fround(1 / this.mantissa[j]!);
    this.lambdaRelative[j] = rdo ? ldexpClamped(lambdaPerLength, -2 * exponent) : 0;
    this.errorHi[j] = 0;
    this.errorLo[j] = 0;
    this.lengthSum[j] = 0;
  }

  /** Makes slot j the incumbent (carried into the next round). */
  keepIncumbent(j: number): void {
    this.indices[INCUMBENT] = this.indices[j]!;
    this.errorHi[INCUMBENT] = this.errorHi[j]!;
    this.errorLo[INCUMBENT] = this.errorLo[j]!;
    this.lengthSum[INCUMBENT] = this.lengthSum[j]!;
  }
}

/**
 * The magnitude index a weight gets at a candidate scale s = mantissa·2^x: `scaled` = |w|·2^-x (flushed),
 * `inverse` ≈ 1/mantissa (any precision: only the first guess uses it), `lambdaRelative` = λ per length unit in
 * units of 2^(2x). Rounds to the nearer neighbour (ties to the even index), moved by λ·(length difference).
 */
function chooseIndex(
  grid: MagnitudeGrid, lengths: Uint32Array, negative: boolean, scaled: number, mantissa: number,
  inverse: number, lambdaRelative: number,
): number {
  const { values, midpoints, doubledGaps, maxIndex } = grid;
  let index = guessIndex(grid, scaled * inverse);
  if (index < maxIndex && scaled >= values[index + 1]! * mantissa) index++;
  else if (index > 0 && scaled < values[index]! * mantissa) index--;
  if (index === maxIndex) return index;
  const lowLength = lengths[codeOf(grid, index, negative)]!;
  const highLength = lengths[codeOf(grid, index + 1, negative)]!;
  const offset = Math.fround(scaled - midpoints[index]! * mantissa);
  const errorGain = Math.fround(offset * (doubledGaps[index]! * mantissa));
  const rateGain = Math.fround(lambdaRelative * (highLength - lowLength));
  const roundDown = errorGain < rateGain || (errorGain === rateGain && (index & 1) === 0);
  return roundDown ? index : index + 1;
}

/** An estimate of the grid index at or below t (t ≥ 0; off by at most one for t within a few ulps). */
function guessIndex(grid: MagnitudeGrid, t: number): number {
  if (grid.format === 'int8') return Math.min(Math.floor(t), grid.maxIndex);
  if (t < 2 ** -6) return Math.floor(t * 512);
  const bits = bitsOf(t);
  const exponent = (bits >>> 23) - 127 + 7;
  return Math.min((exponent << 3) | ((bits >>> 20) & 7), grid.maxIndex);
}

function codeOf(grid: MagnitudeGrid, index: number, negative: boolean): number {
  if (!negative || index === 0) return index;
  return grid.format === 'fp8-e4m3' ? 0x80 | index : 256 - index;
}

/** ⌊(scaled − value)² · 2^32⌋ (the square flushed below 2^-126), clamped at 2^41: one element's fixed-point error. */
function elementError(scaled: number, value: number): number {
  const error = Math.fround(scaled - value);
  let square = Math.fround(error * error);
  if (square < MIN_NORMAL) square = 0;
  return Math.min(Math.floor(square * ERROR_FRACTION_SCALE), ERROR_CLAMP);
}

/**
 * One pass of the search over rows [0, rows): for each row, the rounds of candidate scales, each round
 * keeping the candidate of least cost Σ squared error + λ·Σ code length; then the codes at the chosen scale
 * (into `codes` when given) and their histogram (added to `counts`). `indices` holds each row's scale index:
 * read as the centre when params.initialIndex is null, always written with the choice.
 */
export function searchRowsCpu(
  weights: Float32Array, rows: number, cols: number, params: SearchPassParams,
  indices: Uint32Array, counts: Float64Array, codes: Uint8Array | null,
): void {
  const bits = new Uint32Array(weights.buffer, weights.byteOffset, weights.length);
  const { grid, lengths, rdo, rounds } = params;
  const scratch = new RowScratch();
  for (let r = 0; r < rows; r++) {
    const start = r * cols;
    const absMaxBits = rowAbsMaxBits(bits, start, cols);
    if (absMaxBits === 0) {
      indices[r] = UNIT_SCALE_INDEX;
      counts[0]! += cols;
      if (codes) codes.fill(0, start, start + cols);
      continue;
    }
    const [low, high] = rowIndexBounds(absMaxBits, grid, params.indexRange);
    const rowExponent = (absMaxBits >>> 23) - 127;
    const lambdaRow = ldexpClamped(params.lambdaPerLength, 32 - 2 * rowExponent);
    let centre = Math.min(Math.max(params.initialIndex ?? indices[r]!, low), high);
    let haveIncumbent = false;
    for (const round of rounds) {
      for (let j = 0; j < round.count; j++) {
        const k = Math.min(Math.max(centre + roundOffset(round, j) * round.step, low), high);
        scratch.setCandidate(j, k, rdo, params.lambdaPerLength);
      }
      for (let i = start; i < start + cols; i++) {
        const elementBits = bits[i]!;
        const magnitude = magnitudeOf(elementBits);
        const negative = elementBits >>> 31 === 1;
        for (let j = 0; j < round.count; j++) {
          const mantissa = scratch.mantissa[j]!;
          let scaled = magnitude * scratch.toBinade[j]!;
          if (scaled < MIN_NORMAL) scaled = 0;
          const index = chooseIndex(grid, lengths, negative, scaled, mantissa, scratch.inverse[j]!, scratch.lambdaRelative[j]!);
          const fixed = elementError(scaled, grid.values[index]! * mantissa);
          const hi = Math.floor(fixed / 2 ** 32);
          scratch.errorHi[j]! += hi;
          scratch.errorLo[j]! += fixed - hi * 2 ** 32;
          scratch.lengthSum[j]! += lengths[codeOf(grid, index, negative)]!;
        }
      }
      const best = bestCandidate(scratch, round.count, round.skipCentre && haveIncumbent, rowExponent, lambdaRow);
      scratch.keepIncumbent(best);
      centre = scratch.indices[INCUMBENT]!;
      haveIncumbent = true;
    }
    indices[r] = centre;
    writeRow(bits, start, cols, grid, lengths, rdo, params.lambdaPerLength, centre, counts, codes);
  }
}

/**
 * The slot of least cost: the incumbent first when `withIncumbent`, then candidates 0..count−1 in order; a
 * later one wins only with strictly lower cost.
 */
function bestCandidate(scratch: RowScratch, count: number, withIncumbent: boolean, rowExponent: number, lambdaRow: number): number {
  let best = withIncumbent ? INCUMBENT : 0;
  let bestError = candidateError(scratch, best, rowExponent);
  for (let j = withIncumbent ? 0 : 1; j < count; j++) {
    const error = candidateError(scratch, j, rowExponent);
    const errorGain = Math.fround(error - bestError);
    const rateGain = Math.fround(lambdaRow * i32ToF32Truncated(scratch.lengthSum[best]! - scratch.lengthSum[j]!));
    if (errorGain < rateGain) {
      best = j;
      bestError = error;
    }
  }
  return best;
}

/** Candidate j's summed squared error as an f32 in units of 2^(2E−32), E the row's exponent. */
function candidateError(scratch: RowScratch, j: number, rowExponent: number): number {
  const carry = Math.floor(scratch.errorLo[j]! / 2 ** 32);
  const hi = scratch.errorHi[j]! + carry;
  const lo = scratch.errorLo[j]! - carry * 2 ** 32;
  const exponent = (scratch.indices[j]! >>> 7) - 127;
  return u64ToF32Truncated(hi, lo) * 2 ** (2 * (exponent - rowExponent));
}

function writeRow(
  bits: Uint32Array, start: number, cols: number, grid: MagnitudeGrid, lengths: Uint32Array, rdo: boolean,
  lambdaPerLength: number, k: number, counts: Float64Array, codes: Uint8Array | null,
): void {
  const exponent = (k >>> 7) - 127;
  const mantissa = fromBits(((127 << 7) | (k & 127)) << 16);
  const toBinade = pow2(-exponent);
  const inverse = Math.fround(1 / mantissa);
  const lambdaRelative = rdo ? ldexpClamped(lambdaPerLength, -2 * exponent) : 0;
  for (let i = start; i < start + cols; i++) {
    const elementBits = bits[i]!;
    const negative = elementBits >>> 31 === 1;
    let scaled = magnitudeOf(elementBits) * toBinade;
    if (scaled < MIN_NORMAL) scaled = 0;
    const code = codeOf(grid, chooseIndex(grid, lengths, negative, scaled, mantissa, inverse, lambdaRelative), negative);
    counts[code]!++;
    if (codes) codes[i] = code;
  }
}
