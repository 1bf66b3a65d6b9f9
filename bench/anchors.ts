/**
 * The data-free quantizers bench:quant compares the default with (issue 7's anchors), written from their papers and
 * public descriptions for the benchmark only:
 * - round-to-nearest: symmetric b-bit integers with a BF16 absmax scale per channel or per group of a row;
 * - HQQ (Badri & Shaji, "Half-Quadratic Quantization of Large Machine Learning Models", 2023): asymmetric b-bit
 *   integers with a scale and a zero point per group of 64, the zero points fitted by its proximal (half-quadratic)
 *   solver of ‖W − dequant(quant(W))‖_p^p, p = 0.7; scale and zero stored as FP16;
 * - NF4 (Dettmers et al., "QLoRA", 2023; bitsandbytes): the 16 NormalFloat levels times a block's absmax, blocks of
 *   64, the absmax stored as F32 (bitsandbytes without double quantization);
 * - NVFP4 absmax: llm-compressor's scheme (src/nvfp4), its payload coded by our rANS.
 *
 * HQQ and NF4 group the weights as their libraries do, in runs of consecutive elements of the flattened tensor
 * (a group may continue on the next row when a row is not a multiple of the group). Codes are one byte per weight,
 * entropy-coded as one rANS stream; each result carries what is stored and what issue 7 counts.
 */
import { entropyBitsPerSymbol } from '../src/codec/frequencies.js';
import { castInt8, codeValue, roundScale } from '../src/quant/grid.js';
import { codedStreamBytes, histogram } from '../src/quant/rate.js';
import { NVFP4_BLOCK, unpackCodes } from '../src/nvfp4/e2m1.js';
import { quantizeAbsmaxNvfp4 } from '../src/nvfp4/absmax.js';
import { dequantizeNvfp4F32, encodeNvfp4Payload } from '../src/nvfp4/payload.js';
import { f16BitsToF32, f32ToF16Bits } from '../src/tensor/dtype.js';

/** One tensor as an anchor method stores it. */
export interface AnchorTensor {
  /** Dequantized weights, row-major like the input. */
  decoded: Float32Array;
  /** The code of every weight, the symbols that are entropy-coded. */
  codes: Uint8Array;
  /** Bits of everything stored: payload header, the per-group parameters and the rANS-coded codes. */
  storedBits: number;
  /** Bits of the per-group parameters (scales, zero points), as issue 7 counts them beside the codes' entropy. */
  parameterBits: number;
}

/** Bytes of the header an eqz payload puts before its parameters (as encodings 2/3: u32 dtype + u32 reserved). */
const PAYLOAD_HEADER_BYTES = 8;

/** An anchor stored as a payload header, `parameterBits` of parameters and one rANS stream of `codes`. */
function codedAnchor(decoded: Float32Array, codes: Uint8Array, parameterBits: number): AnchorTensor {
  const streamBytes = codedStreamBytes(histogram(codes), codes.length);
  return { decoded, codes, storedBits: 8 * (PAYLOAD_HEADER_BYTES + streamBytes) + parameterBits, parameterBits };
}

/** Issue 7's count for one tensor: order-0 entropy of its codes plus its parameters, in bits. */
export function entropyAndParameterBits(tensor: AnchorTensor): number {
  return entropyBitsPerSymbol(histogram(tensor.codes)) * tensor.codes.length + tensor.parameterBits;
}

/** Bits of an FP16 or BF16 value. */
const HALF_BITS = 16;

/**
 * Round-to-nearest symmetric `bits`-bit codes (±(2^(bits−1) − 1), stored as int8 bytes) with a BF16 absmax scale per
 * group of `group` weights of a row (per channel when `group` ≥ cols; a row's last group may be shorter).
 */
