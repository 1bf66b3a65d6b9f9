/**
 * EntQuant quantization of 2-D weights (spec/eqz.md encodings 2 `fp8-e4m3` and 3 `int8`): one scale per output
 * channel (row), codes cast to FP8 E4M3 or INT8, decoded as f32(value(code)) × f32(scale).
 *
 * Three optimizers choose the scales (and codes):
 * - `reference` — the EntQuant paper's method: L-BFGS over log2-scales of ‖deq − W‖₁/‖W‖₁ + λ·R(q) with an
 *   L1 proxy R for the entropy (reference.ts); λ as in the paper (3.9 ≈ 4 bits, 14.5 ≈ 3, 58 with lr 0.25 ≈ 2);
 * - `rd-search` (default) — a direct per-row search of the exact cost relL2² + λ·bits/param with the true code
 *   lengths under the tensor's frequency table (search.ts), rounding to nearest; λ is the price of one bit per
 *   parameter in relative squared error. Its GPU and CPU paths give identical results;
 * - `absmax` — scale = absmax / 448 (or / 127), no rate control: what layers holding super weights get
 *   (superweights.ts).
 *
 * Rates everywhere count everything stored: payload header, raw scales and the coded stream (rate.ts).
 */
import { EqzError } from '../errors.js';
import type { GpuContext } from '../gpu/device.js';
import { gridOf, roundScale, type QuantFormat, type ScaleDtype } from './grid.js';
import { quantizeReference } from './reference.js';
import { DEFAULT_REFINEMENTS, SearchSession, scalesOf, type SearchSettings } from './search.js';
import { MAX_ROW_LENGTH } from './search-kernel.js';
import { SEARCH_PRESETS } from './presets.js';
import { describeCast, describeQuantized, type QuantizedTensor } from './result.js';

export type { QuantFormat, ScaleDtype } from './grid.js';
export { dequantize, relativeErrors, type QuantizedTensor } from './result.js';
export { findLambdaForBits, lambdaForTotalBits, measureRateCurve, RATE_CURVE_LAMBDAS, type LambdaSearchResult, type RateCurve } from './lambda.js';
export { detectSuperWeights, SUPER_WEIGHT_Z, type SuperWeightReport } from './superweights.js';
export { REFERENCE_PRESETS, SEARCH_PRESETS, type PresetBits } from './presets.js';

/** Scale optimizers: the paper's L-BFGS, the direct rate–distortion search, plain absmax scales. */
export type Optimizer = 'reference' | 'rd-search' | 'absmax';

/** The optimizer used when none is named. */
export const DEFAULT_OPTIMIZER: Optimizer = 'rd-search';

/** How {@link quantizeTensor} quantizes one tensor. */
export interface QuantizeOptions {
  /** Code grid; `auto` (rd-search only) tries both and keeps the one of lower rate–distortion cost. */
  format: QuantFormat | 'auto';
  optimizer: Optimizer;
  /**
   * Rate–distortion trade-off. `reference`: the paper's λ (default 3.9). `rd-search`: relative squared error
   * one bit/param is worth (default {@link DEFAULT_SEARCH_LAMBDA}); larger → fewer bits.
   */
  lambda?: number;
  /** `reference`: L-BFGS learning rate (default 1; the paper uses 0.25 with λ 58). */
  lr?: number;
  /** `reference`: L-BFGS iteration limit (default 500, as the paper). */
  maxIterations?: number;
  /** How scales are stored; BF16 is the default the reference uses. */
  scaleDtype: ScaleDtype;
  /** `reference`: the source dtype its log2-scales are rounded through (default F32). */
  weightDtype?: 'F32' | 'F16' | 'BF16';
  /**
   * `rd-search`: rate–distortion optimised rounding (round to the more probable neighbour where the bits saved
   * outweigh the error added). Default off: at equal bits it lowered the weights' squared error by under 1 % but
   * raised the KL the model loses by 5–26 % on babyllama-tok105 (2.5–4 bits); on stories260K it lowered the KL
   * by 2–4 %.
   */
  rdo?: boolean;
  /** `rd-search`: weight of this tensor's distortion when one λ serves a whole model (default 1). */
  importance?: number;
  /**
   * Where to compute: a WebGPU context, or null for the CPU path. On a software adapter, work the CPU path does
   * faster (rows shorter than 1024 for rd-search, tensors under 2^20 weights for the reference) runs there —
   * rd-search's results are the same either way.
   */
  gpu?: GpuContext | null;
  /** Tensor name, for error messages. */
  name?: string;
}

/** rd-search's λ when none is given: its 4-bit preset. */
export const DEFAULT_SEARCH_LAMBDA = SEARCH_PRESETS[4];

/** Throws EqzError('InvalidValue') naming the tensor and element when a weight is NaN or ±Inf. */
export function checkFinite(weights: Float32Array, name?: string): void {
  for (let i = 0; i < weights.length; i++) {
    if (!Number.isFinite(weights[i]!)) {
      throw new EqzError('InvalidValue', `weight ${i} is ${weights[i]}: only finite weights can be quantized`, { tensor: name });
    }
  }
}

