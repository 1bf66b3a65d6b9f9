/**
 * The Llama forward pass on WebGPU, the same operations as llama-cpu.ts in WGSL kernels (wgsl/llama-*.wgsl).
 *
 * Pipelines are compiled once per device; each model's weights and activation buffers are created once and reused
 * for every window. Everything stays within the adapter's limits, so it runs on the GLES software adapter
 * (compatibility mode, 128 MiB bindings, no subgroups): a weight larger than a binding is split into row chunks,
 * attention runs over as many heads per pass as its probability buffer can hold, and the lm_head and the
 * log-softmax reductions run over as many positions per block as one logits binding can hold. Token embeddings are
 * gathered on the host (one row per token), so the embedding matrix never has to be indexed across chunks.
 */
import { EqzError } from '../errors.js';
import type { GpuContext } from '../gpu/device.js';
import { readWgsl } from '../gpu/wgsl-files.js';
import type { LlamaModelSource, WindowScorer } from './evaluate.js';
import type { LlamaConfig } from './llama-config.js';
import { ropeTable } from './rope.js';
import { loadCheckedF32, type LlamaLayer } from './weights.js';

interface Kernels {
  matmul: GPUComputePipeline;
  rmsNorm: GPUComputePipeline;
  rope: GPUComputePipeline;
  attentionScores: GPUComputePipeline;
  attentionValues: GPUComputePipeline;
  swiglu: GPUComputePipeline;
  nll: GPUComputePipeline;
  nllKl: GPUComputePipeline;
}

/** Invocations per workgroup of the one-dimensional kernels (LANES in their WGSL). */
const LANES = 64;
/** Outputs per workgroup side of llama-matmul.wgsl: 8 × 8 invocations, each a 4 × 4 block. */
const MATMUL_TILE = 32;
/** Bytes reserved per dispatch in the uniform buffer; every kernel's parameters fit in 32. */
const PARAMS_BYTES = 32;

/** The pipelines of `entryPoints` in wgsl/`file`; a shader that does not compile is an error naming its lines. */
async function compile(device: GPUDevice, file: string, entryPoints: string[]): Promise<GPUComputePipeline[]> {
  const module = device.createShaderModule({ label: file, code: readWgsl(file) });
  const errors = (await module.getCompilationInfo()).messages.filter((message) => message.type === 'error');
  if (errors.length > 0) {
    throw new Error(`${file} does not compile: ${errors.map((e) => `${e.lineNum}:${e.linePos} ${e.message}`).join('; ')}`);
  }
  return Promise.all(entryPoints.map((entryPoint) =>
    device.createComputePipelineAsync({ label: `${file} ${entryPoint}`, layout: 'auto', compute: { module, entryPoint } })));
}

const kernelCache = new WeakMap<GPUDevice, Promise<Kernels>>();

function kernels(device: GPUDevice): Promise<Kernels> {
  let cached = kernelCache.get(device);
  if (!cached) {
    cached = (async () => {
      const [[matmul], [rmsNorm], [rope], [attentionScores], [attentionValues], [swiglu], [nll, nllKl]] = await Promise.all([
        compile(device, 'llama-matmul.wgsl', ['main']),
        compile(device, 'llama-rmsnorm.wgsl', ['main']),
        compile(device, 'llama-rope.wgsl', ['main']),
        compile(device, 'llama-attention-scores.wgsl', ['main']),
        compile(device, 'llama-attention-values.wgsl', ['main']),
        compile(device, 'llama-swiglu.wgsl', ['main']),
        compile(device, 'llama-nll.wgsl', ['nll', 'nllKl']),
      ]);
      return { matmul, rmsNorm, rope, attentionScores, attentionValues, swiglu, nll, nllKl };
    })();
    cached.catch(() => kernelCache.delete(device));
    kernelCache.set(device, cached);
  }
  return cached;
}

/** The bits of `value` rounded to binary32, for a kernel parameter declared u32 and read with bitcast<f32>. */
function floatBits(value: number): number {
  return new Uint32Array(Float32Array.of(value).buffer)[0];
}

/** One compute dispatch of a window's plan. */
interface Step {
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  workgroups: [number, number];
}

/** Every dispatch of one window length, with its parameters already in a uniform buffer. */
interface Plan {
  steps: Step[];
  uniforms: GPUBuffer;
}

