/**
 * The quantizing tensor encoder of `eqz convert --bits/--lambda`: selected 2-D linear weights are quantized
 * (EntQuant FP8/INT8 per output channel, or NVFP4), everything else is stored losslessly.
 *
 * A planning pass reads every selected tensor once before anything is written (still one tensor in memory at a
 * time): it flags super-weight layers (stored with plain absmax FP8 instead), collects NVFP4 absmax global scales
 * so that fused layers (q/k/v, gate/up) can share theirs, and — for `--bits` with rd-search — measures each
 * tensor's rate curve so that one λ (equal slope across the model) hits the target average exactly.
 *
 * Equal slope weighs every tensor's relative squared error alike, except where the model's structure says an
 * error counts more (data-free, from config.json): see {@link sharedHeadsImportance}.
 */
import type { GpuContext } from '../gpu/device.js';
import { encodeLossless, initCodec } from '../codec/index.js';
import { modelConfig, openModel, type ModelTensor } from '../io/model-folder.js';
import { toFloat32 } from '../tensor/dtype.js';
import {
  checkFinite, detectSuperWeights, findLambdaForBits, lambdaForTotalBits, measureRateCurve, quantizeTensor, REFERENCE_PRESETS,
  SEARCH_PRESETS, type Optimizer, type QuantizeOptions, type RateCurve, type ScaleDtype,
} from '../quant/index.js';
import { absMax, absmaxGlobalScale, shareGlobalScales, type SourceDtype } from '../nvfp4/absmax.js';
import { quantizeNvfp4, measureNvfp4RateCurve, DEFAULT_NVFP4_SEARCH_LAMBDA, NVFP4_RATE_CURVE_LAMBDAS } from '../nvfp4/quantize.js';
import { encodeNvfp4Payload } from '../nvfp4/payload.js';
import { NVFP4_BLOCK } from '../nvfp4/e2m1.js';
import { encodeScaledPayload } from '../encodings/scaled.js';
import { quantizationFilter, type Selection } from './select.js';
import type { EncodedTensor, TensorEncoder } from './encode.js';

export type QuantTarget = 'fp8-e4m3' | 'int8' | 'auto' | 'nvfp4';

export interface QuantizeModelOptions {
  format: QuantTarget;
  optimizer: Optimizer;
  /** Average stored bits/param over the quantized tensors (everything stored counted). */
  bits?: number;
  /** The rate–distortion trade-off directly (the optimizer's own λ; see `eqz convert --help`). */
  lambda?: number;
  lr?: number;
  scaleDtype: ScaleDtype;
  selection: Selection;
  /** Store layers holding super weights with absmax FP8 instead of the optimizer's choice. */
  protectOutliers: boolean;
  gpu: GpuContext | null;
  /** Lines for the user (which tensors were protected, the λ chosen). */
  report: (line: string) => void;
}

interface Plan {
  /** rd-search λ for the whole model when `--bits` asked for a total. */
  modelLambda?: number;
  /** Weight of each tensor's distortion under the model-wide λ. */
  importance: (name: string) => number;
  /** Tensors stored with absmax FP8 because they hold super weights. */
  protectedTensors: Set<string>;
  /** NVFP4 global scale per tensor (shared within fused groups). */
  globalScales: Map<string, number>;
}

/** The tensor's weights as f32, refused (InvalidValue, naming the tensor) when any is NaN or ±Inf. */
function weightsOf(tensor: ModelTensor, bytes: Uint8Array): Float32Array {
  const weights = toFloat32(bytes, tensor.dtype);
  checkFinite(weights, tensor.name);
  return weights;
}

function quantOptions(options: QuantizeModelOptions, plan: Plan, tensor: ModelTensor, format: QuantizeOptions['format']): QuantizeOptions {
  return {
    format, optimizer: options.optimizer, lambda: options.lambda, lr: options.lr, scaleDtype: options.scaleDtype,
    weightDtype: tensor.dtype as 'F32' | 'F16' | 'BF16', gpu: options.gpu, name: tensor.name, importance: plan.importance(tensor.name),
  };
}

const KEY_OR_VALUE_PROJECTION = /(^|\.)(k|v)_proj\.weight$/;

/**
 * Distortion weights from the model's config.json: with grouped-query attention every key and value head serves
 * num_attention_heads / num_key_value_heads query heads, so an error in k_proj or v_proj reaches the output that
 * many times — those tensors weigh that much under the model-wide λ (FP8/INT8 and NVFP4 alike); every other
 * tensor weighs 1. On the shared Llama models (8 query heads, 4 key/value heads) this lowered the KL at equal bits
 * by 4–28 % (FP8, 3 and 4 bits) and 15–28 % (NVFP4).
 */
