/**
 * `--optimizer reference`: the EntQuant paper's scale optimizer, as its public implementation does it.
 *
 * Parameters: θ = log2(scale) per output channel, initialised from absmax (θ = log2(absmax / 448) for FP8,
 * log2(absmax / 127) for INT8). Forward: xs = W·2^-θ; q = cast(clamp(xs, ±448)) (FP8) or
 * clamp(round(xs), −128, 127) (INT8); deq = q·2^θ' with θ' = θ rounded through the weight dtype. Loss:
 * ‖deq − W‖₁ / (‖W‖₁ + 10⁻⁶) + λ·R(q), R = 4·mean|q| (FP8) or mean|q| / 128 (INT8). Gradients pass straight
 * through the rounding, clamping and casting, so per element
 *   ∂deq/∂θ = ln2·s·(q − xs),   ∂|q|/∂θ = −ln2·sign(q)·xs.
 * The minimiser is L-BFGS with strong-Wolfe line search (lbfgs.ts). At the end the scale 2^θ' is rounded to
 * the scale dtype and the codes are cast(W / scale) with that stored scale.
 *
 * Loss and gradient come from wgsl/quant_reference.wgsl (one dispatch per evaluation, per-row sums read back)
 * or from the same sums on the CPU; float reductions make the two agree closely, not bit for bit.
 */
import type { GpuContext } from '../gpu/device.js';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '../tensor/dtype.js';
import { castCode, codeValue, gridOf, roundScale, type QuantFormat, type ScaleDtype } from './grid.js';
import { acquireBuffer, pipeline, readBack, releaseBuffers, rowChunks, type RowChunk } from './gpu.js';
import { minimizeLbfgs } from './lbfgs.js';
import { REFERENCE_PRESETS } from './presets.js';
import { describeCast, type QuantizedTensor } from './result.js';

/** Options of the reference optimizer (a subset of QuantizeOptions with the format fixed). */
export interface ReferenceOptions {
  format: QuantFormat;
  lambda?: number;
  lr?: number;
  maxIterations?: number;
  scaleDtype: ScaleDtype;
  weightDtype?: 'F32' | 'F16' | 'BF16';
  gpu?: GpuContext | null;
}

/** The paper's defaults: λ 3.9, lr 1, 500 iterations, history 100. */
const DEFAULT_LAMBDA = REFERENCE_PRESETS[4].lambda;
const HISTORY_SIZE = 100;
const DEFAULT_MAX_ITERATIONS = 500;
/** The reference adds this to ‖W‖₁ in the relative L1 loss. */
const NORM_EPSILON = 1e-6;

/** Per-row sums of one evaluation: Σ|deq − w|, Σ|q|, Σ sign(e)·s·(q − xs), Σ sign(q)·xs. */
interface RowSums {
  absError: Float64Array;
  absCode: Float64Array;
  errorSlope: Float64Array;
  codeSlope: Float64Array;
}

/** Evaluates the per-row sums at θ (rows entries, f32 values). */
type RowSumEvaluator = (theta: Float32Array, thetaRounded: Float32Array) => Promise<RowSums>;

/** θ rounded through the weight dtype (the reference's `log_scale.to(weight_dtype)`). */
function roundThrough(dtype: 'F32' | 'F16' | 'BF16', theta: number): number {
  if (dtype === 'BF16') return bf16BitsToF32(f32ToBf16Bits(theta));
  if (dtype === 'F16') return f16BitsToF32(f32ToF16Bits(theta));
  return Math.fround(theta);
}

/** The reference's quantized value of xs (FP8: E4M3 value of clamp(xs, ±448); INT8: clamp(round(xs))). */
function referenceCode(format: QuantFormat, xs: number): number {
  const clamped = format === 'fp8-e4m3' ? Math.min(Math.max(xs, -448), 448) : xs;
  return codeValue(format, castCode(format, clamped));
}