/** Collects the dispatches of a plan, then writes all their parameters into one uniform buffer. */
class PlanBuilder {
  private readonly pending: { pipeline: GPUComputePipeline; params: number[]; buffers: GPUBuffer[]; workgroups: [number, number] }[] = [];

  constructor(private readonly device: GPUDevice) {}

  /** A dispatch of `pipeline` with `params` (u32 each) at binding 0 and `buffers` at bindings 1, 2, …. */
  add(pipeline: GPUComputePipeline, params: number[], buffers: GPUBuffer[], workgroups: [number, number]): void {
    this.pending.push({ pipeline, params, buffers, workgroups });
  }

  /** The workgroup grid for `count` workgroups: up to the per-dimension limit in x, the rest in y. */
  grid(count: number): [number, number] {
    const perDimension = this.device.limits.maxComputeWorkgroupsPerDimension;
    const x = Math.max(1, Math.min(count, perDimension));
    return [x, Math.ceil(count / x)];
  }

  build(): Plan {
    const stride = Math.max(PARAMS_BYTES, this.device.limits.minUniformBufferOffsetAlignment);
    const contents = new Uint32Array((stride / 4) * this.pending.length);
    const uniforms = this.device.createBuffer({ label: 'eval params', size: contents.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    const steps = this.pending.map(({ pipeline, params, buffers, workgroups }, index) => {
      contents.set(params, (stride / 4) * index);
      const bindGroup = this.device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: uniforms, offset: stride * index, size: PARAMS_BYTES } },
          ...buffers.map((buffer, i) => ({ binding: i + 1, resource: { buffer } })),
        ],
      });
      return { pipeline, bindGroup, workgroups };
    });
    this.device.queue.writeBuffer(uniforms, 0, contents);
    return { steps, uniforms };
  }
}

/** A weight matrix [rows × columns] on the device, in row chunks that each fit one storage binding. */
interface GpuMatrix {
  rows: number;
  columns: number;
  chunks: { buffer: GPUBuffer; firstRow: number; rows: number }[];
}

/** A device and the most bytes one storage buffer may hold on it. */
interface Target {
  device: GPUDevice;
  bindingLimit: number;
}

function checkFits({ bindingLimit }: Target, label: string, bytes: number): void {
  if (bytes > bindingLimit) {
    throw new EqzError('LimitExceeded', `the ${label} buffer needs ${bytes} bytes, above the storage binding limit of ${bindingLimit}; use a smaller ctx`);
  }
}

function storageBuffer(target: Target, label: string, bytes: number, usage = 0): GPUBuffer {
  checkFits(target, label, bytes);
  return target.device.createBuffer({ label, size: Math.max(4, bytes), usage: GPUBufferUsage.STORAGE | usage });
}

function uploadBuffer(device: GPUDevice, label: string, values: Float32Array): GPUBuffer {
  const buffer = device.createBuffer({ label, size: Math.max(4, values.byteLength), usage: GPUBufferUsage.STORAGE, mappedAtCreation: true });
  new Float32Array(buffer.getMappedRange()).set(values);
  buffer.unmap();
  return buffer;
}

function uploadMatrix({ device, bindingLimit }: Target, label: string, values: Float32Array, rows: number, columns: number): GpuMatrix {
  const rowsPerChunk = Math.floor(bindingLimit / (4 * columns));
  if (rowsPerChunk < 1) throw new EqzError('LimitExceeded', `a row of ${columns} values exceeds the storage binding limit of ${bindingLimit}`, { tensor: label });
  const chunks: GpuMatrix['chunks'] = [];
  for (let firstRow = 0; firstRow < rows; firstRow += rowsPerChunk) {
    const chunkRows = Math.min(rowsPerChunk, rows - firstRow);
    const part = values.subarray(firstRow * columns, (firstRow + chunkRows) * columns);
    chunks.push({ buffer: uploadBuffer(device, label, part), firstRow, rows: chunkRows });
  }
  return { rows, columns, chunks };
}

/** Bytes of each activation buffer of a model for windows of up to `ctx` tokens. */
function activationBytes(config: LlamaConfig, ctx: number, headsPerPass: number) {
  const { hiddenSize, intermediateSize, heads, kvHeads, headDim } = config;
  return {
    hidden: 4 * ctx * hiddenSize,
    normed: 4 * ctx * hiddenSize,
    queries: 4 * ctx * heads * headDim,
    keys: 4 * ctx * kvHeads * headDim,
    values: 4 * ctx * kvHeads * headDim,
    attended: 4 * ctx * heads * headDim,
    gate: 4 * ctx * intermediateSize,
    up: 4 * ctx * intermediateSize,
    probs: 4 * headsPerPass * ctx * ctx,
  };
}

