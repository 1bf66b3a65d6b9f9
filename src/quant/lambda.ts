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
import { deviceFor, quantizeTensor, searchWithSession, type QuantizeOptions } from './index.js';
import type { QuantizedTensor } from './result.js';
import { DEFAULT_REFINEMENTS, SearchSession } from './search.js';

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
 * closest trial is returned when no λ gets that close). Bits fall as λ grows: bracket by factors of 4, then
 * bisect geometrically. rd-search keeps the tensor on the device across trials; `format: 'auto'` searches
 * each format and keeps the one with the lower rel L2 at the target.
 */
export async function findLambdaForBits(
  weights: Float32Array, rows: number, cols: number, targetBits: number, options: QuantizeOptions,
): Promise<LambdaSearchResult> {
  if (!(targetBits > 0)) throw new EqzError('InvalidValue', `--bits must be positive, got ${targetBits}`, { tensor: options.name });
  if (options.optimizer === 'absmax') throw new EqzError('InvalidValue', 'absmax FP8 has no rate to target', { tensor: options.name });
  if (options.optimizer === 'reference') {
    return bisectLambda(targetBits, startingLambda(options), (lambda) => quantizeTensor(weights, rows, cols, { ...options, lambda }));
  }
  const session = await SearchSession.open(weights, rows, cols, deviceFor(options.gpu, rows, cols, 'rd-search'));
  try {
    const formats: QuantFormat[] = options.format === 'auto' ? ['int8', 'fp8-e4m3'] : [options.format];
    let best: LambdaSearchResult | undefined;
    for (const format of formats) {
      const found = await bisectLambda(targetBits, startingLambda(options),
        (lambda) => searchWithSession(session, weights, { ...options, format, lambda }));
      if (!best || Math.abs(found.result.bitsPerParam - targetBits) < Math.abs(best.result.bitsPerParam - targetBits) - 0.05
        || (Math.abs(found.result.bitsPerParam - best.result.bitsPerParam) <= 0.05 && found.result.relL2 < best.result.relL2)) {
        best = { ...found, trials: found.trials + (best?.trials ?? 0) };
      }
    }
    return best!;
  } finally {
    session.release();
  }
}

async function bisectLambda(
  targetBits: number, start: number, quantize: (lambda: number) => Promise<QuantizedTensor>,
): Promise<LambdaSearchResult> {
  let trials = 0;
  let best: { lambda: number; result: QuantizedTensor } | undefined;
  const tryLambda = async (lambda: number) => {
    const result = await quantize(lambda);
    trials++;
    if (!best || Math.abs(result.bitsPerParam - targetBits) < Math.abs(best.result.bitsPerParam - targetBits)) best = { lambda, result };
    return result.bitsPerParam;
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
  while (Math.abs(best!.result.bitsPerParam - targetBits) > BITS_TOLERANCE && trials < MAX_TRIALS) {
    const middle = Math.sqrt(low * high);
    if (await tryLambda(middle) > targetBits) low = middle;
    else high = middle;
  }
  return { ...best!, trials };
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
  const sampleRows = Math.min(rows, CURVE_SAMPLE_ROWS);
  let sample = weights;
  if (sampleRows < rows) {
    sample = new Float32Array(sampleRows * cols);
    for (let i = 0; i < sampleRows; i++) {
      const r = Math.floor((i * rows) / sampleRows);
      sample.set(weights.subarray(r * cols, (r + 1) * cols), i * cols);
    }
  }
  const session = await SearchSession.open(sample, sampleRows, cols, deviceFor(options.gpu, sampleRows, cols, 'rd-search'));
  try {
    const bits: number[] = [];
    const formats: QuantFormat[] = options.format === 'auto' ? ['int8', 'fp8-e4m3'] : [options.format];
    for (const lambda of lambdas) {
      let least = Infinity;
      for (const format of formats) {
        const outcome = await session.run({
          format, scaleDtype: options.scaleDtype, lambda, rdo: options.rdo ?? true, refinements: DEFAULT_REFINEMENTS, importance: options.importance ?? 1,
        }, false);
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
