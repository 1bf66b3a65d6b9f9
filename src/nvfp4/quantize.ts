/**
 * NVFP4 quantization of a full-precision 2-D weight ([rows, cols], cols a multiple of 16) with one of three
 * optimizers, and the true stored rate of the result:
 * - `absmax`: llm-compressor's NVFP4 exactly (absmax.ts) — what existing NVFP4 checkpoints hold;
 * - `reference`: the EntQuant fork's `entquant_exact` (reference.ts);
 * - `rd-search`: eqz's exhaustive per-block search of the exact rate–distortion cost (search.ts).
 *
 * bitsPerParam counts everything stored: it is the size of the actual `nvfp4` payload (header, both coded
 * streams with their tables and chunk states) × 8 / numel.
 */
import { bisectLambda, sampleRowsOf } from '../quant/lambda.js';
import { EqzError } from '../errors.js';
import type { GpuContext } from '../gpu/device.js';
import { checkFinite } from '../quant/index.js';
import { relativeErrors } from '../quant/result.js';
import { entropyBitsPerSymbol } from '../codec/index.js';
import { NVFP4_BLOCK, unpackCodes } from './e2m1.js';
import { absMax, absmaxGlobalScale, quantizeAbsmaxNvfp4, type Nvfp4Quantized, type SourceDtype } from './absmax.js';
import { dequantizeNvfp4F32, encodeNvfp4Payload, type CodePacking } from './payload.js';
import { DEFAULT_REFERENCE_LAMBDA, quantizeReferenceNvfp4 } from './reference.js';
import { Nvfp4SearchSession } from './search.js';

/** NVFP4 scale optimizers. */
export type Nvfp4Optimizer = 'absmax' | 'reference' | 'rd-search';

/** rd-search's λ when none is given (relative squared error per bit/param). */
export const DEFAULT_NVFP4_SEARCH_LAMBDA = 0.005;
export { DEFAULT_REFERENCE_LAMBDA };

export interface QuantizeNvfp4Options {
  optimizer: Nvfp4Optimizer;
  /**
   * Rate–distortion trade-off. `rd-search`: relative squared error one bit/param is worth (default
   * {@link DEFAULT_NVFP4_SEARCH_LAMBDA}). `reference`: the fork's `reg_param` (default 0.05). `absmax`: unused.
   */
  lambda?: number;
  /** Where to compute (rd-search and reference): a WebGPU context, or null/absent for the CPU. */
  gpu?: GpuContext | null;
  /** The global scale to use (e.g. shared by q/k/v, see shareGlobalScales); default the absmax rule. */
  globalScale?: number;
  /** The dtype the weights came in (absmax: llm-compressor rounds its statistics to it); default F32. */
  sourceDtype?: SourceDtype;
  /** +0 for values that round to zero; default false for absmax/reference (as compressed-tensors), rd-search always +0. */
  positiveZero?: boolean;
  /** rd-search: rate–distortion optimised rounding (default true). */
  rdo?: boolean;
  /** rd-search: most table ⇄ choice passes (default 18; see Nvfp4SearchSettings.passes). */
  passes?: number;
  /** reference: L-BFGS iterations per chunk (default 80), learning rate (default 1), blocks per chunk (default 8192). */
  maxIterations?: number;
  lr?: number;
  blockChunk?: number;
  /** Tensor name, for error messages. */
  name?: string;
}

/** A quantized NVFP4 tensor with its stored rate and its error against the original. */
export interface Nvfp4Result extends Nvfp4Quantized {
  /** Bytes of the `nvfp4` payload the tensor is stored in (code packing chosen by size). */
  payloadBytes: number;
  codePacking: CodePacking;
  /** Everything stored, per parameter: 8 · payloadBytes / numel. */
  bitsPerParam: number;
  /** Order-0 entropy of the codes and of the block scales, in bits per parameter (no overhead: a floor). */
  entropyBitsPerParam: number;
  /** ‖deq − W‖₁/‖W‖₁ and ‖deq − W‖₂/‖W‖₂ with deq the exact decoded f32 values (0 for an all-zero W). */
  relL1: number;
  relL2: number;
}