export function sharedHeadsImportance(config: Record<string, unknown> | undefined): (name: string) => number {
  const heads = Number(config?.num_attention_heads);
  const keyValueHeads = Number(config?.num_key_value_heads ?? heads);
  const share = Number.isInteger(heads) && Number.isInteger(keyValueHeads) && keyValueHeads > 0 && heads > keyValueHeads && heads % keyValueHeads === 0
    ? heads / keyValueHeads : 1;
  return (name) => (KEY_OR_VALUE_PROJECTION.test(name) ? share : 1);
}

/** The reference optimizer's paper presets stand for `--bits 2/3/4`; other targets search λ per tensor. */
function referencePreset(bits: number | undefined): { lambda: number; lr: number } | undefined {
  return bits === 2 || bits === 3 || bits === 4 ? REFERENCE_PRESETS[bits] : undefined;
}

async function planQuantization(input: string, options: QuantizeModelOptions, selected: (t: ModelTensor) => boolean): Promise<Plan> {
  const model = await openModel(input);
  const config = modelConfig(model.smallFiles);
  await model.close();
  const plan: Plan = { protectedTensors: new Set(), globalScales: new Map(), importance: sharedHeadsImportance(config) };
  const nvfp4 = options.format === 'nvfp4';
  const needsCurves = options.bits !== undefined && options.optimizer === 'rd-search';
  if (!options.protectOutliers && !needsCurves && !nvfp4) return plan;
  const curves: RateCurve[] = [];
  let fixedBits = 0;
  let fixedParams = 0;
  await eachSelected(input, selected, async (tensor, weights, rows, cols) => {
    if (nvfp4) {
      plan.globalScales.set(tensor.name, absmaxGlobalScale(absMax(weights), tensor.dtype as SourceDtype));
      return;
    }
    if (options.protectOutliers) {
      const report = detectSuperWeights(weights, rows, cols);
      if (report.outlier) {
        plan.protectedTensors.add(tensor.name);
        options.report(`super weight in ${tensor.name} (|z| = ${report.maxAbsZ.toFixed(0)} at row ${Math.floor(report.index / cols)}): stored with absmax FP8`);
        if (needsCurves) {
          const absmax = await quantizeTensor(weights, rows, cols, { ...quantOptions(options, plan, tensor, 'fp8-e4m3'), optimizer: 'absmax' });
          fixedBits += absmax.bitsPerParam * rows * cols;
          fixedParams += rows * cols;
        }
        return;
      }
    }
    if (needsCurves) curves.push(await measureRateCurve(weights, rows, cols, quantOptions(options, plan, tensor, options.format as QuantizeOptions['format'])));
  });
  plan.globalScales = shareGlobalScales(plan.globalScales);
  if (nvfp4 && needsCurves) {
    // NVFP4 rates depend on the global scales, known (shared within fused groups) only after the first pass.
    await eachSelected(input, selected, async (tensor, weights, rows, cols) => {
      // A tensor of importance w runs at λ/w: its curve is measured there and read at the model's λ.
      const importance = plan.importance(tensor.name);
      const curve = await measureNvfp4RateCurve(weights, rows, cols, {
        gpu: options.gpu, globalScale: plan.globalScales.get(tensor.name), sourceDtype: tensor.dtype as SourceDtype, name: tensor.name,
      }, NVFP4_RATE_CURVE_LAMBDAS.map((lambda) => lambda / importance));
      curves.push({ ...curve, lambdas: [...NVFP4_RATE_CURVE_LAMBDAS] });
    });
  }
  if (needsCurves && curves.length > 0) {
    plan.modelLambda = lambdaForTotalBits(curves, options.bits!, fixedBits, fixedParams);
    options.report(`λ = ${plan.modelLambda.toPrecision(4)} for ${options.bits} bits/param over the quantized tensors (one λ for the whole model)`);
  }
  return plan;
}

/** Reads each selected tensor of the model once, as f32 weights (NaN/Inf refused), one at a time. */
async function eachSelected(
  input: string, selected: (t: ModelTensor) => boolean,
  visit: (tensor: ModelTensor, weights: Float32Array, rows: number, cols: number) => Promise<void>,
): Promise<void> {
  const model = await openModel(input);
  try {
    for (const tensor of model.tensors.filter(selected)) {
      const [rows, cols] = tensor.shape as [number, number];
      await visit(tensor, weightsOf(tensor, await model.readTensor(tensor)), rows, cols);
    }
  } finally {
    await model.close();
  }
}

