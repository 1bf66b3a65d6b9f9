/**
 * The `rd-search` optimizer: per output channel, a direct search of the scale that minimises the exact
 * rate–distortion cost Σ (deq − w)² + μ·Σ len(code), where len is the code length under the tensor's own
 * order-0 frequency table; the table and the scales are iterated (scales for the current table, the table of
 * the resulting codes, again), like the design of an entropy-constrained scalar quantizer. Optionally the
 * rounding itself is rate–distortion optimised: a weight goes to the lower or upper neighbouring grid point,
 * whichever costs less error + μ·bits (decoding is unchanged: value(code) × scale).
 *
 * μ comes from λ, the price of one bit per parameter in relative squared error: μ = λ·‖W‖²/N per bit, so
 * minimising relL2² + λ·bitsPerParam per tensor with one λ for all tensors spends bits where they buy the
 * most (equal slope; see lambda.ts).
 *
 * Each pass is one dispatch per row chunk (GPU, wgsl/quant_search.wgsl) or the same loop on the CPU
 * (search-kernel.ts); both give identical codes and scales.
 */
import type { GpuContext } from '../gpu/device.js';
import { gridOf, indexAtOrBelow, scaleIndexRange, scaleOfIndex, type QuantFormat, type ScaleDtype } from './grid.js';
import { acquireBuffer, pipeline, readBack, releaseBuffers, rowChunks, type RowChunk } from './gpu.js';
import { codeLengths, LENGTH_UNIT } from './rate.js';
import {
  MAX_CANDIDATES, rowStatsCpu, searchRowsCpu, sumOfSquares, type RowStats, type SearchPassParams, type SearchRound,
} from './search-kernel.js';

/**
 * The first search pass over each row (scale steps are BF16 values, 128 per octave): −2…+1.5 octaves in half
 * octaves, then ±2 steps of 16, of 4 and of 1 around the best so far — each round leaves the optimum (of a
 * locally unimodal cost) inside the next one's reach. Denser plans (every 2nd BF16 value over ±1.5 octaves)
 * reach the same rate–distortion on the shared LMs and synthetic tensors.
 */
const FIRST_SEARCH: SearchRound[] = [
  { first: -4, count: 8, step: 64, skipCentre: false },
  { first: -2, count: 4, step: 16, skipCentre: true },
  { first: -2, count: 4, step: 4, skipCentre: true },
  { first: -2, count: 4, step: 1, skipCentre: true },
];
/** Later passes (a new table moves the optimum little): −16…+12 in steps of 4, then ±2 single steps. */
const REFINE_SEARCH: SearchRound[] = [
  { first: -4, count: 8, step: 4, skipCentre: false },
  { first: -2, count: 4, step: 1, skipCentre: true },
];
/** Table ⇄ scales iterations after the first search: more did not change the results measurably. */
export const DEFAULT_REFINEMENTS = 1;

/** Settings of one search run. */
export interface SearchSettings {
  format: QuantFormat;
  scaleDtype: ScaleDtype;
  /** Price of one bit/param in relative squared error (≥ 0). */
  lambda: number;
  /** Rate–distortion optimised rounding. */
  rdo: boolean;
  /** Table ⇄ scales iterations after the first search. */
  refinements: number;
  /** Multiplies the tensor's distortion (layers that matter more get more bits at one λ). */
  importance: number;
}

/** What a run produced: per-row scale indices, the code histogram, and the codes when asked for. */
export interface SearchOutcome {
  indices: Uint32Array;
  counts: Float64Array;
  codes: Uint8Array | null;
  /** Passes over the tensor the run made. */
  passes: number;
}

/** Where the passes run: the CPU loop or the GPU kernels. Holds the tensor (uploaded once) across runs. */
interface SearchBackend {
  rowStats(): Promise<RowStats>;
  /** One pass; returns the histogram of the chosen codes (and keeps the chosen indices as next centres). */
  pass(params: SearchPassParams, writeCodes: boolean): Promise<Float64Array>;
  /** Codes and indices of the last pass that wrote codes. */
  result(): Promise<{ codes: Uint8Array; indices: Uint32Array }>;
  release(): void;
}

