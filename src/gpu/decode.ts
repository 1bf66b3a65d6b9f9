/**
 * GPU decoding of .eqz tensors straight into GPU buffers (wgsl/decode*.wgsl): fp8-e4m3 / int8 tensors dequantized
 * to F32, F16 or BF16 (or left as codes + row scales), nvfp4 tensors dequantized likewise (or left as
 * compressed-tensors' packed codes + block scales + global scale), planes tensors reassembled to their original
 * bytes (or converted), raw tensors uploaded. Many tensors share one dispatch.
 *
 *     const decoder = await GpuDecoder.create(await acquireGpu());
 *     const [q, k] = await decoder.decodeToBuffers([
 *       { entry: qEntry, payload: qPayload, output: 'BF16' },
 *       { entry: kEntry, payload: kPayload },
 *     ]);
 *     // q.buffer holds q's BF16 elements at q.offset .. q.offset + q.byteLength (tensors may share buffers)
 *     const bytes = await decoder.readBack(q);
 *
 * Results are bit-identical to the CPU decoder (src/decode/tensor.ts). Payloads are checked on the host first,
 * through the codec's own parsers (src/gpu/decode-plan.ts); what only decoding can reveal (a chunk that does not
 * decode exactly, an E4M3 NaN code) the kernels report per chunk, and the call rejects with the EqzError codes
 * the CPU decoder uses (CorruptStream, InvalidValue), naming the tensor and, with `payloadOffset`, the file offset.
 * A call's inputs all go to the GPU at once: decode a large model in groups of tensors (a block at a time).
 * An nvfp4 tensor's block-scale stream is decoded first, in the same pass, into a temporary buffer that its
 * code stream's dequantizing dispatches then read (spec §7.6: m = 1 / global_scale is computed on the host, where
 * it is correctly rounded).
 *
 * Kernels (see wgsl/decode.wgsl): `wide` when the adapter's subgroups have 32 to 128 invocations (NVIDIA, AMD):
 * a chunk's 32 lanes are 32 invocations of one subgroup, words are handed out by ballot and loaded through the
 * cache, outputs gathered by shuffles, no barriers. Otherwise the same decoding with its chunk-wide operations going
 * through workgroup memory: `narrow` (smaller subgroups, SwiftShader's 4) or `portable` (no subgroups). If an
 * adapter's subgroups turn out not to be laid out as a kernel needs, it says so through its status word and the
 * decoder falls back to the next kernel for good.
 */
import type { Dtype } from '../container/format.js';
import { STREAM_HEADER_SIZE } from '../codec/constants.js';
import type { TensorEntry } from '../container/table.js';
import { decodePayload, type OutputDtype } from '../decode/tensor.js';
import { EqzError } from '../errors.js';
import type { GpuContext } from './device.js';
import {
  planDecode, type ChunkWork, type DecodeDispatch, type DecodePipeline, type DecodePlan, type GpuDecodeRequest,
  type MergeDispatch, type PlannedStream, BYTES_PIPELINE, MAX_CHUNKS_PER_GROUP, MODE_RANS,
} from './decode-plan.js';
import { createPipeline, preprocessWgsl, type ShaderLoader } from './decode-shaders.js';

export type { GpuDecodeRequest, GpuOutput } from './decode-plan.js';

/**
 * How rANS lanes share a chunk's words: `wide` (subgroups of ≥ 32: ballots, no barriers), `narrow` (smaller
 * subgroups, combined through workgroup memory), `portable` (workgroup memory only).
 */
export type DecodeKernel = 'wide' | 'narrow' | 'portable';

/**
 * Workgroup memory the kernels need with the table in it: 16 KiB of table beside at most about 10 KiB of other
 * arrays (decode.wgsl, 32 chunks a workgroup), rounded up to the next limit a device is likely to grant. WebGPU's
 * default limit is 16 KiB.
 */
export const WORKGROUP_TABLE_BYTES = 32 * 1024;

