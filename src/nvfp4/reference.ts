/**
 * `--optimizer reference` for NVFP4: the `entquant_exact` optimizer of the EntQuant fork (DrXuQian/entquant,
 * entquant/quantization/nvfp4_optimizer.py), reimplemented from its description:
 *
 * - start from its absmax scales: s_b = max(max|block| / 6, 10⁻⁶), global g = 448 / max s_b, scales rounded
 *   through E4M3 (s_b ← e4m3(s_b·g) / g);
 * - the blocks, in chunks of 8192, are optimized chunk by chunk, each with its own L-BFGS run (strong-Wolfe line
 *   search, lr 1, 80 iterations, history 100 — quant/lbfgs.ts is torch.optim.LBFGS) over θ_b = log2 s_b;
 * - loss of a chunk: ‖deq − W‖₁ / (‖W‖₁ + 10⁻⁶) + λ·4·mean|q|, with xs = w·2^-θ, q = e2m1(cast(xs)) and
 *   deq = q·2^θ; gradients pass straight through the rounding, so per element ∂deq/∂θ = ln2·2^θ·(q − xs) and
 *   ∂|q|/∂θ = −ln2·sign(q)·xs;
 * - at the end: s_b = max(2^θ_b, 10⁻⁶), g = 448 / max s_b (or the given shared global scale), block scale
 *   E4M3(clamp(s_b·g, 0, 448)), codes cast at the stored scales as compressed-tensors does (absmax.ts).
 *
 * Deviations, all for robustness: a block whose initial E4M3 scale is 0 starts at 10⁻⁶ rather than log2(0);
 * θ is kept within ±126 so 2^θ stays a normal f32; a block whose stored scale is 0 gets +0 codes.
 *
 * The chunks run concurrently and their loss evaluations are batched: one GPU dispatch (wgsl/nvfp4_reference.wgsl)
 * or one CPU loop serves every chunk waiting for an evaluation. GPU and CPU sums agree closely, not bit for bit
 * (float reductions), which the reference does not need.
 */
import type { GpuContext } from '../gpu/device.js';
import { castE4M3 } from '../quant/grid.js';
import { acquireBuffer, pipeline, readBack, releaseBuffers } from '../quant/gpu.js';
import { minimizeLbfgs } from '../quant/lbfgs.js';
import { E4M3_VALUES } from '../tensor/dtype.js';
import { E2M1_MAGNITUDES, NVFP4_BLOCK, roundE2M1Magnitude } from './e2m1.js';
import { E4M3_MAX, castWithBlockScales, type Nvfp4Quantized } from './absmax.js';
import { MAX_GLOBAL_SCALE, MIN_GLOBAL_SCALE } from './payload.js';
import { blockChunks } from './search.js';

/** The fork's defaults: λ 3.9 is its config default, far too strong for NVFP4; its quickstart uses 0.05. */
export const DEFAULT_REFERENCE_LAMBDA = 0.05;
const DEFAULT_MAX_ITERATIONS = 80;
const DEFAULT_BLOCK_CHUNK = 8192;
const HISTORY_SIZE = 100;
const MIN_SCALE = Math.fround(1e-6);
const NORM_EPSILON = 1e-6;
const MAX_THETA = 126;

export interface ReferenceNvfp4Options {
  /** The regulariser weight (`reg_param`); default {@link DEFAULT_REFERENCE_LAMBDA}. */
  lambda?: number;
  /** L-BFGS learning rate (default 1). */
  lr?: number;
  /** L-BFGS iterations per chunk (default 80). */
  maxIterations?: number;
  /** Blocks per chunk (default 8192). */
  blockChunk?: number;
  /** Shared global scale to store with; default 448 / max optimized block scale. */
  globalScale?: number;
  /** +0 for values that round to zero (default false, as the fork and compressed-tensors). */
  positiveZero?: boolean;
  gpu?: GpuContext | null;
}

/** Per-block sums of one evaluation: Σ|deq − w|, Σ|q|, Σ sign(e)·s·(q − xs), Σ sign(q)·xs. */
interface BlockSums {
  absError: Float64Array;
  absCode: Float64Array;
  errorSlope: Float64Array;
  codeSlope: Float64Array;
}