function cpuRowSums(weights: Float32Array, rows: number, cols: number, format: QuantFormat): RowSumEvaluator {
  return async (theta, thetaRounded) => {
    const sums: RowSums = {
      absError: new Float64Array(rows), absCode: new Float64Array(rows),
      errorSlope: new Float64Array(rows), codeSlope: new Float64Array(rows),
    };
    for (let r = 0; r < rows; r++) {
      const inverse = Math.fround(2 ** -theta[r]!);
      const scale = Math.fround(2 ** thetaRounded[r]!);
      let absError = 0;
      let absCode = 0;
      let errorSlope = 0;
      let codeSlope = 0;
      for (let i = r * cols; i < (r + 1) * cols; i++) {
        const w = weights[i]!;
        const xs = Math.fround(w * inverse);
        const q = referenceCode(format, xs);
        const error = Math.fround(q * scale) - w;
        absError += Math.abs(error);
        absCode += Math.abs(q);
        errorSlope += Math.sign(error) * scale * (q - xs);
        codeSlope += Math.sign(q) * xs;
      }
      sums.absError[r] = absError;
      sums.absCode[r] = absCode;
      sums.errorSlope[r] = errorSlope;
      sums.codeSlope[r] = codeSlope;
    }
    return sums;
  };
}

/** Bytes of wgsl/quant_reference.wgsl's uniform block. */
const REFERENCE_PARAMS_BYTES = 16;

interface ReferenceChunk extends RowChunk {
  weights: GPUBuffer;
  params: GPUBuffer;
  group: GPUBindGroup;
}

/** GPU row sums: the tensor uploaded once, θ written and four sums per row read back per evaluation. */
async function gpuRowSums(
  gpu: GpuContext, weights: Float32Array, rows: number, cols: number, format: QuantFormat,
): Promise<{ evaluate: RowSumEvaluator; release: () => void }> {
  const device = gpu.device;
  const storage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const kernel = await pipeline(device, 'quant_reference.wgsl', 'row_sums');
  const thetas = acquireBuffer(device, rows * 8, storage);
  const sums = acquireBuffer(device, rows * 16, storage);
  const chunks = rowChunks(device, rows, cols * 4).map((chunk): ReferenceChunk => {
    const chunkWeights = acquireBuffer(device, chunk.rows * cols * 4, storage);
    device.queue.writeBuffer(chunkWeights, 0, weights, chunk.firstRow * cols, chunk.rows * cols);
    const params = acquireBuffer(device, REFERENCE_PARAMS_BYTES, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    device.queue.writeBuffer(params, 0, Uint32Array.of(cols, chunk.firstRow, format === 'int8' ? 1 : 0, 0));
    const group = device.createBindGroup({
      layout: kernel.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: chunkWeights } }, { binding: 1, resource: { buffer: params } },
        { binding: 2, resource: { buffer: thetas } }, { binding: 3, resource: { buffer: sums } },
      ],
    });
    return { ...chunk, weights: chunkWeights, params, group };
  });
  const packed = new Float32Array(2 * rows);
  const evaluate: RowSumEvaluator = async (theta, thetaRounded) => {
    for (let r = 0; r < rows; r++) {
      packed[2 * r] = theta[r]!;
      packed[2 * r + 1] = thetaRounded[r]!;
    }
    device.queue.writeBuffer(thetas, 0, packed);
    const encoder = device.createCommandEncoder();
    for (const chunk of chunks) {
      const pass = encoder.beginComputePass();
      pass.setPipeline(kernel);
      pass.setBindGroup(0, chunk.group);
      pass.dispatchWorkgroups(chunk.rows);
      pass.end();
    }
    device.queue.submit([encoder.finish()]);
    const values = new Float32Array(await readBack(device, sums, rows * 16));
    const result: RowSums = {
      absError: new Float64Array(rows), absCode: new Float64Array(rows),
      errorSlope: new Float64Array(rows), codeSlope: new Float64Array(rows),
    };
    for (let r = 0; r < rows; r++) {
      result.absError[r] = values[4 * r]!;
      result.absCode[r] = values[4 * r + 1]!;
      result.errorSlope[r] = values[4 * r + 2]!;
      result.codeSlope[r] = values[4 * r + 3]!;
    }
    return result;
  };
  const release = () => {
    const buffers = [thetas, sums];
    for (const chunk of chunks) buffers.push(chunk.weights, chunk.params);
    releaseBuffers(device, buffers);
  };
  return { evaluate, release };
}

