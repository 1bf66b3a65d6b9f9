/**
 * Hitting a rate: `--bits B` for one tensor (search λ until the stored bits/param reach B) and for a whole
 * model with one λ.
 *
 * Model-wide: minimising Σ_t N_t·relL2_t² + λ·Σ_t bits_t with the same λ for every tensor (rd-search's λ is
 * exactly that price) spends each bit where it removes the most error — equal slope. The converter streams
 * the model twice: first {@link measureRateCurve} per tensor (stored bits at a fixed grid of λ, from a sample
 * of rows for big tensors), then {@link lambdaForTotalBits} picks the λ whose summed curve meets the target,
 * and the second pass quantizes every tensor at that λ.
 */
import { EqzError } from '../errors.js';
import type { QuantFormat } from './grid.js';
import { REFERENCE_PRESETS, SEARCH_PRESETS } from './presets.js';
import { payloadBytes } from './rate.js';
import { deviceFor, quantizeTensor, searchSettings, searchWithSession, type QuantizeOptions } from './index.js';
import type { QuantizedTensor } from './result.js';
import { SearchSession } from './search.js';

/** Stop the per-tensor search when the stored rate is this close to the target (bits/param). */
const BITS_TOLERANCE = 0.01;
/** Trials of λ per tensor at most (bracketing by ×4, then geometric bisection). */
const MAX_TRIALS = 24;

/** The λ found for a target rate and the tensor quantized with it. */
export interface LambdaSearchResult {
  lambda: number;
  result: QuantizedTensor;
  /** Quantizations tried. */
  trials: number;
}

/** Where each optimizer's λ search starts: its 3-bit preset. */
function startingLambda(options: QuantizeOptions): number {
  return options.optimizer === 'reference' ? REFERENCE_PRESETS[3].lambda : SEARCH_PRESETS[3];
}

/**
 * Searches λ so the tensor's stored bits/param come within 0.01 of `targetBits` (rates are discrete, so the
 * closest trial is kept when no λ gets that close). Bits fall as λ grows: bracket by factors of 4, then
 * bisect geometrically. rd-search keeps the tensor on the device across trials and reads codes back only for
 * the chosen λ; `format: 'auto'` searches each format and keeps the one with the lower rel L2 (unless the
 * other lands closer to the target by more than 0.05 bit).
 */
export async function findLambdaForBits(
  weights: Float32Array, rows: number, cols: number, targetBits: number, options: QuantizeOptions,
): Promise<LambdaSearchResult> {
  if (!(targetBits > 0)) throw new EqzError('InvalidValue', `--bits must be positive, got ${targetBits}`, { tensor: options.name });
  if (options.optimizer === 'absmax') throw new EqzError('InvalidValue', 'absmax FP8 has no rate to target', { tensor: options.name });
  if (options.optimizer === 'reference') {
    const results = new Map<number, QuantizedTensor>();
    const found = await bisectLambda(targetBits, startingLambda(options), async (lambda) => {
      const result = await quantizeTensor(weights, rows, cols, { ...options, lambda });
      results.set(lambda, result);
      return result.bitsPerParam;
    });
    return { ...found, result: results.get(found.lambda)! };
  }
  const session = await SearchSession.open(weights, rows, cols, deviceFor(options.gpu, rows, cols, 'rd-search'));
  try {
    const formats: QuantFormat[] = options.format === 'auto' ? ['int8', 'fp8-e4m3'] : [options.format];
    const found: LambdaSearchResult[] = [];
    for (const format of formats) {
      const { lambda, trials } = await bisectLambda(targetBits, startingLambda(options), async (trial) => {
        const outcome = await session.run(searchSettings({ ...options, lambda: trial }, format), false);
        return (8 * payloadBytes(outcome.counts, rows * cols, rows, options.scaleDtype)) / (rows * cols);
      });
      found.push({ lambda, trials, result: await searchWithSession(session, weights, { ...options, format, lambda }) });
    }
    const trials = found.reduce((sum, f) => sum + f.trials, 0);
    found.sort((a, b) => {
      const miss = Math.abs(a.result.bitsPerParam - targetBits) - Math.abs(b.result.bitsPerParam - targetBits);
      return Math.abs(miss) > 0.05 ? miss : a.result.relL2 - b.result.relL2;
    });
    return { ...found[0]!, trials };
  } finally {
    session.release();
  }
}

/**
 * The λ whose rate (from `rateAt`, falling as λ grows) comes closest to `targetBits`, and how many rates it
 * measured: bracket by factors of 4 from `start`, then bisect geometrically until within 0.01 bit.
 */