/** One chunk's request: its first block and per-block f32 (2^-θ, 2^θ) pairs. */
interface SumsRequest {
  first: number;
  factors: Float32Array;
}

/** Evaluates the sums of each request's blocks. */
type SumsEvaluator = (requests: readonly SumsRequest[]) => Promise<BlockSums[]>;

function newSums(count: number): BlockSums {
  return { absError: new Float64Array(count), absCode: new Float64Array(count), errorSlope: new Float64Array(count), codeSlope: new Float64Array(count) };
}

function cpuSums(weights: Float32Array): SumsEvaluator {
  return async (requests) => requests.map(({ first, factors }) => {
    const count = factors.length / 2;
    const sums = newSums(count);
    for (let b = 0; b < count; b++) {
      const inverse = factors[2 * b]!;
      const scale = factors[2 * b + 1]!;
      let absError = 0;
      let absCode = 0;
      let errorSlope = 0;
      let codeSlope = 0;
      for (let i = (first + b) * NVFP4_BLOCK; i < (first + b + 1) * NVFP4_BLOCK; i++) {
        const w = weights[i]!;
        const xs = Math.fround(w * inverse);
        const magnitude = E2M1_MAGNITUDES[roundE2M1Magnitude(Math.abs(xs))]!;
        const q = xs < 0 ? -magnitude : magnitude;
        const error = Math.fround(q * scale) - w;
        absError += Math.abs(error);
        absCode += magnitude;
        errorSlope += Math.sign(error) * scale * (q - xs);
        codeSlope += Math.sign(q) * xs;
      }
      sums.absError[b] = absError;
      sums.absCode[b] = absCode;
      sums.errorSlope[b] = errorSlope;
      sums.codeSlope[b] = codeSlope;
    }
    return sums;
  });
}

const REFERENCE_PARAMS_BYTES = 16;
/** Workgroup size of wgsl/nvfp4_reference.wgsl (one thread per block). */
const REFERENCE_WORKGROUP = 64;

/**
 * GPU sums: the tensor uploaded once; per evaluation every request's factors go up, one dispatch per GPU chunk
 * the requests touch, and four sums per block come back (blocks of chunks already finished are recomputed
 * with their last factors and ignored).
 */
async function gpuSums(gpu: GpuContext, weights: Float32Array): Promise<{ evaluate: SumsEvaluator; release: () => void }> {
  const device = gpu.device;
  const storage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const kernel = await pipeline(device, 'nvfp4_reference.wgsl', 'block_sums');
  const blocks = weights.length / NVFP4_BLOCK;
  const clear = device.createCommandEncoder();
  const chunks = blockChunks(device, blocks).map((chunk) => {
    const chunkWeights = acquireBuffer(device, chunk.blocks * NVFP4_BLOCK * 4, storage);
    device.queue.writeBuffer(chunkWeights, 0, weights, chunk.firstBlock * NVFP4_BLOCK, chunk.blocks * NVFP4_BLOCK);
    const factors = acquireBuffer(device, chunk.blocks * 8, storage);
    clear.clearBuffer(factors);
    const sums = acquireBuffer(device, chunk.blocks * 16, storage);
    const params = acquireBuffer(device, REFERENCE_PARAMS_BYTES, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    device.queue.writeBuffer(params, 0, Uint32Array.of(chunk.blocks, 0, 0, 0));
    const group = device.createBindGroup({
      layout: kernel.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: chunkWeights, size: chunk.blocks * NVFP4_BLOCK * 4 } },
        { binding: 1, resource: { buffer: params, size: REFERENCE_PARAMS_BYTES } },
        { binding: 2, resource: { buffer: factors, size: chunk.blocks * 8 } },
        { binding: 3, resource: { buffer: sums, size: chunk.blocks * 16 } },
      ],
    });
    return { ...chunk, weights: chunkWeights, factors, sums, params, group };
  });
  device.queue.submit([clear.finish()]);
  const evaluate: SumsEvaluator = async (requests) => {
    const overlaps = (chunk: (typeof chunks)[number], request: SumsRequest) =>
      request.first < chunk.firstBlock + chunk.blocks && request.first + request.factors.length / 2 > chunk.firstBlock;
    const touched = chunks.filter((chunk) => requests.some((request) => overlaps(chunk, request)));
    const encoder = device.createCommandEncoder();
    for (const chunk of touched) {
      for (const request of requests) {
        if (!overlaps(chunk, request)) continue;
        const from = Math.max(request.first, chunk.firstBlock);
        const to = Math.min(request.first + request.factors.length / 2, chunk.firstBlock + chunk.blocks);
        device.queue.writeBuffer(chunk.factors, (from - chunk.firstBlock) * 8, request.factors, (from - request.first) * 2, (to - from) * 2);
      }
      const pass = encoder.beginComputePass();
      pass.setPipeline(kernel);
      pass.setBindGroup(0, chunk.group);
      pass.dispatchWorkgroups(Math.ceil(chunk.blocks / REFERENCE_WORKGROUP));
      pass.end();
    }
    device.queue.submit([encoder.finish()]);
    const results = requests.map((request) => newSums(request.factors.length / 2));
    for (const chunk of touched) {
      const values = new Float32Array(await readBack(device, chunk.sums, chunk.blocks * 16));
      requests.forEach((request, r) => {
        if (!overlaps(chunk, request)) return;
        const from = Math.max(request.first, chunk.firstBlock);
        const to = Math.min(request.first + request.factors.length / 2, chunk.firstBlock + chunk.blocks);
        for (let block = from; block < to; block++) {
          const at = 4 * (block - chunk.firstBlock);
          const b = block - request.first;
          results[r]!.absError[b] = values[at]!;
          results[r]!.absCode[b] = values[at + 1]!;
          results[r]!.errorSlope[b] = values[at + 2]!;
          results[r]!.codeSlope[b] = values[at + 3]!;
        }
      });
    }
    return results;
  };
  const release = () => releaseBuffers(device, chunks.flatMap((chunk) => [chunk.weights, chunk.factors, chunk.sums, chunk.params]));
  return { evaluate, release };
}