class CpuSearchBackend implements SearchBackend {
  private readonly indices: Uint32Array;
  private readonly codes: Uint8Array;

  constructor(private readonly weights: Float32Array, private readonly rows: number, private readonly cols: number) {
    this.indices = new Uint32Array(rows);
    this.codes = new Uint8Array(rows * cols);
  }

  async rowStats(): Promise<RowStats> {
    return rowStatsCpu(this.weights, this.rows, this.cols);
  }

  async pass(params: SearchPassParams, writeCodes: boolean): Promise<Float64Array> {
    const counts = new Float64Array(256);
    searchRowsCpu(this.weights, this.rows, this.cols, params, this.indices, counts, writeCodes ? this.codes : null);
    return counts;
  }

  async result(): Promise<{ codes: Uint8Array; indices: Uint32Array }> {
    return { codes: this.codes.slice(), indices: this.indices.slice() };
  }

  release(): void {}
}

/** Bytes of the search kernel's uniform block (wgsl/quant_search.wgsl Params). */
const PARAMS_BYTES = 176;
const MAX_ROUNDS = 8;
const NO_INITIAL_INDEX = 0xffffffff;

interface GpuChunk extends RowChunk {
  weights: GPUBuffer;
  codes: GPUBuffer;
  params: GPUBuffer;
  searchGroup: GPUBindGroup;
  statsGroup: GPUBindGroup;
}

class GpuSearchBackend implements SearchBackend {
  private constructor(
    private readonly device: GPUDevice,
    private readonly rows: number,
    private readonly cols: number,
    private readonly chunks: GpuChunk[],
    private readonly shared: { tables: GPUBuffer; indices: GPUBuffer; counts: GPUBuffer; stats: GPUBuffer },
    private readonly searchPipeline: GPUComputePipeline,
    private readonly statsPipeline: GPUComputePipeline,
  ) {}