/** Options of {@link GpuDecoder.create}. */
export interface GpuDecoderOptions {
  /** Kernel path; default the fastest the adapter's features allow. */
  kernel?: DecodeKernel;
  /**
   * Where the 4096-slot decode tables live while decoding: workgroup memory or a storage buffer. Default: a
   * storage buffer for the wide kernel (faster on NVIDIA), else workgroup memory where the device allows
   * {@link WORKGROUP_TABLE_BYTES} of it (not WebGPU's default limit).
   */
  table?: 'workgroup' | 'storage';
  /**
   * Chunks (of 32 lanes) per workgroup, 1..32 (at most the device's invocation limit / 32), or `auto` (per
   * dispatch: fewer when chunks are few, so they spread over the GPU; at most 32 for the wide kernel, 8 for the
   * others). Default `auto` on hardware adapters, 8 on software ones (each value is a pipeline to compile).
   */
  chunksPerWorkgroup?: number | 'auto';
  /** Cap on storage binding sizes below the adapter's (tests use it to exercise splitting). */
  maxBindingBytes?: number;
  /** Scratch buffer for planes before they are merged; default min(256 MiB, binding limit). */
  scratchBytes?: number;
  /** Where the WGSL comes from; default (Node) wgsl/ beside the sources. Browsers and other hosts must pass one. */
  shaderLoader?: ShaderLoader;
}

/** A decoded tensor in a GPU buffer. Several tensors of one call may share a buffer. */
export interface GpuTensor {
  name: string;
  /** Element dtype of the bytes: the output dtype, or F8_E4M3 / I8 / U8 (nvfp4's packed codes) for `codes` outputs. */
  dtype: Dtype;
  /** The tensor's shape; for nvfp4 `codes`, the packed codes' [rows, cols/2]. */
  shape: number[];
  buffer: GPUBuffer;
  /** Byte offset of the first element in `buffer` (a multiple of 256). */
  offset: number;
  byteLength: number;
  /** fp8-e4m3 / int8 `codes` outputs: one f32 scale per row, at this byte offset of `buffer`. */
  scales?: { offset: number; count: number };
  /** nvfp4 `codes` outputs: the E4M3 block-scale bytes ([rows, cols/16]) at this byte offset of `buffer`. */
  blockScales?: { offset: number; count: number };
  /** nvfp4 `codes` outputs: the f32 global scale at this byte offset of `buffer`, and its value. */
  globalScale?: { offset: number; value: number };
}

const DEFAULT_SCRATCH_BYTES = 256 * 1024 * 1024;
/** The most chunks per workgroup 'auto' gives the narrow and portable kernels (see autoMostChunks). */
const PORTABLE_CHUNKS_PER_GROUP = 8;
const STATUS_BYTES = 16;
/** Status words (decode.wgsl STATUS_*): the first chunk that did not decode, subgroups unsuitable, the first NaN code. */
const STATUS_FAILURE = 0;
const STATUS_LAYOUT = 1;
const STATUS_INVALID_CODE = 2;
const MERGE_UNIFORM_STRIDE = 256;
const MAX_DISPATCH_DIMENSION = 65535;
const MERGE_WORKGROUP = 256;

const FAILURE_MESSAGES = [
  '', 'a lane state is below 2^16', 'the chunk needs more words than it has', 'words left over or a final state is not 2^16',
];
const FAILURE_INVALID_CODE = 4;

/** Pipelines by device, then by source and constants: compiled once per process (slow on software adapters). */
const pipelineCache = new WeakMap<GPUDevice, Map<string, Promise<GPUComputePipeline>>>();

function cachedPipeline(
  device: GPUDevice, label: string, code: string, entryPoint: string, constants: Record<string, number>,
): Promise<GPUComputePipeline> {
  let pipelines = pipelineCache.get(device);
  if (!pipelines) {
    pipelines = new Map();
    pipelineCache.set(device, pipelines);
  }
  const key = `${entryPoint} ${JSON.stringify(constants)} ${code}`;
  let pipeline = pipelines.get(key);
  if (!pipeline) {
    pipeline = createPipeline(device, label, code, entryPoint, constants);
    pipeline.catch(() => pipelines.delete(key));
    pipelines.set(key, pipeline);
  }
  return pipeline;
}