/**
 * Batches the evaluations of concurrently running chunks: a request waits until every chunk still running has
 * asked (or finished), then one evaluation serves them all.
 */
class EvaluationBatcher {
  private active: number;
  private readonly waiting: Array<SumsRequest & { resolve: (sums: BlockSums) => void; reject: (error: unknown) => void }> = [];

  constructor(chunks: number, private readonly evaluate: SumsEvaluator) {
    this.active = chunks;
  }

  request(first: number, factors: Float32Array): Promise<BlockSums> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ first, factors, resolve, reject });
      this.flushIfReady();
    });
  }

  finished(): void {
    this.active--;
    this.flushIfReady();
  }

  private flushIfReady(): void {
    if (this.waiting.length === 0 || this.waiting.length < this.active) return;
    const batch = this.waiting.splice(0);
    this.evaluate(batch).then(
      (sums) => batch.forEach((request, i) => request.resolve(sums[i]!)),
      (error) => batch.forEach((request) => request.reject(error)),
    );
  }
}

/** The fork's absmax starting scales (actual block scales, f32): s_b rounded through E4M3 at g = 448 / max s_b. */
function initialScales(weights: Float32Array): Float32Array {
  const blocks = weights.length / NVFP4_BLOCK;
  const scales = new Float32Array(blocks);
  let largest = 0;
  for (let b = 0; b < blocks; b++) {
    let blockMax = 0;
    for (let i = b * NVFP4_BLOCK; i < (b + 1) * NVFP4_BLOCK; i++) blockMax = Math.max(blockMax, Math.abs(weights[i]!));
    scales[b] = Math.max(Math.fround(blockMax / 6), MIN_SCALE);
    largest = Math.max(largest, scales[b]!);
  }
  const globalScale = Math.fround(E4M3_MAX / largest);
  for (let b = 0; b < blocks; b++) {
    const stored = E4M3_VALUES[castE4M3(Math.min(Math.fround(scales[b]! * globalScale), E4M3_MAX))]!;
    scales[b] = Math.max(Math.fround(stored / globalScale), MIN_SCALE);
  }
  return scales;
}

