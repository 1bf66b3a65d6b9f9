/**
 * eqz's NVFP4 optimizer (`rd-search`): with the global scale fixed, blocks are independent and a block scale
 * has only 127 useful E4M3 values, so every block tries them all against the exact objective — squared error
 * + μ·(code lengths of its 16 codes and of its scale under the tensor's own frequency tables) — and the
 * tables and the choices are iterated (choices for the current tables, the tables of those choices, again),
 * like the design of an entropy-constrained quantizer. μ comes from λ, the price of one bit per parameter in
 * relative squared error (μ = λ·‖W‖²/N per bit), as in the FP8/INT8 rd-search (src/quant/search.ts), so one λ
 * spends bits alike across tensors and formats.
 *
 * Each pass is one dispatch per chunk of blocks on the GPU (wgsl/nvfp4_search.wgsl, one thread per block) or
 * the same loop on the CPU (search-kernel.ts); both give identical scales and codes.
 */
import type { GpuContext } from '../gpu/device.js';
import { acquireBuffer, pipeline, readBack, releaseBuffers } from '../quant/gpu.js';
import { codeLengths, LENGTH_UNIT } from '../quant/rate.js';
import { entropyBitsPerSymbol } from '../codec/index.js';
import { E4M3_VALUES } from '../tensor/dtype.js';
import { E2M1_MAGNITUDES, NVFP4_BLOCK } from './e2m1.js';
import { reciprocalScale } from './payload.js';
import { SCALE_CANDIDATES, searchBlocksCpu, type BlockSearchParams } from './search-kernel.js';

/** Histogram entries a pass returns: the 16 codes, then the 127 scale codes. */
export const COUNT_ENTRIES = 16 + SCALE_CANDIDATES;
const MIN_NORMAL = 2 ** -126;
/** μ above this is clamped (the kernels clamp μ' at 2^90 anyway). */
const MAX_LAMBDA_PER_LENGTH = 2 ** 60;

/**
 * d[k·8 + i] = RNE_f32(e2m1(i) × e4m3(k) × m) for scale codes k < 127: the decoded magnitudes a block can
 * take, exactly as the decoder computes them (e2m1 × e4m3 is exact, its product with m rounds once).
 */
export function decodedMagnitudes(globalScale: number): Float32Array {
  const m = reciprocalScale(globalScale);
  const table = new Float32Array(SCALE_CANDIDATES * 8);
  for (let k = 0; k < SCALE_CANDIDATES; k++) {
    for (let i = 0; i < 8; i++) table[k * 8 + i] = Math.fround(E2M1_MAGNITUDES[i]! * E4M3_VALUES[k]! * m);
  }
  return table;
}

/** Code lengths (quant/rate.ts units) of the 16 codes and the 127 scale codes from a pass's histogram. */
export function lengthsFromCounts(counts: Float64Array): { codeLengths: Uint32Array; scaleLengths: Uint32Array } {
  const codes = new Float64Array(256);
  const scales = new Float64Array(256);
  codes.set(counts.subarray(0, 16));
  scales.set(counts.subarray(16, COUNT_ENTRIES));
  return { codeLengths: codeLengths(codes).slice(0, 16), scaleLengths: codeLengths(scales).slice(0, SCALE_CANDIDATES) };
}

/** Where the passes run. Holds the tensor (uploaded once) across passes and runs. */
/** The code and scale lengths a pass searches under. */
type Lengths = ReturnType<typeof lengthsFromCounts>;

interface SearchBackend {
  /** One pass; returns the histogram ({@link COUNT_ENTRIES}: codes, then scale codes). */
  pass(params: BlockSearchParams, writeResult: boolean): Promise<Float64Array>;
  /**
   * `count` passes that write no result, each under the over-relaxed lengths of the one before (starting from
   * the lengths in `params`); returns the lengths after the last.
   */
  chain(params: BlockSearchParams, count: number): Promise<Lengths>;
  /** Scale codes and packed codes of the last pass that wrote its result. */
  result(): Promise<{ blockScales: Uint8Array; packed: Uint8Array }>;
  release(): void;
}

class CpuSearchBackend implements SearchBackend {
  private readonly blockScales: Uint8Array;
  private readonly packed: Uint8Array;
  private readonly bits: Uint32Array;

  constructor(weights: Float32Array) {
    this.bits = new Uint32Array(weights.buffer, weights.byteOffset, weights.length);
    this.blockScales = new Uint8Array(weights.length / NVFP4_BLOCK);
    this.packed = new Uint8Array(weights.length / 2);
  }