function kernelFlags(kernel: DecodeKernel, table: 'workgroup' | 'storage', nvfp4: boolean): Record<string, boolean> {
  return { SUBGROUPS: kernel !== 'portable', WIDE: kernel === 'wide', TABLE_IN_WORKGROUP: table === 'workgroup', NVFP4: nvfp4 };
}

/** The fastest path `gpu` supports. */
export function defaultKernel(gpu: GpuContext): DecodeKernel {
  if (!gpu.subgroups) return 'portable';
  return gpu.subgroupMinSize >= 32 && gpu.subgroupMaxSize <= 128 ? 'wide' : 'narrow';
}

/** Decodes tensors on the GPU; create once per device (pipelines are compiled once, buffers reused). */
export class GpuDecoder {
  readonly gpu: GpuContext;
  private kernelInUse: DecodeKernel;
  /** Where decode tables live while decoding. */
  readonly table: 'workgroup' | 'storage';
  readonly chunksPerWorkgroup: number | 'auto';
  private readonly maxChunksPerWorkgroup: number;
  private readonly maxBindingBytes: number;
  private readonly maxBufferBytes: number;
  private readonly scratchLimit: number;
  private readonly loader: ShaderLoader;
  /** Preprocessed decode.wgsl per kernel, with and without NVFP4. */
  private readonly sources = new Map<string, string>();
  private scratch: GPUBuffer | undefined;