function checkShape(weights: Float32Array, rows: number, cols: number, name?: string): void {
  if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows < 1 || cols < 1 || weights.length !== rows * cols) {
    throw new EqzError('Malformed', `a [${rows}, ${cols}] matrix needs ${rows * cols} weights, got ${weights.length}`, { tensor: name });
  }
  if (cols % NVFP4_BLOCK !== 0) {
    throw new EqzError('Malformed', `NVFP4 needs the input dimension to be a multiple of ${NVFP4_BLOCK}, got ${cols}`, { tensor: name });
  }
}

/** Order-0 entropy of codes + scales, bits per parameter. */
function entropyOf(quantized: Nvfp4Quantized): number {
  const codeCounts = new Float64Array(16);
  for (const code of unpackCodes(quantized.packed)) codeCounts[code]!++;
  const scaleCounts = new Float64Array(256);
  for (const scale of quantized.blockScales) scaleCounts[scale]!++;
  return entropyBitsPerSymbol(codeCounts) + entropyBitsPerSymbol(scaleCounts) / NVFP4_BLOCK;
}

/**
 * Packages a quantized tensor with its stored size (the real payload, code packing chosen by size), entropy
 * and errors. Requires `await initCodec()`.
 */
export function describeNvfp4(weights: Float32Array, rows: number, cols: number, quantized: Nvfp4Quantized): Nvfp4Result {
  const tensor = { ...quantized, rows, cols };
  const payload = encodeNvfp4Payload(tensor);
  const numel = rows * cols;
  return {
    ...quantized,
    payloadBytes: payload.length,
    codePacking: payload[4] === 1 ? 'byte' : 'nibble',
    bitsPerParam: (8 * payload.length) / numel,
    entropyBitsPerParam: entropyOf(quantized),
    ...relativeErrors(weights, dequantizeNvfp4F32(tensor)),
  };
}

/**
 * Quantizes a row-major [rows, cols] f32 weight to NVFP4 (see the module comment for the optimizers) and
 * measures the result. Throws EqzError Malformed for a bad shape, InvalidValue naming `options.name` for NaN/Inf
 * weights. Requires `await initCodec()`.
 */
export async function quantizeNvfp4(weights: Float32Array, rows: number, cols: number, options: QuantizeNvfp4Options): Promise<Nvfp4Result> {
  checkShape(weights, rows, cols, options.name);
  checkFinite(weights, options.name);
  const dtype = options.sourceDtype ?? 'F32';
  let quantized: Nvfp4Quantized;
  switch (options.optimizer) {
    case 'absmax':
      quantized = quantizeAbsmaxNvfp4(weights, rows, cols, { globalScale: options.globalScale, sourceDtype: dtype, positiveZero: options.positiveZero });
      break;
    case 'reference':
      quantized = await quantizeReferenceNvfp4(weights, rows, cols, {
        lambda: options.lambda ?? DEFAULT_REFERENCE_LAMBDA, lr: options.lr, maxIterations: options.maxIterations,
        blockChunk: options.blockChunk, globalScale: options.globalScale, positiveZero: options.positiveZero, gpu: options.gpu,
      });
      break;
    case 'rd-search': {
      const session = await Nvfp4SearchSession.open(weights, rows, cols, options.gpu ?? null);
      try {
        const { packed, blockScales, globalScale } = await searchWithSession(session, weights, options);
        quantized = { packed, blockScales, globalScale };
      } finally {
        session.release();
      }
      break;
    }
    default:
      throw new EqzError('InvalidValue', `unknown NVFP4 optimizer "${String(options.optimizer)}"`, { tensor: options.name });
  }
  return describeNvfp4(weights, rows, cols, quantized);
}