  async pass(params: BlockSearchParams, writeResult: boolean): Promise<Float64Array> {
    const codeCounts = new Float64Array(16);
    const scaleCounts = new Float64Array(SCALE_CANDIDATES);
    searchBlocksCpu(this.bits, 0, this.blockScales.length, params, this.blockScales, writeResult ? this.packed : null, codeCounts, scaleCounts);
    const counts = new Float64Array(COUNT_ENTRIES);
    counts.set(codeCounts);
    counts.set(scaleCounts, 16);
    return counts;
  }

  chain(params: BlockSearchParams, count: number): Promise<Lengths> {
    return chainOnHost(this, params, count);
  }

  async result(): Promise<{ blockScales: Uint8Array; packed: Uint8Array }> {
    return { blockScales: this.blockScales.slice(), packed: this.packed.slice() };
  }

  release(): void {}
}

/** Workgroup size of wgsl/nvfp4_search.wgsl (one thread per block). */
const WORKGROUP = 64;
/** Words of the kernel's tables: decoded magnitudes, code lengths, scale lengths. */
const TABLE_WORDS = SCALE_CANDIDATES * 8 + 16 + SCALE_CANDIDATES;
const PARAMS_BYTES = 16;
const BLOCK_BYTES = NVFP4_BLOCK * 4;

interface BlockChunk {
  firstBlock: number;
  blocks: number;
  weights: GPUBuffer;
  scales: GPUBuffer;
  packed: GPUBuffer;
  params: GPUBuffer;
  group: GPUBindGroup;
}

/** Splits `blocks` blocks into dispatches within the storage binding limit and the workgroup-count limit. */
export function blockChunks(device: GPUDevice, blocks: number, bindingLimit = Infinity): Array<{ firstBlock: number; blocks: number }> {
  const bytes = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize, bindingLimit);
  const perChunk = Math.min(Math.floor(bytes / BLOCK_BYTES), device.limits.maxComputeWorkgroupsPerDimension * WORKGROUP);
  if (perChunk < 1) throw new RangeError(`a block of ${BLOCK_BYTES} bytes exceeds the storage binding limit (${bytes} bytes)`);
  const chunks: Array<{ firstBlock: number; blocks: number }> = [];
  for (let firstBlock = 0; firstBlock < blocks; firstBlock += perChunk) chunks.push({ firstBlock, blocks: Math.min(perChunk, blocks - firstBlock) });
  return chunks;
}

class GpuSearchBackend implements SearchBackend {
  private constructor(
    private readonly device: GPUDevice,
    private readonly blockCount: number,
    private readonly chunks: BlockChunk[],
    private readonly tables: GPUBuffer,
    private readonly counts: GPUBuffer,
    private readonly kernel: GPUComputePipeline,
    private readonly update: { pipeline: GPUComputePipeline; group: GPUBindGroup },
  ) {}