  private constructor(gpu: GpuContext, options: GpuDecoderOptions, loader: ShaderLoader) {
    this.gpu = gpu;
    const limits = gpu.device.limits;
    this.kernelInUse = options.kernel ?? defaultKernel(gpu);
    if (this.kernelInUse !== 'portable' && !gpu.subgroups) throw new Error(`the ${this.kernelInUse} kernel needs subgroups, which ${gpu.description} lacks`);
    // The wide kernel reads tables through the cache: on an H100, 1 GiB of 3-bit codes decoded at 678 GB/s from
    // storage against 532 from workgroup memory (bench:gpu variants, 8 chunks a workgroup). The others keep them in
    // workgroup memory where it fits.
    const workgroupFits = limits.maxComputeWorkgroupStorageSize >= WORKGROUP_TABLE_BYTES;
    this.table = options.table ?? (this.kernelInUse !== 'wide' && workgroupFits ? 'workgroup' : 'storage');
    // A device opened with default limits (compatibility mode: 128 invocations) holds fewer chunks per workgroup.
    this.maxChunksPerWorkgroup = Math.min(MAX_CHUNKS_PER_GROUP, Math.floor(limits.maxComputeInvocationsPerWorkgroup / 32));
    const chunks = options.chunksPerWorkgroup ?? (gpu.software ? this.autoMostChunks : 'auto');
    if (chunks !== 'auto' && !(Number.isInteger(chunks) && chunks >= 1 && chunks <= this.maxChunksPerWorkgroup)) {
      throw new RangeError(`chunksPerWorkgroup must be 'auto' or an integer in 1..${this.maxChunksPerWorkgroup} on ${gpu.description}`);
    }
    this.chunksPerWorkgroup = chunks;
    this.maxBindingBytes = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize, options.maxBindingBytes ?? Infinity);
    this.maxBufferBytes = limits.maxBufferSize;
    this.scratchLimit = Math.min(this.maxBindingBytes, options.scratchBytes ?? DEFAULT_SCRATCH_BYTES);
    this.loader = loader;
  }

  /** A decoder for `gpu`; compiles the pipelines the common outputs need. */
  static async create(gpu: GpuContext, options: GpuDecoderOptions = {}): Promise<GpuDecoder> {
    // Files are untrusted input: the device's own bounds clamping stays as a second line behind the kernel's.
    if (!gpu.boundsChecks) throw new Error('the GPU decoder needs a device with bounds checks (acquireGpu without boundsChecks: false)');
    // Imported only when needed, so that this module has no Node imports of its own.
    const loader = options.shaderLoader ?? (await import('./decode-shader-files.js')).fileShaderLoader;
    const decoder = new GpuDecoder(gpu, options, loader);
    const chunks = decoder.chunksPerWorkgroup;
    await decoder.decodePipeline(BYTES_PIPELINE, chunks === 'auto' ? decoder.autoMostChunks : chunks);
    return decoder;
  }

  /**
   * The most chunks per workgroup 'auto' gives the kernel in use. The wide kernel takes as many as the device
   * allows: on an H100, 1 GiB of 3-bit codes decoded at 678 GB/s with 8 chunks per workgroup, 691 with 16 and 707
   * with 32. The others keep 8: their ballots and shuffles wait at workgroup barriers, which more invocations make
   * longer (a plan made for the wide kernel still runs on them after a fall-back: their arrays are sized per pipeline).
   */
  private get autoMostChunks(): number {
    return this.kernelInUse === 'wide' ? this.maxChunksPerWorkgroup : Math.min(PORTABLE_CHUNKS_PER_GROUP, this.maxChunksPerWorkgroup);
  }

  /** The kernel path in use (it can fall back to a slower one after a call, see the module comment). */
  get kernel(): DecodeKernel {
    return this.kernelInUse;
  }

  /** The decode pipeline `pipeline` (decode-plan.ts) with `chunksPerGroup` chunks per workgroup and this decoder's kernel. */
  decodePipeline(pipeline: DecodePipeline, chunksPerGroup: number): Promise<GPUComputePipeline> {
    const kernel = this.kernelInUse;
    const nvfp4 = pipeline.nvfp4Elements > 0;
    const variant = `${kernel}${nvfp4 ? ' nvfp4' : ''}`;
    let code = this.sources.get(variant);
    if (code === undefined) {
      code = preprocessWgsl(this.loader('decode'), kernelFlags(kernel, this.table, nvfp4), this.loader);
      this.sources.set(variant, code);
    }
    const fixedSize = this.gpu.subgroupMinSize === this.gpu.subgroupMaxSize ? this.gpu.subgroupMinSize : 0;
    return cachedPipeline(this.gpu.device, 'decode.wgsl', code, 'decode', {
      OUTPUT_FORMAT: pipeline.format, SYMBOL_BITS: pipeline.symbolBits, SYMBOL_ELEMENTS: Math.max(1, pipeline.nvfp4Elements),
      CHUNKS_PER_GROUP: chunksPerGroup, SUBGROUP_SIZE: kernel === 'wide' ? fixedSize : 0,
    });
  }

  /** The plane-merge pipeline for a source kind / width and output kind (decode-plan.ts MERGE_*). */
  mergePipeline(sourceKind: number, sourceWidth: number, outputKind: number): Promise<GPUComputePipeline> {
    const code = preprocessWgsl(this.loader('decode-merge'), {}, this.loader);
    return cachedPipeline(this.gpu.device, 'decode-merge.wgsl', code, 'merge', {
      SOURCE_KIND: sourceKind, SOURCE_WIDTH: sourceWidth, OUTPUT_KIND: outputKind,
    });
  }

  /**
   * The scratch buffer, at least `size` bytes. A larger one replaces it when needed; the old one is not
   * destroyed, since a prepared job may still use it (it goes when that job is collected).
   */
  scratchBuffer(size: number): GPUBuffer {
    if (!this.scratch || this.scratch.size < size) {
      this.scratch = this.gpu.device.createBuffer({ label: 'eqz decode scratch', size: Math.max(4, size), usage: GPUBufferUsage.STORAGE });
    }
    return this.scratch;
  }

  /**
   * Checks and uploads `requests` and allocates their outputs; run the job (once or, e.g. for timing, many
   * times) with {@link GpuDecodeJob.run}. Bad payloads reject here with EqzError, before any GPU work.
   */
  async prepare(requests: readonly GpuDecodeRequest[]): Promise<GpuDecodeJob> {
    const plan = planDecode(requests, {
      maxBindingBytes: this.maxBindingBytes,
      maxBufferBytes: this.maxBufferBytes,
      scratchBytes: this.scratchLimit,
      chunksPerGroup: this.chunksPerWorkgroup,
      maxChunksPerGroup: this.autoMostChunks,
    }, decodeRaw);
    const job = new GpuDecodeJob(this, requests, plan);
    await job.resolvePipelines();
    return job;
  }

  /**
   * Decodes `requests` into GPU buffers. Resolves when the GPU has finished and every chunk decoded exactly;
   * rejects with EqzError (the tensor named, file offsets when `payloadOffset` is given) otherwise.
   */
  async decodeToBuffers(requests: readonly GpuDecodeRequest[]): Promise<GpuTensor[]> {
    const job = await this.prepare(requests);
    try {
      await job.run();
      return job.tensors;
    } catch (error) {
      job.destroyOutputs();
      throw error;
    } finally {
      job.destroyInputs();
    }
  }

  /**
   * Switches for good to the next slower kernel (wide → narrow → portable; narrow only with subgroups): the
   * adapter's subgroups did not suit the current one.
   */
  fallBack(): void {
    this.kernelInUse = this.kernelInUse === 'wide' && this.gpu.subgroupMinSize > 0 && 32 % this.gpu.subgroupMinSize === 0 ? 'narrow' : 'portable';
  }

  /** Copies `byteLength` bytes at `offset` of `buffer` back to the host. */
  async readBuffer(buffer: GPUBuffer, offset: number, byteLength: number): Promise<Uint8Array> {
    const start = offset - (offset % 4);
    const size = Math.ceil((offset + byteLength - start) / 4) * 4;
    if (size === 0) return new Uint8Array(0);
    const staging = this.gpu.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    try {
      const encoder = this.gpu.device.createCommandEncoder();
      encoder.copyBufferToBuffer(buffer, start, staging, 0, size);
      this.gpu.device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      return new Uint8Array(staging.getMappedRange()).slice(offset - start, offset - start + byteLength);
    } finally {
      staging.destroy();
    }
  }

  /** A decoded tensor's bytes (little-endian elements of `tensor.dtype`). */
  readBack(tensor: GpuTensor): Promise<Uint8Array> {
    return this.readBuffer(tensor.buffer, tensor.offset, tensor.byteLength);
  }

  /** The f32 row scales of a `codes` output. */
  async readScales(tensor: GpuTensor): Promise<Float32Array> {
    if (!tensor.scales) throw new Error(`tensor "${tensor.name}" has no scales (not a codes output)`);
    const bytes = await this.readBuffer(tensor.buffer, tensor.scales.offset, tensor.scales.count * 4);
    return new Float32Array(bytes.buffer, bytes.byteOffset, tensor.scales.count);
  }

  /** Frees the decoder's scratch buffer (pipelines go with the device). */
  destroy(): void {
    this.scratch?.destroy();
    this.scratch = undefined;
  }
}