type Activations = Record<keyof ReturnType<typeof activationBytes>, GPUBuffer>;

/** One model's weights and activations on the device. */
class GpuLlama {
  private constructor(
    private readonly device: GPUDevice,
    private readonly kernels: Kernels,
    readonly config: LlamaConfig,
    /** Kept on the host: inputs are embedded there (see the module header). */
    private readonly embed: Float32Array,
    private readonly layers: LlamaLayer<GpuMatrix>[],
    private readonly finalNorm: GpuMatrix,
    private readonly lmHead: GpuMatrix,
    private readonly rope: GPUBuffer,
    /** Query heads per attention pass, so that the probability buffer fits one binding. */
    private readonly headsPerPass: number,
    private readonly activations: Activations,
    /** lm_head output for one block of positions. */
    readonly logits: GPUBuffer,
    /** Host staging for the embedded inputs of a window. */
    private readonly hiddenRows: Float32Array,
  ) {}

  /**
   * Uploads `model` tensor by tensor (only the embedding stays on the host) for windows of up to `ctx` tokens,
   * after checking that every buffer it needs fits the binding limit.
   */
  static async upload(target: Target, kernels: Kernels, model: LlamaModelSource, ctx: number, logitRows: number): Promise<GpuLlama> {
    const { config, names, source } = model;
    const headsPerPass = Math.min(config.heads, Math.floor(target.bindingLimit / (4 * ctx * ctx)));
    if (headsPerPass < 1) {
      throw new EqzError('LimitExceeded', `ctx ${ctx} needs ${4 * ctx * ctx} bytes of attention probabilities per head, above the storage binding limit of ${target.bindingLimit}`);
    }
    const sizes = activationBytes(config, ctx, headsPerPass);
    for (const [label, bytes] of Object.entries(sizes)) checkFits(target, label, bytes);
    checkFits(target, 'logits', 4 * logitRows * config.vocabSize);

    const uploadNamed = async (name: string, rows: number, columns: number) =>
      uploadMatrix(target, name, await loadCheckedF32(source, name), rows, columns);
    const embed = await loadCheckedF32(source, names.embed);
    const layers: LlamaLayer<GpuMatrix>[] = [];
    for (const layerNames of names.layers) {
      const layer = {} as LlamaLayer<GpuMatrix>;
      for (const [key, name] of Object.entries(layerNames)) {
        const [rows, columns = 1] = source.shape(name);
        layer[key as keyof LlamaLayer<string>] = await uploadNamed(name, rows, columns);
      }
      layers.push(layer);
    }
    const finalNorm = await uploadNamed(names.finalNorm, config.hiddenSize, 1);
    const lmHead = names.lmHead === names.embed
      ? uploadMatrix(target, names.lmHead, embed, config.vocabSize, config.hiddenSize)
      : await uploadNamed(names.lmHead, config.vocabSize, config.hiddenSize);
    const rope = uploadBuffer(target.device, 'rope table', ropeTable(config, ctx));
    const activations = {} as Activations;
    for (const [label, bytes] of Object.entries(sizes)) {
      activations[label as keyof Activations] = storageBuffer(target, label, bytes, label === 'hidden' ? GPUBufferUsage.COPY_DST : 0);
    }
    const logits = storageBuffer(target, 'logits', 4 * logitRows * config.vocabSize);
    return new GpuLlama(target.device, kernels, config, embed, layers, finalNorm, lmHead, rope, headsPerPass, activations, logits,
      new Float32Array(ctx * config.hiddenSize));
  }

  /** Writes the embeddings of `inputs` into the hidden state. */
  writeInputs(inputs: Uint16Array): void {
    const width = this.config.hiddenSize;
    for (let t = 0; t < inputs.length; t++) {
      const from = inputs[t] * width;
      for (let i = 0; i < width; i++) this.hiddenRows[t * width + i] = this.embed[from + i];
    }
    this.device.queue.writeBuffer(this.activations.hidden, 0, this.hiddenRows, 0, inputs.length * width);
  }