  static async create(gpu: GpuContext, weights: Float32Array, bindingLimit?: number): Promise<GpuSearchBackend> {
    const device = gpu.device;
    const storage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const kernel = await pipeline(device, 'nvfp4_search.wgsl', 'search');
    const tables = acquireBuffer(device, TABLE_WORDS * 4, storage);
    const counts = acquireBuffer(device, COUNT_ENTRIES * 4, storage);
    const blockCount = weights.length / NVFP4_BLOCK;
    const chunks = blockChunks(device, blockCount, bindingLimit).map(({ firstBlock, blocks }): BlockChunk => {
      const chunkWeights = acquireBuffer(device, blocks * BLOCK_BYTES, storage);
      device.queue.writeBuffer(chunkWeights, 0, weights, firstBlock * NVFP4_BLOCK, blocks * NVFP4_BLOCK);
      const scales = acquireBuffer(device, blocks * 4, storage);
      const packed = acquireBuffer(device, blocks * 8, storage);
      const params = acquireBuffer(device, PARAMS_BYTES, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
      const group = device.createBindGroup({
        layout: kernel.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: chunkWeights, size: blocks * BLOCK_BYTES } },
          { binding: 1, resource: { buffer: params, size: PARAMS_BYTES } },
          { binding: 2, resource: { buffer: tables, size: TABLE_WORDS * 4 } },
          { binding: 3, resource: { buffer: scales, size: blocks * 4 } },
          { binding: 4, resource: { buffer: packed, size: blocks * 8 } },
          { binding: 5, resource: { buffer: counts, size: COUNT_ENTRIES * 4 } },
        ],
      });
      return { firstBlock, blocks, weights: chunkWeights, scales, packed, params, group };
    });
    const updatePipeline = await pipeline(device, 'nvfp4_search.wgsl', 'update');
    const updateGroup = device.createBindGroup({
      layout: updatePipeline.getBindGroupLayout(0),
      entries: [
        { binding: 6, resource: { buffer: counts, size: COUNT_ENTRIES * 4 } },
        { binding: 7, resource: { buffer: tables, size: TABLE_WORDS * 4 } },
      ],
    });
    return new GpuSearchBackend(device, blockCount, chunks, tables, counts, kernel, { pipeline: updatePipeline, group: updateGroup });
  }

  /** Uploads the pass's tables and parameters; returns an encoder for its dispatches. */
  private prepare(params: BlockSearchParams, writeResult: boolean): GPUCommandEncoder {
    const tables = new Uint32Array(TABLE_WORDS);
    tables.set(new Uint32Array(params.decoded.buffer, params.decoded.byteOffset, params.decoded.length), 0);
    tables.set(params.codeLengths, SCALE_CANDIDATES * 8);
    tables.set(params.scaleLengths, SCALE_CANDIDATES * 8 + 16);
    this.device.queue.writeBuffer(this.tables, 0, tables);
    for (const chunk of this.chunks) {
      const uniform = new ArrayBuffer(PARAMS_BYTES);
      new Uint32Array(uniform).set([chunk.blocks, 0, params.rdo ? 1 : 0, writeResult ? 1 : 0]);
      new Float32Array(uniform)[1] = params.lambdaPerLength;
      this.device.queue.writeBuffer(chunk.params, 0, uniform);
    }
    return this.device.createCommandEncoder();
  }

  /** Records one pass: the histogram cleared, then every chunk searched. */
  private record(encoder: GPUCommandEncoder): void {
    encoder.clearBuffer(this.counts, 0, COUNT_ENTRIES * 4);
    for (const chunk of this.chunks) {
      const pass = encoder.beginComputePass();
      pass.setPipeline(this.kernel);
      pass.setBindGroup(0, chunk.group);
      pass.dispatchWorkgroups(Math.ceil(chunk.blocks / WORKGROUP));
      pass.end();
    }
  }

  async pass(params: BlockSearchParams, writeResult: boolean): Promise<Float64Array> {
    const encoder = this.prepare(params, writeResult);
    this.record(encoder);
    return Float64Array.from(new Uint32Array(await readBack(this.device, this.counts, COUNT_ENTRIES * 4, encoder)));
  }

  /** The passes and the table updates between them (wgsl/nvfp4_search.wgsl `update`) in one submission: no round trips. */
  async chain(params: BlockSearchParams, count: number): Promise<Lengths> {
    const encoder = this.prepare(params, false);
    for (let i = 0; i < count; i++) {
      this.record(encoder);
      const pass = encoder.beginComputePass();
      pass.setPipeline(this.update.pipeline);
      pass.setBindGroup(0, this.update.group);
      pass.dispatchWorkgroups(1);
      pass.end();
    }
    const tables = new Uint32Array(await readBack(this.device, this.tables, TABLE_WORDS * 4, encoder));
    const lengthsAt = SCALE_CANDIDATES * 8;
    return {
      codeLengths: tables.slice(lengthsAt, lengthsAt + 16),
      scaleLengths: tables.slice(lengthsAt + 16, lengthsAt + 16 + SCALE_CANDIDATES),
    };
  }

  async result(): Promise<{ blockScales: Uint8Array; packed: Uint8Array }> {
    const blockScales = new Uint8Array(this.blockCount);
    const packed = new Uint8Array(this.blockCount * (NVFP4_BLOCK / 2));
    for (const chunk of this.chunks) {
      const scales = new Uint32Array(await readBack(this.device, chunk.scales, chunk.blocks * 4));
      for (let b = 0; b < chunk.blocks; b++) blockScales[chunk.firstBlock + b] = scales[b]!;
      packed.set(new Uint8Array(await readBack(this.device, chunk.packed, chunk.blocks * 8)), chunk.firstBlock * 8);
    }
    return { blockScales, packed };
  }

  release(): void {
    const buffers = [this.tables, this.counts];
    for (const chunk of this.chunks) buffers.push(chunk.weights, chunk.scales, chunk.packed, chunk.params);
    releaseBuffers(this.device, buffers);
  }
}