/** Raw payloads need no GPU work: the CPU decoder converts them and the bytes are uploaded. */
function decodeRaw(entry: TensorEntry, payload: Uint8Array, dtype: Dtype): Uint8Array {
  const convertible = dtype === 'F32' || dtype === 'F16' || dtype === 'BF16';
  return decodePayload(entry, payload, convertible && dtype !== entry.dtype ? { dtype: dtype as OutputDtype } : {});
}

interface BoundDecode {
  dispatch: DecodeDispatch;
  data: GPUBuffer;
  pipeline?: GPUComputePipeline;
  bindGroup?: GPUBindGroup;
}

interface BoundMerge {
  dispatch: MergeDispatch;
  uniformOffset: number;
  pipeline?: GPUComputePipeline;
  bindGroup?: GPUBindGroup;
}

/** A prepared decode call: inputs uploaded, outputs allocated, ready to run. */
export class GpuDecodeJob {
  /** The outputs, one per request, valid once {@link run} has resolved. */
  readonly tensors: GpuTensor[];
  private readonly device: GPUDevice;
  private readonly arenas: GPUBuffer[];
  private readonly rounds: { decodes: BoundDecode[]; merges: BoundMerge[] }[];
  private readonly uniforms: GPUBuffer | undefined;
  private readonly status: GPUBuffer;
  private readonly statusReadback: GPUBuffer;
  private readonly scratch: GPUBuffer | undefined;