export function roundToNearest(weights: Float32Array, rows: number, cols: number, bits: number, group: number): AnchorTensor {
  const qmax = 2 ** (bits - 1) - 1;
  const codes = new Uint8Array(weights.length);
  const decoded = new Float32Array(weights.length);
  const groupLength = Math.min(group, cols);
  let groups = 0;
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < cols; g += groupLength) {
      const start = r * cols + g;
      const end = r * cols + Math.min(g + groupLength, cols);
      let absMax = 0;
      for (let i = start; i < end; i++) absMax = Math.max(absMax, Math.abs(weights[i]!));
      const scale = absMax > 0 ? roundScale(absMax / qmax, 'BF16') : 1;
      for (let i = start; i < end; i++) {
        codes[i] = castInt8(Math.fround(weights[i]! / scale));
        decoded[i] = Math.fround(codeValue('int8', codes[i]!) * scale);
      }
      groups++;
    }
  }
  return codedAnchor(decoded, codes, HALF_BITS * groups);
}

/** HQQ's solver settings (its defaults): the l_p exponent, the penalty β, its growth per iteration, iterations. */
export interface HqqSolver {
  p: number;
  beta: number;
  kappa: number;
  iterations: number;
}

/** The settings HQQ quantizes with by default. */
export const HQQ_DEFAULT_SOLVER: HqqSolver = { p: 0.7, beta: 10, kappa: 1.01, iterations: 20 };

/** HQQ caps its inverse scale (levels per unit) so that a constant group gets a finite one. */
const HQQ_MAX_INVERSE_SCALE = 2e4;

/** The HQQ quantization of one tensor before the parameters are rounded for storage. */
export interface HqqFit {
  /** Levels per unit weight of each group ((2^bits − 1) / (max − min) at the start; fixed by the solver). */
  inverseScales: Float64Array;
  /** Zero point of each group, in levels. */
  zeros: Float64Array;
  /** Mean |W − dequant(quant(W))| at the min–max start and at the returned zero points (the solver's stop test). */
  startError: number;
  error: number;
}

/** The integer level of `w` at inverse scale `inverseScale` and `zero`, clamped to [0, maxLevel] (ties to even). */
function hqqLevel(w: number, inverseScale: number, zero: number, maxLevel: number): number {
  return Math.min(maxLevel, Math.max(0, (castInt8(w * inverseScale + zero) << 24) >> 24));
}

/**
 * One pass of HQQ over every group at the current zero points: returns mean |W − W_r| at them, and writes into
 * `nextZeros` the solver's update — W_e = shrink_p(W − W_r, β), zero = mean over the group of W_q − (W − W_e)·s⁻¹ —
 * when given.
 */
function hqqPass(
  weights: Float32Array, group: number, maxLevel: number, inverseScales: Float64Array, zeros: Float64Array,
  nextZeros: Float64Array | null, beta: number, p: number,
): number {
  let errorSum = 0;
  for (let g = 0; g < zeros.length; g++) {
    const start = g * group;
    const end = Math.min(start + group, weights.length);
    const inverseScale = inverseScales[g]!;
    const zero = zeros[g]!;
    let zeroSum = 0;
    for (let i = start; i < end; i++) {
      const w = weights[i]!;
      const level = hqqLevel(w, inverseScale, zero, maxLevel);
      const residual = w - (level - zero) / inverseScale;
      errorSum += Math.abs(residual);
      if (!nextZeros) continue;
      // The proximal operator of |x|^p / β (generalized soft thresholding): large residuals pass as outliers.
      const magnitude = Math.abs(residual);
      const shrunk = magnitude > 0 ? Math.max(0, magnitude - magnitude ** (p - 1) / beta) * Math.sign(residual) : 0;
      zeroSum += level - (w - shrunk) * inverseScale;
    }
    if (nextZeros) nextZeros[g] = zeroSum / (end - start);
  }
  return errorSum / weights.length;
}

/**
 * HQQ's fit of `bits`-bit asymmetric levels to `weights` in groups of `group` consecutive weights: min–max start,
 * then its half-quadratic solver on the zero points (scales fixed), stopping when the mean absolute error stops
 * falling; the zero points with the least error are returned.
 */