/** Settings of one search run. */
export interface Nvfp4SearchSettings {
  /** The tensor's global scale (f32, in [2^-32, 2^32]). */
  globalScale: number;
  /** Price of one bit/param in relative squared error (≥ 0; 0 = least error). */
  lambda: number;
  /** Rate–distortion optimised rounding (default true). */
  rdo?: boolean;
  /**
   * Most table ⇄ choice passes (default 18). A tensor with a row sample runs passes − fullPasses of them on the
   * sample, chained on the device with no round trip between them, and the rest on the whole tensor; without a
   * sample the passes stop early once the rate (the order-0 entropy of codes and scales) moves by less than 0.002
   * bits/param from one pass to the next.
   */
  passes?: number;
  /**
   * Most passes over the whole tensor after its sample settled the tables (default 1: a second one moved the rate
   * and error of 4096-wide synthetic tensors by under 0.1 %, see bench:nvfp4, and costs as much as the rest).
   */
  fullPasses?: number;
  /**
   * Histogram ({@link COUNT_ENTRIES}) the first pass's tables come from; default all equal, which makes the first
   * pass choose by error alone.
   */
  initialCounts?: Float64Array;
}

/** The histogram of a search's choices and the passes it took; the choices stay where the search ran. */
export interface Nvfp4SearchPasses {
  counts: Float64Array;
  /** Passes run over the sample and over the whole tensor. */
  samplePasses: number;
  fullPasses: number;
}

/** What a run chose, and the histogram of its choices. */
export interface Nvfp4SearchOutcome extends Nvfp4SearchPasses {
  blockScales: Uint8Array;
  packed: Uint8Array;
}

/** Default most passes: the table iteration from absmax tables converges in 10–20 passes on LLM weights. */
export const DEFAULT_SEARCH_PASSES = 18;
/** Default passes over the whole tensor after a sample found the tables. */
const FULL_PASSES_AFTER_SAMPLE = 1;
/** Tensors of more than twice this many blocks find their tables on a sample of about this many (whole rows). */
export const SAMPLE_BLOCKS = 16384;

/**
 * The iteration has settled when the order-0 entropy of codes + scales (bits/param, from a pass's histogram)
 * moves by less than this between passes.
 */
const SETTLED_BITS = 0.002;

/** Largest code length the tables hold (quant/rate.ts caps lengths at 24 bits). */
const MAX_LENGTH = 24 * LENGTH_UNIT;
/** Over-relaxation of the table update (see {@link overRelaxed}). */
const RELAXATION = 2;

/**
 * The next pass's tables: each length moved twice as far as the new table says, from the old one (rounded,
 * clamped to [0, 24 bits]). Plain updates (moving just to the new table) creep towards the fixed point over
 * 15–20 passes on LLM weights and can stall early at a worse one; over-relaxed ones get there in about 8–10
 * and reached lower cost in our measurements. The final rate is always that of the actual codes, whatever
 * the tables.
 */
function overRelaxed(
  old: ReturnType<typeof lengthsFromCounts>, fresh: ReturnType<typeof lengthsFromCounts>,
): ReturnType<typeof lengthsFromCounts> {
  const relax = (from: Uint32Array, to: Uint32Array) =>
    to.map((target, i) => Math.min(Math.max(Math.round(from[i]! + RELAXATION * (target - from[i]!)), 0), MAX_LENGTH));
  return { codeLengths: relax(old.codeLengths, fresh.codeLengths), scaleLengths: relax(old.scaleLengths, fresh.scaleLengths) };
}

/** {@link SearchBackend.chain} as a loop on the host: a pass, its histogram's over-relaxed lengths, again. */
async function chainOnHost(backend: SearchBackend, params: BlockSearchParams, count: number): Promise<Lengths> {
  let lengths: Lengths = { codeLengths: params.codeLengths, scaleLengths: params.scaleLengths };
  for (let i = 0; i < count; i++) lengths = overRelaxed(lengths, lengthsFromCounts(await backend.pass({ ...params, ...lengths }, false)));
  return lengths;
}

/** Order-0 entropy of a pass's codes and scales, bits per parameter. */
export function histogramBitsPerParam(counts: Float64Array): number {
  return entropyBitsPerSymbol(counts.subarray(0, 16)) + entropyBitsPerSymbol(counts.subarray(16, COUNT_ENTRIES)) / NVFP4_BLOCK;
}

/** Evenly spaced whole rows of a [rows, cols] tensor, about `blocks` blocks in all, or null when not worth it. */
function rowSample(weights: Float32Array, rows: number, cols: number, blocks: number): Float32Array | null {
  const sampleRows = Math.ceil((blocks * NVFP4_BLOCK) / cols);
  if (2 * sampleRows > rows) return null;
  const sample = new Float32Array(sampleRows * cols);
  for (let i = 0; i < sampleRows; i++) {
    const r = Math.floor((i * rows) / sampleRows);
    sample.set(weights.subarray(r * cols, (r + 1) * cols), i * cols);
  }
  return sample;
}

/**
 * A tensor held for searching (on the GPU when `gpu` is given): runs at any λ or global scale reuse the upload.
 * Call {@link Nvfp4SearchSession.release} when done.
 */