  /** Decoded bytes this job writes (all outputs). */
  readonly outputBytes: number;
  /** Decode and merge dispatches per run. */
  readonly dispatchCount: number;

  constructor(
    private readonly decoder: GpuDecoder,
    private readonly requests: readonly GpuDecodeRequest[],
    private readonly plan: DecodePlan,
  ) {
    const device = decoder.gpu.device;
    this.device = device;
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    this.arenas = plan.arenas.map(({ size, temporary }, i) => device.createBuffer({
      label: `eqz ${temporary ? 'block scales' : 'decoded'} ${i}`, size: Math.max(4, size), usage,
    }));
    this.tensors = plan.outputs.map((output, i) => ({
      name: requests[i]!.entry.name,
      dtype: output.dtype,
      shape: output.shape,
      buffer: this.arenas[output.arena]!,
      offset: output.offset,
      byteLength: output.byteLength,
      scales: output.scales ? { offset: output.scales.offset, count: output.scales.count } : undefined,
      blockScales: output.blockScales,
      globalScale: output.globalScale,
    }));
    this.outputBytes = plan.outputs.reduce((sum, output) => sum + output.byteLength, 0);
    for (const output of plan.outputs) {
      const arena = this.arenas[output.arena]!;
      if (output.hostBytes) writePadded(device, arena, output.offset, output.hostBytes);
      if (output.scales) writePadded(device, arena, output.scales.offset, new Uint8Array(output.scales.values.buffer));
      if (output.globalScale) device.queue.writeBuffer(arena, output.globalScale.offset, Float32Array.of(output.globalScale.value));
    }
    this.scratch = plan.scratchSize > 0 ? decoder.scratchBuffer(plan.scratchSize) : undefined;
    const mergeCount = plan.rounds.reduce((sum, round) => sum + round.merges.length, 0);
    this.uniforms = mergeCount > 0
      ? device.createBuffer({ label: 'eqz merge jobs', size: mergeCount * MERGE_UNIFORM_STRIDE, usage: GPUBufferUsage.UNIFORM, mappedAtCreation: true })
      : undefined;
    const uniformWords = this.uniforms ? new Uint32Array(this.uniforms.getMappedRange()) : undefined;
    let mergeIndex = 0;
    this.rounds = plan.rounds.map((round) => ({
      decodes: round.decodes.map((dispatch) => ({ dispatch, data: uploadData(device, dispatch) })),
      merges: round.merges.map((dispatch) => {
        const uniformOffset = mergeIndex++ * MERGE_UNIFORM_STRIDE;
        const words = Math.ceil(dispatch.outputSize / 4);
        const groups = Math.ceil(words / MERGE_WORKGROUP);
        uniformWords!.set([dispatch.elements, dispatch.planeStride / 4, Math.min(groups, MAX_DISPATCH_DIMENSION), 0], uniformOffset / 4);
        return { dispatch, uniformOffset };
      }),
    }));
    this.uniforms?.unmap();
    this.dispatchCount = plan.rounds.reduce((sum, round) => sum + round.decodes.length + round.merges.length, 0);
    this.status = device.createBuffer({ label: 'eqz decode status', size: STATUS_BYTES, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    this.statusReadback = device.createBuffer({ size: STATUS_BYTES, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  }

  /** (Re)creates pipelines and bind groups for the decoder's current kernel. */
  async resolvePipelines(): Promise<void> {
    for (const round of this.rounds) {
      for (const bound of round.decodes) {
        const { dispatch } = bound;
        bound.pipeline = await this.decoder.decodePipeline(dispatch.pipeline, dispatch.chunksPerGroup);
        const output = dispatch.arena < 0 ? this.scratch! : this.arenas[dispatch.arena]!;
        const entries: GPUBindGroupEntry[] = [
          { binding: 0, resource: { buffer: bound.data } },
          { binding: 1, resource: { buffer: output, offset: dispatch.outputOffset, size: Math.max(4, dispatch.outputSize) } },
          { binding: 2, resource: { buffer: this.status } },
        ];
        const { blockScales } = dispatch;
        if (blockScales) {
          entries.push({ binding: 3, resource: { buffer: this.arenas[blockScales.arena]!, offset: blockScales.offset, size: Math.max(4, blockScales.size) } });
        }
        bound.bindGroup = this.device.createBindGroup({ layout: bound.pipeline.getBindGroupLayout(0), entries });
      }
      for (const bound of round.merges) {
        const { dispatch } = bound;
        bound.pipeline ??= await this.decoder.mergePipeline(dispatch.sourceKind, dispatch.sourceWidth, dispatch.outputKind);
        bound.bindGroup ??= this.device.createBindGroup({
          layout: bound.pipeline.getBindGroupLayout(0),
          entries: [
            { binding: 0, resource: { buffer: this.scratch!, offset: dispatch.scratchOffset, size: dispatch.scratchSize } },
            { binding: 1, resource: { buffer: this.arenas[dispatch.arena]!, offset: dispatch.outputOffset, size: dispatch.outputSize } },
            { binding: 2, resource: { buffer: this.uniforms!, offset: bound.uniformOffset, size: 16 } },
          ],
        });
      }
    }
  }

  /** Records the job into `encoder`: status cleared, then one compute pass with every dispatch, rounds in order. */
  encode(encoder: GPUCommandEncoder, timestampWrites?: GPUComputePassTimestampWrites): void {
    encoder.clearBuffer(this.status);
    const pass = encoder.beginComputePass({ label: 'eqz decode', timestampWrites });
    for (const round of this.rounds) {
      for (const { dispatch, pipeline, bindGroup } of round.decodes) {
        pass.setPipeline(pipeline!);
        pass.setBindGroup(0, bindGroup!);
        dispatchGroups(pass, dispatch.groupCount);
      }
      for (const { dispatch, pipeline, bindGroup } of round.merges) {
        pass.setPipeline(pipeline!);
        pass.setBindGroup(0, bindGroup!);
        dispatchGroups(pass, Math.ceil(Math.ceil(dispatch.outputSize / 4) / MERGE_WORKGROUP));
      }
    }
    pass.end();
    encoder.copyBufferToBuffer(this.status, 0, this.statusReadback, 0, STATUS_BYTES);
  }

  /**
   * Runs the job and checks the kernels' status: rejects with the EqzError of the first bad chunk (see
   * {@link failureOf}). If the subgroup layout did not suit the kernel, falls back to the next kernel and runs again.
   */
  async run(): Promise<void> {
    for (;;) {
      const encoder = this.device.createCommandEncoder({ label: 'eqz decode' });
      this.encode(encoder);
      this.device.queue.submit([encoder.finish()]);
      const status = await this.readStatus();
      if (status[STATUS_LAYOUT] !== 0 && this.decoder.kernel !== 'portable') {
        // The kernel found the subgroups unsuitable and wrote nothing: run again with the next kernel.
        this.decoder.fallBack();
        await this.resolvePipelines();
        continue;
      }
      const failure = this.failureOf(status);
      if (failure) throw failure;
      return;
    }
  }

  /**
   * The error the status words of a run report, or undefined when every chunk decoded exactly. Of a chunk that
   * does not decode exactly and one that decodes an E4M3 NaN code, the one the CPU decoder meets first: it checks
   * a stream's codes after the whole stream has decoded, so the NaN code only if its stream comes first.
   */
  failureOf(status: Uint32Array): EqzError | undefined {
    const [corrupt, invalid] = [STATUS_FAILURE, STATUS_INVALID_CODE].map((word) => (status[word] ? (~status[word]!) >>> 0 : undefined));
    if (corrupt === undefined && invalid === undefined) return undefined;
    if (corrupt === undefined || invalid === undefined) return this.failure((corrupt ?? invalid)!);
    const streamOf = (code: number): PlannedStream | undefined => this.plan.chunks[code >> 3]?.stream;
    const [a, b] = [streamOf(invalid), streamOf(corrupt)];
    const invalidFirst = a && b && (a.request < b.request || (a.request === b.request && a.offset < b.offset));
    return this.failure(invalidFirst ? invalid : corrupt);
  }

  /** The status words of the last run (awaits its completion). */
  async readStatus(): Promise<Uint32Array> {
    await this.statusReadback.mapAsync(GPUMapMode.READ);
    const status = new Uint32Array(this.statusReadback.getMappedRange().slice(0));
    this.statusReadback.unmap();
    return status;
  }

  private failure(code: number): EqzError {
    const chunk: ChunkWork | undefined = this.plan.chunks[code >> 3];
    const reason = code & 7;
    if (!chunk) return new EqzError('CorruptStream', `GPU decoder reported an unknown chunk (${code})`);
    const { stream } = chunk;
    const request = this.requests[stream.request]!;
    const where = stream.part ? `${stream.part} ` : '';
    const offset = stream.offset + (stream.mode === MODE_RANS
      ? stream.layout!.statesOffset + chunk.index * 128
      : STREAM_HEADER_SIZE + (chunk.first * stream.header.symbolBits) / 8);
    const error = reason === FAILURE_INVALID_CODE
      ? new EqzError('InvalidValue', `${where}chunk ${chunk.index}: an E4M3 NaN code (0x7F or 0xFF)`, { offset })
      : new EqzError('CorruptStream', `${where}chunk ${chunk.index}: ${FAILURE_MESSAGES[reason] ?? `failure ${reason}`}`, { offset });
    return error.locate({ tensor: request.entry.name, offsetBase: request.payloadOffset });
  }

  /** Frees the uploaded inputs and intermediate results (the outputs stay). */
  destroyInputs(): void {
    for (const round of this.rounds) for (const bound of round.decodes) bound.data.destroy();
    this.uniforms?.destroy();
    this.status.destroy();
    this.statusReadback.destroy();
    this.plan.arenas.forEach((arena, i) => { if (arena.temporary) this.arenas[i]!.destroy(); });
  }

  /** Frees the output buffers. */
  destroyOutputs(): void {
    this.plan.arenas.forEach((arena, i) => { if (!arena.temporary) this.arenas[i]!.destroy(); });
  }
}

function dispatchGroups(pass: GPUComputePassEncoder, groups: number): void {
  if (groups === 0) return;
  const width = Math.min(groups, MAX_DISPATCH_DIMENSION);
  pass.dispatchWorkgroups(width, Math.ceil(groups / width));
}

/** A data buffer holding `dispatch`'s descriptors and inputs. */
function uploadData(device: GPUDevice, dispatch: DecodeDispatch): GPUBuffer {
  const buffer = device.createBuffer({ label: 'eqz decode data', size: dispatch.dataSize, usage: GPUBufferUsage.STORAGE, mappedAtCreation: true });
  const bytes = new Uint8Array(buffer.getMappedRange());
  bytes.set(new Uint8Array(dispatch.descriptors.buffer, dispatch.descriptors.byteOffset, dispatch.descriptors.byteLength));
  for (const input of dispatch.inputs) bytes.set(input.source, input.at);
  buffer.unmap();
  return buffer;
}

/** writeBuffer of `bytes` at `offset`, padded to whole u32 words (the region has room: regions are 256-aligned). */
function writePadded(device: GPUDevice, buffer: GPUBuffer, offset: number, bytes: Uint8Array): void {
  if (bytes.length === 0) return;
  if (bytes.length % 4 === 0) {
    device.queue.writeBuffer(buffer, offset, bytes);
    return;
  }
  const padded = new Uint8Array(Math.ceil(bytes.length / 4) * 4);
  padded.set(bytes);
  device.queue.writeBuffer(buffer, offset, padded);
}