export function fitHqq(weights: Float32Array, bits: number, group: number, solver: HqqSolver = HQQ_DEFAULT_SOLVER): HqqFit {
  const maxLevel = 2 ** bits - 1;
  const groups = Math.ceil(weights.length / group);
  const inverseScales = new Float64Array(groups);
  let zeros = new Float64Array(groups);
  for (let g = 0; g < groups; g++) {
    let min = Infinity;
    let max = -Infinity;
    for (let i = g * group; i < Math.min((g + 1) * group, weights.length); i++) {
      min = Math.min(min, weights[i]!);
      max = Math.max(max, weights[i]!);
    }
    inverseScales[g] = max > min ? Math.min(maxLevel / (max - min), HQQ_MAX_INVERSE_SCALE) : HQQ_MAX_INVERSE_SCALE;
    zeros[g] = -min * inverseScales[g]!;
  }
  let nextZeros = new Float64Array(groups);
  const bestZeros = Float64Array.from(zeros);
  let beta = solver.beta;
  let startError = NaN;
  let bestError = Infinity;
  for (let iteration = 0; iteration <= solver.iterations; iteration++) {
    const update = iteration < solver.iterations ? nextZeros : null;
    const error = hqqPass(weights, group, maxLevel, inverseScales, zeros, update, beta, solver.p);
    if (iteration === 0) startError = error;
    if (!(error < bestError)) break;
    bestError = error;
    bestZeros.set(zeros);
    if (!update) break;
    [zeros, nextZeros] = [nextZeros, zeros];
    beta *= solver.kappa;
  }
  return { inverseScales, zeros: bestZeros, startError, error: bestError };
}

/** FP16 rounding, as HQQ stores its scale and zero point. */
function toF16(value: number): number {
  return f16BitsToF32(f32ToF16Bits(value));
}

/**
 * HQQ with `bits`-bit levels and groups of `group` (64 in the issue): the solver's parameters rounded to FP16 (the
 * scale stored as its reciprocal, as HQQ does), then every weight cast to the level nearest at those stored values.
 */
export function hqq(weights: Float32Array, bits: number, group = 64, solver: HqqSolver = HQQ_DEFAULT_SOLVER): AnchorTensor {
  const maxLevel = 2 ** bits - 1;
  const fit = fitHqq(weights, bits, group, solver);
  const codes = new Uint8Array(weights.length);
  const decoded = new Float32Array(weights.length);
  for (let g = 0; g < fit.zeros.length; g++) {
    const scale = toF16(1 / fit.inverseScales[g]!);
    const zero = toF16(fit.zeros[g]!);
    for (let i = g * group; i < Math.min((g + 1) * group, weights.length); i++) {
      const level = hqqLevel(weights[i]!, 1 / scale, zero, maxLevel);
      codes[i] = level;
      decoded[i] = Math.fround((level - zero) * scale);
    }
  }
  return codedAnchor(decoded, codes, 2 * HALF_BITS * fit.zeros.length);
}

/** Φ(x), the standard normal CDF, by Simpson's rule on [0, x] (64-bit accuracy is plenty for a code book). */
function normalCdf(x: number): number {
  const intervals = 4096;
  const step = x / intervals;
  const density = (t: number) => Math.exp(-t * t / 2) / Math.sqrt(2 * Math.PI);
  let sum = density(0) + density(x);
  for (let i = 1; i < intervals; i++) sum += (i % 2 === 1 ? 4 : 2) * density(i * step);
  return 0.5 + (sum * step) / 3;
}

/** Φ⁻¹(probability) for probability in [0.5, 1) by Newton's method from 0 (Φ is concave there: no overshoot). */
function normalQuantile(probability: number): number {
  let x = 0;
  for (let i = 0; i < 50; i++) {
    const step = (normalCdf(x) - probability) / (Math.exp(-x * x / 2) / Math.sqrt(2 * Math.PI));
    x -= step;
    if (Math.abs(step) < 1e-15) break;
  }
  return x;
}

/**
 * The NF4 levels (QLoRA, appendix E): quantiles of N(0, 1) — 8 for the positive half and 7 for the negative half
 * at evenly spaced probabilities from `offset` towards ½, so that 0 is represented exactly — plus 0, divided by
 * the largest, ascending. The offset ½(1/32 + 1/30) from 1 centres the outermost levels between the quantiles of
 * 16- and 15-level grids, as bitsandbytes builds its table.
 */