export async function bisectLambda(
  targetBits: number, start: number, rateAt: (lambda: number) => Promise<number>,
): Promise<{ lambda: number; trials: number }> {
  let trials = 0;
  let best = { lambda: start, miss: Infinity };
  const tryLambda = async (lambda: number) => {
    const bits = await rateAt(lambda);
    trials++;
    if (Math.abs(bits - targetBits) < best.miss) best = { lambda, miss: Math.abs(bits - targetBits) };
    return bits;
  };
  // low λ → more bits than the target, high λ → fewer.
  let low = start;
  let high = start;
  let bits = await tryLambda(start);
  if (bits > targetBits) {
    while (bits > targetBits && trials < MAX_TRIALS) {
      low = high;
      high *= 4;
      bits = await tryLambda(high);
    }
  } else {
    while (bits < targetBits && trials < MAX_TRIALS && low > 1e-12) {
      high = low;
      low /= 4;
      bits = await tryLambda(low);
    }
  }
  while (best.miss > BITS_TOLERANCE && trials < MAX_TRIALS) {
    const middle = Math.sqrt(low * high);
    if (await tryLambda(middle) > targetBits) low = middle;
    else high = middle;
  }
  return { lambda: best.lambda, trials };
}

/** At most `most` evenly spaced rows of a [rows, cols] matrix (the matrix itself when it has no more). */
export function sampleRowsOf(weights: Float32Array, rows: number, cols: number, most: number): { sample: Float32Array; sampleRows: number } {
  const sampleRows = Math.min(rows, most);
  if (sampleRows === rows) return { sample: weights, sampleRows };
  const sample = new Float32Array(sampleRows * cols);
  for (let i = 0; i < sampleRows; i++) {
    const r = Math.floor((i * rows) / sampleRows);
    sample.set(weights.subarray(r * cols, (r + 1) * cols), i * cols);
  }
  return { sample, sampleRows };
}

/** Stored bits of one tensor at each λ of a grid, for choosing one λ for a whole model. */
export interface RateCurve {
  /** Parameters of the tensor. */
  params: number;
  /** The λ grid (increasing). */
  lambdas: number[];
  /** Stored bits of the whole tensor at each λ (decreasing). */
  bits: number[];
}

/** rd-search λ values a rate curve is measured at: 2^-13 … 2^-1 in steps of ×2 (about 7 down to 1 bit/param). */
export const RATE_CURVE_LAMBDAS: readonly number[] = Array.from({ length: 13 }, (_, i) => 2 ** (i - 13));
/** Rate curves of taller tensors are measured on this many evenly spaced rows. */
const CURVE_SAMPLE_ROWS = 1024;

/**
 * rd-search's stored bits for the tensor at each λ of `lambdas` (default {@link RATE_CURVE_LAMBDAS}). Tensors
 * with more than 1024 rows are measured on 1024 evenly spaced rows, their code histogram scaled to all rows.
 */
export async function measureRateCurve(
  weights: Float32Array, rows: number, cols: number, options: QuantizeOptions,
  lambdas: readonly number[] = RATE_CURVE_LAMBDAS,
): Promise<RateCurve> {
  if (options.optimizer !== 'rd-search') throw new EqzError('InvalidValue', 'rate curves are measured with rd-search', { tensor: options.name });
  const { sample, sampleRows } = sampleRowsOf(weights, rows, cols, CURVE_SAMPLE_ROWS);
  const session = await SearchSession.open(sample, sampleRows, cols, deviceFor(options.gpu, sampleRows, cols, 'rd-search'));
  try {
    const bits: number[] = [];
    const formats: QuantFormat[] = options.format === 'auto' ? ['int8', 'fp8-e4m3'] : [options.format];
    for (const lambda of lambdas) {
      let least = Infinity;
      for (const format of formats) {
        const outcome = await session.run(searchSettings({ ...options, lambda }, format), false);
        const counts = outcome.counts.map((count) => (count * rows) / sampleRows);
        least = Math.min(least, 8 * payloadBytes(counts, rows * cols, rows, options.scaleDtype));
      }
      bits.push(least);
    }
    return { params: rows * cols, lambdas: [...lambdas], bits };
  } finally {
    session.release();
  }
}

/**
 * The one λ at which the tensors' summed stored bits, plus `fixedBits` stored some other way, average
 * `targetBitsPerParam` over their parameters plus `fixedParams` (interpolated in log λ between grid points;
 * the grid's end when the target lies outside it). All curves must share one λ grid.
 */
export function lambdaForTotalBits(curves: readonly RateCurve[], targetBitsPerParam: number, fixedBits = 0, fixedParams = 0): number {
  if (curves.length === 0) throw new RangeError('no rate curves');
  const lambdas = curves[0]!.lambdas;
  const params = curves.reduce((sum, curve) => sum + curve.params, fixedParams);
  const rate = lambdas.map((_, i) => (curves.reduce((sum, curve) => sum + curve.bits[i]!, fixedBits)) / params);
  if (targetBitsPerParam >= rate[0]!) return lambdas[0]!;
  for (let i = 1; i < lambdas.length; i++) {
    if (rate[i]! <= targetBitsPerParam) {
      const fraction = (rate[i - 1]! - targetBitsPerParam) / (rate[i - 1]! - rate[i]!);
      return Math.exp(Math.log(lambdas[i - 1]!) + fraction * (Math.log(lambdas[i]!) - Math.log(lambdas[i - 1]!)));
    }
  }
  return lambdas[lambdas.length - 1]!;
}