/** Optimizes the θ of blocks [first, first + count) (one chunk) with L-BFGS; returns the final θ. */
async function optimizeChunk(
  weights: Float32Array, first: number, theta0: Float64Array, batcher: EvaluationBatcher, options: ReferenceNvfp4Options,
): Promise<Float64Array> {
  const lambda = options.lambda ?? DEFAULT_REFERENCE_LAMBDA;
  const count = theta0.length;
  let norm1 = 0;
  for (let i = first * NVFP4_BLOCK; i < (first + count) * NVFP4_BLOCK; i++) norm1 += Math.abs(weights[i]!);
  const regularizer = (4 * lambda) / (count * NVFP4_BLOCK);
  const factors = new Float32Array(2 * count);
  const objective = async (theta: Float64Array) => {
    for (let b = 0; b < count; b++) {
      const t = Math.fround(Math.min(Math.max(theta[b]!, -MAX_THETA), MAX_THETA));
      factors[2 * b] = Math.fround(2 ** -t);
      factors[2 * b + 1] = Math.fround(2 ** t);
    }
    const sums = await batcher.request(first, factors.slice());
    let absError = 0;
    let absCode = 0;
    const gradient = new Float64Array(count);
    for (let b = 0; b < count; b++) {
      absError += sums.absError[b]!;
      absCode += sums.absCode[b]!;
      gradient[b] = Math.LN2 * (sums.errorSlope[b]! / (norm1 + NORM_EPSILON) - regularizer * sums.codeSlope[b]!);
    }
    const value = absError / (norm1 + NORM_EPSILON) + regularizer * absCode;
    if (!Number.isFinite(value)) throw new RangeError('NVFP4 reference loss became non-finite');
    return { value, gradient };
  };
  // The fork halves the learning rate and starts over when the loss stops being finite.
  for (let lr = options.lr ?? 1; lr > 1e-3; lr /= 2) {
    try {
      const run = await minimizeLbfgs(objective, theta0, { lr, maxIterations: options.maxIterations ?? DEFAULT_MAX_ITERATIONS, historySize: HISTORY_SIZE });
      return run.x;
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
    }
  }
  return theta0;
}

/**
 * NVFP4 by the fork's `entquant_exact` optimizer ([rows, cols] row-major f32, finite, cols a multiple of 16).
 * Every chunk runs concurrently; their evaluations are batched on the GPU when `options.gpu` is given.
 */
export async function quantizeReferenceNvfp4(weights: Float32Array, rows: number, cols: number, options: ReferenceNvfp4Options = {}): Promise<Nvfp4Quantized> {
  const blocks = (rows * cols) / NVFP4_BLOCK;
  const chunkBlocks = options.blockChunk ?? DEFAULT_BLOCK_CHUNK;
  const initial = initialScales(weights);
  const backend = options.gpu ? await gpuSums(options.gpu, weights) : { evaluate: cpuSums(weights), release: () => {} };
  const theta = new Float64Array(blocks);
  try {
    const chunkCount = Math.ceil(blocks / chunkBlocks);
    const batcher = new EvaluationBatcher(chunkCount, backend.evaluate);
    await Promise.all(Array.from({ length: chunkCount }, async (_, c) => {
      const first = c * chunkBlocks;
      const theta0 = new Float64Array(Math.min(chunkBlocks, blocks - first));
      for (let b = 0; b < theta0.length; b++) theta0[b] = Math.fround(Math.log2(initial[first + b]!));
      try {
        theta.set(await optimizeChunk(weights, first, theta0, batcher, options), first);
      } finally {
        batcher.finished();
      }
    }));
  } finally {
    backend.release();
  }
  const scales = new Float32Array(blocks);
  let largest = 0;
  for (let b = 0; b < blocks; b++) {
    const t = Math.fround(Math.min(Math.max(theta[b]!, -MAX_THETA), MAX_THETA));
    scales[b] = Math.max(Math.fround(2 ** t), MIN_SCALE);
    largest = Math.max(largest, scales[b]!);
  }
  const globalScale = options.globalScale
    ?? Math.min(Math.max(Math.fround(E4M3_MAX / largest), MIN_GLOBAL_SCALE), MAX_GLOBAL_SCALE);
  const blockScales = new Uint8Array(blocks);
  for (let b = 0; b < blocks; b++) blockScales[b] = castE4M3(Math.min(Math.fround(scales[b]! * globalScale), E4M3_MAX));
  const packed = new Uint8Array((rows * cols) / 2);
  castWithBlockScales(weights, blockScales, globalScale, packed, options.positiveZero ?? false);
  return { packed, blockScales, globalScale };
}