function normalFloatLevels(): Float64Array {
  const offset = 1 - (1 / 32 + 1 / 30) / 2;
  const spaced = (count: number) => Array.from({ length: count }, (_, i) => offset + ((0.5 - offset) * i) / count);
  const positive = spaced(8).map(normalQuantile);
  const negative = spaced(7).map((probability) => -normalQuantile(probability));
  const levels = [...negative, 0, ...positive].sort((a, b) => a - b);
  const largest = levels[levels.length - 1]!;
  return Float64Array.from(levels, (level) => level / largest);
}

/** The 16 NF4 values, ascending: code c decodes to NF4_LEVELS[c] × the block's absmax. 0 is code 7. */
export const NF4_LEVELS: Float32Array = Float32Array.from(normalFloatLevels());

/** The NF4 code of a weight normalized by its block's absmax (in [−1, 1]): the nearest level. */
export function nearestNf4Code(normalized: number): number {
  let best = 0;
  for (let code = 1; code < NF4_LEVELS.length; code++) {
    if (Math.abs(normalized - NF4_LEVELS[code]!) < Math.abs(normalized - NF4_LEVELS[best]!)) best = code;
  }
  return best;
}

/** Bits of the absmax bitsandbytes keeps per block (F32, without double quantization). */
const NF4_ABSMAX_BITS = 32;

/** NF4 in blocks of `block` consecutive weights (64 in the issue), each block's absmax stored as F32. */
export function nf4(weights: Float32Array, block = 64): AnchorTensor {
  const codes = new Uint8Array(weights.length);
  const decoded = new Float32Array(weights.length);
  const blocks = Math.ceil(weights.length / block);
  for (let b = 0; b < blocks; b++) {
    const start = b * block;
    const end = Math.min(start + block, weights.length);
    let absMax = 0;
    for (let i = start; i < end; i++) absMax = Math.max(absMax, Math.abs(weights[i]!));
    const scale = Math.fround(absMax);
    for (let i = start; i < end; i++) {
      codes[i] = nearestNf4Code(scale > 0 ? weights[i]! / scale : 0);
      decoded[i] = Math.fround(NF4_LEVELS[codes[i]!]! * scale);
    }
  }
  return codedAnchor(decoded, codes, NF4_ABSMAX_BITS * blocks);
}

/** Bits NVFP4 keeps per block of 16 (an E4M3 scale) and per tensor (the F32 global scale). */
const NVFP4_BLOCK_SCALE_BITS = 8;
const NVFP4_GLOBAL_SCALE_BITS = 32;

/**
 * NVFP4 with llm-compressor's absmax scales (−0 cast to +0), stored as our `nvfp4` payload: its real size. Rows
 * whose length is not a multiple of 16 (stories260K's down_proj, 172) are padded with zeros to the next block,
 * and the padding is stored and counted.
 */
export function nvfp4Absmax(weights: Float32Array, rows: number, cols: number): AnchorTensor {
  const paddedCols = Math.ceil(cols / NVFP4_BLOCK) * NVFP4_BLOCK;
  let padded = weights;
  if (paddedCols !== cols) {
    padded = new Float32Array(rows * paddedCols);
    for (let r = 0; r < rows; r++) padded.set(weights.subarray(r * cols, (r + 1) * cols), r * paddedCols);
  }
  const quantized = quantizeAbsmaxNvfp4(padded, rows, paddedCols, { positiveZero: true });
  const tensor = { ...quantized, rows, cols: paddedCols };
  const payload = encodeNvfp4Payload(tensor);
  const paddedDecoded = dequantizeNvfp4F32(tensor);
  const paddedCodes = unpackCodes(quantized.packed);
  const decoded = new Float32Array(rows * cols);
  const codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    decoded.set(paddedDecoded.subarray(r * paddedCols, r * paddedCols + cols), r * cols);
    codes.set(paddedCodes.subarray(r * paddedCols, r * paddedCols + cols), r * cols);
  }
  const parameterBits = NVFP4_BLOCK_SCALE_BITS * quantized.blockScales.length + NVFP4_GLOBAL_SCALE_BITS;
  return { decoded, codes, storedBits: 8 * payload.length, parameterBits };
}