  private matmul(plan: PlanBuilder, x: GPUBuffer, xRowOffset: number, rows: number, w: GpuMatrix, y: GPUBuffer, accumulate: boolean): void {
    for (const chunk of w.chunks) {
      plan.add(this.kernels.matmul, [rows, w.columns, chunk.rows, w.rows, chunk.firstRow, xRowOffset, accumulate ? 1 : 0], [x, chunk.buffer, y],
        [Math.ceil(chunk.rows / MATMUL_TILE), Math.ceil(rows / MATMUL_TILE)]);
    }
  }

  /** RMSNorm of the hidden state into `normed`. */
  private rmsNorm(plan: PlanBuilder, rows: number, weight: GpuMatrix): void {
    const { hiddenSize, rmsNormEps } = this.config;
    const { hidden, normed } = this.activations;
    plan.add(this.kernels.rmsNorm, [rows, hiddenSize, floatBits(rmsNormEps)], [hidden, weight.chunks[0].buffer, normed], plan.grid(rows));
  }

  /** The decoder layers and the final norm for a window of `rows` tokens: leaves the normed state in `normed`. */
  addBody(plan: PlanBuilder, rows: number): void {
    const { heads, kvHeads, headDim, intermediateSize } = this.config;
    const { hidden, normed, queries, keys, values, attended, gate, up, probs } = this.activations;
    const kernels = this.kernels;
    const group = heads / kvHeads;
    const half = headDim / 2;
    const scaleBits = floatBits(1 / Math.sqrt(headDim));
    for (const layer of this.layers) {
      this.rmsNorm(plan, rows, layer.inputNorm);
      this.matmul(plan, normed, 0, rows, layer.q, queries, false);
      this.matmul(plan, normed, 0, rows, layer.k, keys, false);
      this.matmul(plan, normed, 0, rows, layer.v, values, false);
      plan.add(kernels.rope, [rows, heads, half], [this.rope, queries], plan.grid(Math.ceil((rows * heads * half) / LANES)));
      plan.add(kernels.rope, [rows, kvHeads, half], [this.rope, keys], plan.grid(Math.ceil((rows * kvHeads * half) / LANES)));
      for (let headOffset = 0; headOffset < heads; headOffset += this.headsPerPass) {
        const headsInPass = Math.min(this.headsPerPass, heads - headOffset);
        const shape = [rows, heads, group, headDim, headOffset, headsInPass];
        plan.add(kernels.attentionScores, [...shape, scaleBits], [queries, keys, probs], plan.grid(Math.ceil((headsInPass * rows) / LANES)));
        plan.add(kernels.attentionValues, shape, [probs, values, attended], plan.grid(Math.ceil((headsInPass * rows * headDim) / LANES)));
      }
      this.matmul(plan, attended, 0, rows, layer.o, hidden, true);
      this.rmsNorm(plan, rows, layer.postNorm);
      this.matmul(plan, normed, 0, rows, layer.gate, gate, false);
      this.matmul(plan, normed, 0, rows, layer.up, up, false);
      plan.add(kernels.swiglu, [rows * intermediateSize], [gate, up], plan.grid(Math.ceil((rows * intermediateSize) / LANES)));
      this.matmul(plan, gate, 0, rows, layer.down, hidden, true);
    }
    this.rmsNorm(plan, rows, this.finalNorm);
  }

  /** lm_head for positions [first, first + count) of the window into `logits` rows 0 .. count − 1. */
  addLmHead(plan: PlanBuilder, first: number, count: number): void {
    this.matmul(plan, this.activations.normed, first, count, this.lmHead, this.logits, false);
  }

  destroy(): void {
    const buffers = new Set([this.rope, this.logits, ...Object.values(this.activations)]);
    for (const matrix of [...this.layers.flatMap((layer) => Object.values(layer)), this.finalNorm, this.lmHead]) {
      for (const chunk of matrix.chunks) buffers.add(chunk.buffer);
    }
    for (const buffer of buffers) buffer.destroy();
  }
}

/** Runs `work`, turning a WebGPU validation or out-of-memory error it causes into an exception. */
async function checked<T>(gpu: GpuContext, what: string, work: () => T | Promise<T>): Promise<T> {
  const { device } = gpu;
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  let result: T | undefined;
  let thrown: unknown;
  try {
    result = await work();
  } catch (error) {
    thrown = error;
  }
  const validation = await device.popErrorScope();
  const memory = await device.popErrorScope();
  if (thrown) throw thrown;
  const error = validation ?? memory;
  if (error) throw new Error(`WebGPU rejected ${what} on ${gpu.description}: ${error.message}`);
  return result as T;
}