export class Nvfp4SearchSession {
  private constructor(
    private readonly backend: SearchBackend,
    private readonly sample: SearchBackend | null,
    readonly sumOfSquares: number,
    readonly numel: number,
  ) {}

  /**
   * Prepares `weights` ([rows, cols] row-major, finite, cols a multiple of 16) for searching on `gpu`, or on the
   * CPU when null. `bindingLimit` (bytes) splits the blocks into smaller dispatches than the device requires
   * and `sampleBlocks` sets the sample size (both for tests).
   */
  static async open(
    weights: Float32Array, rows: number, cols: number, gpu: GpuContext | null,
    options: { bindingLimit?: number; sampleBlocks?: number } = {},
  ): Promise<Nvfp4SearchSession> {
    let sumOfSquares = 0;
    for (let i = 0; i < weights.length; i++) sumOfSquares += weights[i]! * weights[i]!;
    const open = (values: Float32Array) => gpu ? GpuSearchBackend.create(gpu, values, options.bindingLimit) : Promise.resolve(new CpuSearchBackend(values));
    const sampleWeights = rowSample(weights, rows, cols, options.sampleBlocks ?? SAMPLE_BLOCKS);
    const backend = await open(weights);
    const sample = sampleWeights ? await open(sampleWeights) : null;
    return new Nvfp4SearchSession(backend, sample, sumOfSquares, weights.length);
  }

  /** μ per code-length unit for λ: λ·‖W‖²/N per bit, an f32 (subnormals flushed, huge values clamped). */
  lambdaPerLength(lambda: number): number {
    const perLength = Math.fround(Math.min((lambda * this.sumOfSquares) / Math.max(this.numel, 1) / LENGTH_UNIT, MAX_LAMBDA_PER_LENGTH));
    return perLength < MIN_NORMAL ? 0 : perLength;
  }

  /** Searches block scales and codes at `settings` and reads them back. */
  async run(settings: Nvfp4SearchSettings): Promise<Nvfp4SearchOutcome> {
    const passes = await this.search(settings);
    return { ...(await this.result()), ...passes };
  }

  /** The block scales and packed codes of the last {@link search}, read back. */
  result(): Promise<{ blockScales: Uint8Array; packed: Uint8Array }> {
    return this.backend.result();
  }

  /**
   * Searches block scales and codes at `settings`, leaving them on the device (what the benchmark times, like the
   * reference optimizer's tensors that stay on the GPU); {@link run} also reads them back.
   */
  async search(settings: Nvfp4SearchSettings): Promise<Nvfp4SearchPasses> {
    if (!(settings.lambda >= 0)) throw new RangeError(`λ must be ≥ 0, got ${settings.lambda}`);
    const passes = settings.passes ?? DEFAULT_SEARCH_PASSES;
    if (!Number.isInteger(passes) || passes < 1) throw new RangeError(`passes must be a positive integer, got ${passes}`);
    const base = { decoded: decodedMagnitudes(settings.globalScale), lambdaPerLength: this.lambdaPerLength(settings.lambda), rdo: settings.rdo ?? true };
    const initialCounts = settings.initialCounts ?? new Float64Array(COUNT_ENTRIES).fill(1);
    let lengths = lengthsFromCounts(initialCounts);
    // Iterates choices ⇄ tables on `backend` until the rate settles or `limit` passes.
    const iterate = async (backend: SearchBackend, limit: number, write: boolean) => {
      let counts = initialCounts;
      let bits = Infinity;
      let done = 0;
      while (done < limit) {
        counts = await backend.pass({ ...base, ...lengths }, write);
        done++;
        lengths = overRelaxed(lengths, lengthsFromCounts(counts));
        const previous = bits;
        bits = histogramBitsPerParam(counts);
        if (Math.abs(previous - bits) < SETTLED_BITS) break;
      }
      return { counts, done };
    };
    const afterSample = settings.fullPasses ?? FULL_PASSES_AFTER_SAMPLE;
    if (!Number.isInteger(afterSample) || afterSample < 1) throw new RangeError(`fullPasses must be a positive integer, got ${afterSample}`);
    const fullLimit = this.sample && passes > afterSample ? afterSample : passes;
    const samplePasses = this.sample ? passes - fullLimit : 0;
    if (this.sample) lengths = await this.sample.chain({ ...base, ...lengths }, samplePasses);
    const full = await iterate(this.backend, fullLimit, true);
    return { counts: full.counts, samplePasses, fullPasses: full.done };
  }

  release(): void {
    this.backend.release();
    this.sample?.release();
  }
}