/** rd-search on an open session (λ searches reuse the upload): the global scale given or by the absmax rule. */
export async function searchWithSession(
  session: Nvfp4SearchSession, weights: Float32Array, options: Omit<QuantizeNvfp4Options, 'optimizer'>,
): Promise<Nvfp4Quantized & { samplePasses: number; fullPasses: number }> {
  const globalScale = options.globalScale ?? absmaxGlobalScale(absMax(weights), options.sourceDtype ?? 'F32');
  const outcome = await session.run({ globalScale, lambda: options.lambda ?? DEFAULT_NVFP4_SEARCH_LAMBDA, rdo: options.rdo, passes: options.passes });
  return { packed: outcome.packed, blockScales: outcome.blockScales, globalScale, samplePasses: outcome.samplePasses, fullPasses: outcome.fullPasses };
}

/** rd-search λ values a rate curve is measured at: 2^-12 … 2^0 in steps of ×2 (≈ 4.2 down to below 2 bits/param). */
export const NVFP4_RATE_CURVE_LAMBDAS: readonly number[] = Array.from({ length: 13 }, (_, i) => 2 ** (i - 12));
/** Rate curves of taller tensors are measured on this many evenly spaced rows. */
const CURVE_SAMPLE_ROWS = 1024;

/**
 * rd-search's stored bits for the tensor at each λ of `lambdas` (default {@link NVFP4_RATE_CURVE_LAMBDAS}), in
 * the shape quant/lambda.ts's `lambdaForTotalBits` takes to choose one λ for a whole model. Tensors of more
 * than 1024 rows are measured on 1024 evenly spaced rows and their payload size scaled to all rows. The global
 * scale is the given one, else the whole tensor's absmax rule. Requires `await initCodec()`.
 */
export async function measureNvfp4RateCurve(
  weights: Float32Array, rows: number, cols: number, options: Omit<QuantizeNvfp4Options, 'optimizer' | 'lambda'>,
  lambdas: readonly number[] = NVFP4_RATE_CURVE_LAMBDAS,
): Promise<{ params: number; lambdas: number[]; bits: number[] }> {
  checkShape(weights, rows, cols, options.name);
  checkFinite(weights, options.name);
  const globalScale = options.globalScale ?? absmaxGlobalScale(absMax(weights), options.sourceDtype ?? 'F32');
  const { sample, sampleRows } = sampleRowsOf(weights, rows, cols, CURVE_SAMPLE_ROWS);
  const session = await Nvfp4SearchSession.open(sample, sampleRows, cols, options.gpu ?? null);
  try {
    const bits: number[] = [];
    for (const lambda of lambdas) {
      const quantized = await searchWithSession(session, sample, { ...options, globalScale, lambda });
      const payload = encodeNvfp4Payload({ ...quantized, rows: sampleRows, cols });
      bits.push((8 * payload.length * rows) / sampleRows);
    }
    return { params: rows * cols, lambdas: [...lambdas], bits };
  } finally {
    session.release();
  }
}


/**
 * rd-search with λ chosen so the tensor's stored bits/param come within 0.01 of `targetBits` (the closest
 * trial when none gets that close; rates are discrete). Bits fall as λ grows: bracket by factors of 4 from
 * 0.02, then bisect geometrically; the tensor stays on the device across trials. Requires `await initCodec()`.
 */
export async function findNvfp4LambdaForBits(
  weights: Float32Array, rows: number, cols: number, targetBits: number, options: Omit<QuantizeNvfp4Options, 'optimizer' | 'lambda'>,
): Promise<{ lambda: number; result: Nvfp4Result; trials: number }> {
  if (!(targetBits > 0)) throw new EqzError('InvalidValue', `the target rate must be positive, got ${targetBits}`, { tensor: options.name });
  checkShape(weights, rows, cols, options.name);
  checkFinite(weights, options.name);
  const session = await Nvfp4SearchSession.open(weights, rows, cols, options.gpu ?? null);
  try {
    const results = new Map<number, Nvfp4Result>();
    const found = await bisectLambda(targetBits, 0.02, async (lambda) => {
      const quantized = await searchWithSession(session, weights, { ...options, lambda });
      const result = describeNvfp4(weights, rows, cols, { packed: quantized.packed, blockScales: quantized.blockScales, globalScale: quantized.globalScale });
      results.set(lambda, result);
      return result.bitsPerParam;
    });
    return { ...found, result: results.get(found.lambda)! };
  } finally {
    session.release();
  }
}