/**
 * A {@link WindowScorer} on `gpu` for `model` (and `ref`) over windows of up to `ctx` tokens: forward passes,
 * lm_head, log-softmax, NLL and KL all run on the device; only two floats per position come back.
 */
export async function createGpuScorer(
  gpu: GpuContext, model: LlamaModelSource, ref: LlamaModelSource | undefined, ctx: number, bindingLimitCap = Infinity,
): Promise<WindowScorer> {
  const { device } = gpu;
  const target: Target = {
    device,
    bindingLimit: Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize, bindingLimitCap),
  };
  const compiled = await kernels(device);
  const vocab = model.config.vocabSize;
  const logitRows = Math.min(ctx, Math.floor(target.bindingLimit / (4 * vocab)));
  if (logitRows < 1) throw new EqzError('LimitExceeded', `a row of ${vocab} logits exceeds the storage binding limit of ${target.bindingLimit}`);

  const owned: { destroy(): void }[] = [];
  const own = <T extends { destroy(): void }>(resource: T): T => {
    owned.push(resource);
    return resource;
  };
  const destroy = () => {
    for (const resource of owned) resource.destroy();
  };
  let resources;
  try {
    resources = await checked(gpu, 'the evaluation setup', async () => ({
      modelGpu: own(await GpuLlama.upload(target, compiled, model, ctx, logitRows)),
      refGpu: ref && own(await GpuLlama.upload(target, compiled, ref, ctx, logitRows)),
      targets: own(storageBuffer(target, 'targets', 4 * ctx, GPUBufferUsage.COPY_DST)),
      scores: own(storageBuffer(target, 'scores', 8 * ctx, GPUBufferUsage.COPY_SRC)),
      readback: own(device.createBuffer({ label: 'scores readback', size: 8 * ctx, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST })),
    }));
  } catch (error) {
    destroy();
    throw error;
  }
  const { modelGpu, refGpu, targets, scores, readback } = resources;
  const models = refGpu ? [modelGpu, refGpu] : [modelGpu];
  const plans = new Map<number, Plan>();
  const targetIds = new Uint32Array(ctx);
  const readScores = new Float32Array(2 * ctx);

  const planFor = (rows: number): Plan => {
    let plan = plans.get(rows);
    if (!plan) {
      const builder = new PlanBuilder(device);
      for (const gpuModel of models) gpuModel.addBody(builder, rows);
      for (let first = 0; first < rows; first += logitRows) {
        const count = Math.min(logitRows, rows - first);
        modelGpu.addLmHead(builder, first, count);
        if (refGpu) {
          refGpu.addLmHead(builder, first, count);
          builder.add(compiled.nllKl, [count, vocab, first], [modelGpu.logits, targets, scores, refGpu.logits], builder.grid(count));
        } else {
          builder.add(compiled.nll, [count, vocab, first], [modelGpu.logits, targets, scores], builder.grid(count));
        }
      }
      plan = builder.build();
      own(plan.uniforms);
      plans.set(rows, plan);
    }
    return plan;
  };

  return {
    async score(window, nll, kl) {
      const rows = window.length - 1;
      const inputs = window.subarray(0, rows);
      for (const gpuModel of models) gpuModel.writeInputs(inputs);
      for (let t = 0; t < rows; t++) targetIds[t] = window[t + 1];
      device.queue.writeBuffer(targets, 0, targetIds, 0, rows);
      await checked(gpu, 'an evaluation window', () => {
        const plan = planFor(rows);
        const encoder = device.createCommandEncoder({ label: 'eval window' });
        const pass = encoder.beginComputePass();
        for (const step of plan.steps) {
          pass.setPipeline(step.pipeline);
          pass.setBindGroup(0, step.bindGroup);
          pass.dispatchWorkgroups(step.workgroups[0], step.workgroups[1]);
        }
        pass.end();
        encoder.copyBufferToBuffer(scores, 0, readback, 0, 8 * rows);
        device.queue.submit([encoder.finish()]);
      });
      await readback.mapAsync(GPUMapMode.READ, 0, 8 * rows);
      readScores.set(new Float32Array(readback.getMappedRange(0, 8 * rows)));
      readback.unmap();
      for (let t = 0; t < rows; t++) {
        nll[t] = readScores[2 * t];
        if (kl) kl[t] = readScores[2 * t + 1];
      }
    },
    destroy,
  };
}