async function quantizeScaled(tensor: ModelTensor, weights: Float32Array, options: QuantizeModelOptions, plan: Plan): Promise<EncodedTensor> {
  const [rows, cols] = tensor.shape as [number, number];
  const base = quantOptions(options, plan, tensor, options.format as QuantizeOptions['format']);
  let result;
  let lambda: number | undefined;
  let optimizer: string = options.optimizer;
  if (plan.protectedTensors.has(tensor.name)) {
    optimizer = 'absmax (super weight)';
    result = await quantizeTensor(weights, rows, cols, { ...base, format: 'fp8-e4m3', optimizer: 'absmax' });
  } else if (options.optimizer === 'rd-search') {
    lambda = options.lambda ?? plan.modelLambda ?? SEARCH_PRESETS[4];
    result = await quantizeTensor(weights, rows, cols, { ...base, lambda });
  } else if (options.optimizer === 'reference') {
    const preset = options.lambda === undefined ? referencePreset(options.bits) : undefined;
    if (options.bits !== undefined && options.lambda === undefined && !preset) {
      const found = await findLambdaForBits(weights, rows, cols, options.bits, base);
      lambda = found.lambda;
      result = found.result;
    } else {
      lambda = options.lambda ?? preset?.lambda ?? REFERENCE_PRESETS[4].lambda;
      result = await quantizeTensor(weights, rows, cols, { ...base, lambda, lr: options.lr ?? preset?.lr });
    }
  } else {
    result = await quantizeTensor(weights, rows, cols, base);
  }
  return {
    encoding: result.format,
    payload: encodeScaledPayload(result.codes, result.scales, options.scaleDtype),
    stats: {
      optimizer, ...(lambda !== undefined ? { lambda } : {}), ...(base.importance !== 1 ? { importance: base.importance } : {}),
      bitsPerParam: result.bitsPerParam, relL1: result.relL1, relL2: result.relL2,
    },
  };
}

async function quantizeToNvfp4(tensor: ModelTensor, weights: Float32Array, options: QuantizeModelOptions, plan: Plan): Promise<EncodedTensor> {
  const [rows, cols] = tensor.shape as [number, number];
  const optimizer = options.optimizer === 'rd-search' || options.optimizer === 'reference' ? options.optimizer : 'absmax';
  const lambda = optimizer === 'rd-search'
    ? (options.lambda ?? plan.modelLambda ?? DEFAULT_NVFP4_SEARCH_LAMBDA) / plan.importance(tensor.name)
    : options.lambda;
  const result = await quantizeNvfp4(weights, rows, cols, {
    optimizer, lambda, lr: options.lr, gpu: options.gpu, globalScale: plan.globalScales.get(tensor.name),
    sourceDtype: tensor.dtype as SourceDtype, name: tensor.name,
  });
  return {
    encoding: 'nvfp4',
    payload: encodeNvfp4Payload({ ...result, rows, cols }),
    stats: { optimizer, ...(lambda !== undefined ? { lambda } : {}), bitsPerParam: result.bitsPerParam, relL1: result.relL1, relL2: result.relL2 },
  };
}

/**
 * The encoder for a quantizing conversion of the model at `input` (runs the planning pass first). Tensors the
 * selection leaves out, and for NVFP4 those whose input dimension is not a multiple of 16, stay lossless.
 */
export async function quantizingEncoder(input: string, options: QuantizeModelOptions): Promise<TensorEncoder> {
  if (options.bits !== undefined && options.lambda !== undefined) throw new Error('give --bits or --lambda, not both');
  if (options.format === 'nvfp4' && options.bits !== undefined && options.optimizer !== 'rd-search') {
    throw new Error('--bits with --format nvfp4 needs the rd-search optimizer; set the reference optimizer\'s rate with --lambda');
  }
  await initCodec();
  const filter = quantizationFilter(options.selection);
  const selected = (tensor: ModelTensor) => filter(tensor) && (options.format !== 'nvfp4' || tensor.shape[1]! % NVFP4_BLOCK === 0);
  const plan = await planQuantization(input, options, selected);
  return async (tensor, bytes) => {
    if (!selected(tensor)) return encodeLossless(bytes, tensor.dtype);
    const weights = weightsOf(tensor, bytes);
    return options.format === 'nvfp4' ? quantizeToNvfp4(tensor, weights, options, plan) : quantizeScaled(tensor, weights, options, plan);
  };
}