/** Rows shorter than this search faster on the CPU than on a software adapter (barrier-bound workgroups). */
const SOFTWARE_MIN_ROW = 1024;
/** Tensors smaller than this evaluate the reference's loss faster on the CPU than on a software adapter. */
const SOFTWARE_MIN_REFERENCE = 2 ** 20;

/** The device to compute on: `gpu`, unless it is a software adapter and the CPU path is faster for this work. */
export function deviceFor(gpu: GpuContext | null | undefined, rows: number, cols: number, optimizer: Optimizer): GpuContext | null {
  if (!gpu) return null;
  if (!gpu.software) return gpu;
  const cpuFaster = optimizer === 'reference' ? rows * cols < SOFTWARE_MIN_REFERENCE : cols < SOFTWARE_MIN_ROW;
  return cpuFaster ? null : gpu;
}

function checkShape(weights: Float32Array, rows: number, cols: number, name?: string): void {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 1 || cols < 1 || weights.length !== rows * cols) {
    throw new EqzError('Malformed', `a [${rows}, ${cols}] matrix needs ${rows * cols} weights, got ${weights.length}`, { tensor: name });
  }
  if (cols > MAX_ROW_LENGTH) {
    throw new EqzError('LimitExceeded', `rows of ${cols} weights exceed the quantizer's limit of ${MAX_ROW_LENGTH}`, { tensor: name });
  }
}

/** rd-search's settings for `format` from the options (defaults filled in). */
export function searchSettings(options: QuantizeOptions, format: QuantFormat): SearchSettings {
  return {
    format,
    scaleDtype: options.scaleDtype,
    lambda: options.lambda ?? DEFAULT_SEARCH_LAMBDA,
    rdo: options.rdo ?? false,
    refinements: DEFAULT_REFINEMENTS,
    importance: options.importance ?? 1,
  };
}

/** Relative squared error + λ·bits/param of a result: the cost `auto` compares formats by. */
function searchCost(result: QuantizedTensor, lambda: number): number {
  return result.relL2 ** 2 + lambda * result.bitsPerParam;
}

/**
 * Quantizes a row-major [rows, cols] f32 matrix (one scale per row) on `options.gpu`, or on the CPU when it
 * is null or absent (rd-search gives the same codes and scales on both). Throws EqzError('InvalidValue')
 * naming `options.name` for NaN/Inf weights. A row of zeros gets scale 1 and all codes 0.
 */
export async function quantizeTensor(weights: Float32Array, rows: number, cols: number, options: QuantizeOptions): Promise<QuantizedTensor> {
  checkShape(weights, rows, cols, options.name);
  checkFinite(weights, options.name);
  if (options.optimizer !== 'rd-search') {
    if (options.format === 'auto') throw new EqzError('InvalidValue', `the ${options.optimizer} optimizer needs an explicit format`, { tensor: options.name });
    if (options.optimizer === 'absmax') return quantizeAbsmax(weights, rows, cols, options.format, options.scaleDtype);
    return quantizeReference(weights, rows, cols, { ...options, format: options.format, gpu: deviceFor(options.gpu, rows, cols, 'reference') });
  }
  const session = await SearchSession.open(weights, rows, cols, deviceFor(options.gpu, rows, cols, 'rd-search'));
  try {
    return await searchWithSession(session, weights, options);
  } finally {
    session.release();
  }
}

/** Absmax scales (absmax / 448 or / 127, rounded to the scale dtype; 1 for a row of zeros) and cast codes. */
function quantizeAbsmax(weights: Float32Array, rows: number, cols: number, format: QuantFormat, scaleDtype: ScaleDtype): QuantizedTensor {
  const scales = new Float32Array(rows);
  const maxValue = gridOf(format).maxValue;
  for (let r = 0; r < rows; r++) {
    let absMax = 0;
    for (let i = r * cols; i < (r + 1) * cols; i++) absMax = Math.max(absMax, Math.abs(weights[i]!));
    scales[r] = absMax > 0 ? roundScale(absMax / maxValue, scaleDtype) : 1;
  }
  return describeCast(weights, rows, cols, format, scales, scaleDtype);
}

/** rd-search on an open session (lets λ searches reuse the upload). */
export async function searchWithSession(session: SearchSession, weights: Float32Array, options: QuantizeOptions): Promise<QuantizedTensor> {
  const formats: QuantFormat[] = options.format === 'auto' ? ['int8', 'fp8-e4m3'] : [options.format];
  let best: QuantizedTensor | undefined;
  for (const format of formats) {
    const settings = searchSettings(options, format);
    const outcome = await session.run(settings, true);
    const result = describeQuantized(weights, session.rows, session.cols, format, outcome.codes!, scalesOf(outcome.indices), outcome.counts, options.scaleDtype);
    if (!best || searchCost(result, settings.lambda) < searchCost(best, settings.lambda)) best = result;
  }
  return best!;
}