  static async create(gpu: GpuContext, weights: Float32Array, rows: number, cols: number, bindingLimit?: number): Promise<GpuSearchBackend> {
    const device = gpu.device;
    const storage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const searchPipeline = await pipeline(device, 'quant_search.wgsl', 'search');
    const statsPipeline = await pipeline(device, 'quant_search.wgsl', 'row_stats');
    const shared = {
      tables: acquireBuffer(device, 640 * 4, storage),
      indices: acquireBuffer(device, rows * 4, storage),
      counts: acquireBuffer(device, 256 * 4, storage),
      stats: acquireBuffer(device, rows * 12, storage),
    };
    const words = Math.ceil(cols / 4);
    const chunks = rowChunks(device, rows, cols * 4, bindingLimit).map((chunk): GpuChunk => {
      const chunkWeights = acquireBuffer(device, chunk.rows * cols * 4, storage);
      device.queue.writeBuffer(chunkWeights, 0, weights, chunk.firstRow * cols, chunk.rows * cols);
      const codes = acquireBuffer(device, chunk.rows * words * 4, storage);
      const params = acquireBuffer(device, PARAMS_BYTES, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
      const searchGroup = device.createBindGroup({
        layout: searchPipeline.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: chunkWeights } }, { binding: 1, resource: { buffer: params } },
          { binding: 2, resource: { buffer: shared.tables } }, { binding: 3, resource: { buffer: shared.indices } },
          { binding: 4, resource: { buffer: codes } }, { binding: 5, resource: { buffer: shared.counts } },
        ],
      });
      const statsGroup = device.createBindGroup({
        layout: statsPipeline.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: chunkWeights } }, { binding: 1, resource: { buffer: params } },
          { binding: 6, resource: { buffer: shared.stats } },
        ],
      });
      return { ...chunk, weights: chunkWeights, codes, params, searchGroup, statsGroup };
    });
    return new GpuSearchBackend(device, rows, cols, chunks, shared, searchPipeline, statsPipeline);
  }

  private writeParams(chunk: GpuChunk, params: SearchPassParams | null, writeCodes: boolean): void {
    const data = new ArrayBuffer(PARAMS_BYTES);
    const u32 = new Uint32Array(data);
    const f32 = new Float32Array(data);
    u32[0] = this.cols;
    u32[1] = chunk.firstRow;
    if (params) {
      if (params.rounds.length > MAX_ROUNDS) throw new RangeError(`at most ${MAX_ROUNDS} search rounds`);
      u32[2] = params.grid.format === 'int8' ? 1 : 0;
      u32[3] = params.grid.maxIndex;
      u32[4] = params.rdo ? 1 : 0;
      u32[5] = params.initialIndex ?? NO_INITIAL_INDEX;
      u32[6] = params.indexRange[0];
      u32[7] = params.indexRange[1];
      f32[8] = params.lambdaPerLength;
      u32[9] = params.rounds.length;
      u32[10] = writeCodes ? 1 : 0;
      const i32 = new Int32Array(data);
      params.rounds.forEach((round, i) => {
        if (round.count % 4 !== 0 || round.count > MAX_CANDIDATES) throw new RangeError('a round tries a multiple of 4 candidates, at most 16');
        i32[12 + 4 * i] = round.first;
        u32[13 + 4 * i] = round.count;
        u32[14 + 4 * i] = round.step;
        u32[15 + 4 * i] = round.skipCentre ? 1 : 0;
      });
    }
    this.device.queue.writeBuffer(chunk.params, 0, data);
  }

  async rowStats(): Promise<RowStats> {
    const encoder = this.device.createCommandEncoder();
    for (const chunk of this.chunks) {
      this.writeParams(chunk, null, false);
      const pass = encoder.beginComputePass();
      pass.setPipeline(this.statsPipeline);
      pass.setBindGroup(0, chunk.statsGroup);
      pass.dispatchWorkgroups(chunk.rows);
      pass.end();
    }
    const words = new Uint32Array(await readBack(this.device, this.shared.stats, this.rows * 12, encoder));
    const absMaxBits = new Uint32Array(this.rows);
    const squares = new Float64Array(2 * this.rows);
    for (let r = 0; r < this.rows; r++) {
      absMaxBits[r] = words[3 * r]!;
      squares[2 * r] = words[3 * r + 1]!;
      squares[2 * r + 1] = words[3 * r + 2]!;
    }
    return { absMaxBits, squares };
  }

  async pass(params: SearchPassParams, writeCodes: boolean): Promise<Float64Array> {
    const tables = new Uint32Array(640);
    tables.set(params.lengths, 0);
    tables.set(new Uint32Array(params.grid.values.buffer), 256);
    tables.set(new Uint32Array(params.grid.midpoints.buffer), 384);
    tables.set(new Uint32Array(params.grid.doubledGaps.buffer), 512);
    this.device.queue.writeBuffer(this.shared.tables, 0, tables);
    const encoder = this.device.createCommandEncoder();
    encoder.clearBuffer(this.shared.counts, 0, 1024);
    for (const chunk of this.chunks) {
      this.writeParams(chunk, params, writeCodes);
      const pass = encoder.beginComputePass();
      pass.setPipeline(this.searchPipeline);
      pass.setBindGroup(0, chunk.searchGroup);
      pass.dispatchWorkgroups(chunk.rows);
      pass.end();
    }
    return Float64Array.from(new Uint32Array(await readBack(this.device, this.shared.counts, 1024, encoder)));
  }

  async result(): Promise<{ codes: Uint8Array; indices: Uint32Array }> {
    const words = Math.ceil(this.cols / 4);
    const codes = new Uint8Array(this.rows * this.cols);
    for (const chunk of this.chunks) {
      const packed = new Uint8Array(await readBack(this.device, chunk.codes, chunk.rows * words * 4));
      if (words * 4 === this.cols) {
        codes.set(packed, chunk.firstRow * this.cols);
      } else {
        for (let r = 0; r < chunk.rows; r++) {
          codes.set(packed.subarray(r * words * 4, r * words * 4 + this.cols), (chunk.firstRow + r) * this.cols);
        }
      }
    }
    const indices = new Uint32Array(await readBack(this.device, this.shared.indices, this.rows * 4));
    return { codes, indices };
  }

  release(): void {
    const buffers = [this.shared.tables, this.shared.indices, this.shared.counts, this.shared.stats];
    for (const chunk of this.chunks) buffers.push(chunk.weights, chunk.codes, chunk.params);
    releaseBuffers(this.device, buffers);
  }
}