/** The reference objective at θ: loss and gradient from per-row sums. */
export interface ReferenceObjective {
  evaluate(theta: Float64Array): Promise<{ value: number; gradient: Float64Array }>;
  release(): void;
}

/**
 * The reference loss ‖deq − W‖₁/(‖W‖₁ + 10⁻⁶) + λ·R(q) and its straight-through gradient in θ, on the GPU
 * when `gpu` is given, else on the CPU.
 */
export async function referenceObjective(
  weights: Float32Array, rows: number, cols: number, options: ReferenceOptions,
): Promise<ReferenceObjective> {
  const { format } = options;
  const lambda = options.lambda ?? DEFAULT_LAMBDA;
  const weightDtype = options.weightDtype ?? 'F32';
  let norm1 = 0;
  for (let i = 0; i < weights.length; i++) norm1 += Math.abs(weights[i]!);
  const regularizer = (format === 'fp8-e4m3' ? 4 : 1 / 128) / weights.length;
  const backend = options.gpu
    ? await gpuRowSums(options.gpu, weights, rows, cols, format)
    : { evaluate: cpuRowSums(weights, rows, cols, format), release: () => {} };
  const theta32 = new Float32Array(rows);
  const rounded = new Float32Array(rows);
  return {
    async evaluate(theta) {
      for (let r = 0; r < rows; r++) {
        theta32[r] = theta[r]!;
        rounded[r] = roundThrough(weightDtype, theta32[r]!);
      }
      const sums = await backend.evaluate(theta32, rounded);
      let absError = 0;
      let absCode = 0;
      const gradient = new Float64Array(rows);
      for (let r = 0; r < rows; r++) {
        absError += sums.absError[r]!;
        absCode += sums.absCode[r]!;
        gradient[r] = Math.LN2 * (sums.errorSlope[r]! / (norm1 + NORM_EPSILON) - lambda * regularizer * sums.codeSlope[r]!);
      }
      return { value: absError / (norm1 + NORM_EPSILON) + lambda * regularizer * absCode, gradient };
    },
    release: backend.release,
  };
}

/** Runs the reference optimizer and packages codes, scales, rate and errors. */
export async function quantizeReference(
  weights: Float32Array, rows: number, cols: number, options: ReferenceOptions,
): Promise<QuantizedTensor> {
  const { format, scaleDtype } = options;
  const weightDtype = options.weightDtype ?? 'F32';
  const maxValue = gridOf(format).maxValue;
  const theta0 = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let absMax = 0;
    for (let i = r * cols; i < (r + 1) * cols; i++) absMax = Math.max(absMax, Math.abs(weights[i]!));
    // A row of zeros keeps θ = 0: its loss and gradient are zero whatever θ is.
    theta0[r] = absMax > 0 ? Math.fround(Math.log2(Math.fround(absMax / maxValue))) : 0;
  }
  const objective = await referenceObjective(weights, rows, cols, options);
  let theta: Float64Array;
  try {
    const run = await minimizeLbfgs(objective.evaluate, theta0, {
      lr: options.lr ?? 1, maxIterations: options.maxIterations ?? DEFAULT_MAX_ITERATIONS, historySize: HISTORY_SIZE,
    });
    theta = run.x;
  } finally {
    objective.release();
  }
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let zero = true;
    for (let i = r * cols; i < (r + 1) * cols && zero; i++) zero = weights[i] === 0;
    scales[r] = zero ? 1 : roundScale(Math.fround(2 ** roundThrough(weightDtype, Math.fround(theta[r]!))), scaleDtype);
  }
  return describeCast(weights, rows, cols, format, scales, scaleDtype);
}