/**
 * A tensor held for searching (on the GPU when `gpu` is given): runs at any λ, format and settings reuse the
 * upload and the row statistics. Call {@link SearchSession.release} when done.
 */
export class SearchSession {
  private statsPromise: Promise<RowStats> | undefined;

  private constructor(private readonly backend: SearchBackend, readonly rows: number, readonly cols: number) {}

  /**
   * Prepares `weights` ([rows, cols], finite) for searching on `gpu`, or on the CPU when it is null.
   * `bindingLimit` (bytes) splits the rows into smaller dispatches than the device requires (for tests).
   */
  static async open(weights: Float32Array, rows: number, cols: number, gpu: GpuContext | null, bindingLimit?: number): Promise<SearchSession> {
    const backend = gpu ? await GpuSearchBackend.create(gpu, weights, rows, cols, bindingLimit) : new CpuSearchBackend(weights, rows, cols);
    return new SearchSession(backend, rows, cols);
  }

  private stats(): Promise<RowStats> {
    this.statsPromise ??= this.backend.rowStats();
    return this.statsPromise;
  }

  /** Searches scales and codes at `settings`; codes are read back only when `withCodes`. */
  async run(settings: SearchSettings, withCodes: boolean): Promise<SearchOutcome> {
    const stats = await this.stats();
    const grid = gridOf(settings.format);
    const indexRange = scaleIndexRange(settings.scaleDtype);
    const numel = this.rows * this.cols;
    // μ per bit, in absolute squared error; the kernels take it per code-length unit.
    const perBit = (settings.lambda * sumOfSquares(stats)) / numel / settings.importance;
    const lambdaPerLength = Math.fround(perBit / LENGTH_UNIT);
    const base = { grid, lambdaPerLength, rdo: settings.rdo, indexRange };
    // High-rate theory: an entropy-coded uniform quantizer of step Δ has slope dD/dR = −Δ²·ln2/6 per
    // element, so μ = Δ²·ln2/6 picks Δ; E4M3 is uniform with step s/512 where most weights fall at low rates.
    const step = Math.sqrt((6 * perBit) / Math.LN2);
    const initialScale = settings.format === 'fp8-e4m3' ? 512 * step : step;
    const initialIndex = initialScale > 2 ** -64 && initialScale < 2 ** 64 ? indexAtOrBelow(initialScale) : indexRange[0];
    const lastPass = settings.refinements + 1;
    let counts = await this.backend.pass(
      { ...base, lengths: new Uint32Array(256), rounds: [], initialIndex, rdo: false }, false,
    );
    for (let pass = 1; pass <= lastPass; pass++) {
      const rounds = pass === 1 ? FIRST_SEARCH : REFINE_SEARCH;
      counts = await this.backend.pass({ ...base, lengths: codeLengths(counts), rounds, initialIndex: null }, withCodes && pass === lastPass);
    }
    if (!withCodes) return { indices: new Uint32Array(0), counts, codes: null, passes: lastPass + 1 };
    const { codes, indices } = await this.backend.result();
    return { indices, counts, codes, passes: lastPass + 1 };
  }

  /** Returns the device buffers to their pool; the session must not be used afterwards. */
  release(): void {
    this.backend.release();
  }
}

/** The scales of a run's scale indices (exact in every scale dtype). */
export function scalesOf(indices: Uint32Array): Float32Array {
  const scales = new Float32Array(indices.length);
  for (let r = 0; r < indices.length; r++) scales[r] = scaleOfIndex(indices[r]!);
  return scales;
}
