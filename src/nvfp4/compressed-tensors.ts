/**
 * compressed-tensors checkpoints (the format llm-compressor writes and vLLM and transformers load): recognizing
 * one from its config.json, finding and checking each quantized module's tensors, turning their bytes into
 * {@link Nvfp4Tensor}s and back, and the `quantization_config` eqz writes.
 *
 * NVFP4 (`nvfp4-pack-quantized`), per quantized Linear `<module>`:
 *   `<module>.weight_packed`        U8       [out, in/2]   element 2j in the low nibble of byte j
 *   `<module>.weight_scale`         F8_E4M3  [out, in/16]
 *   `<module>.weight_global_scale`  F32      [1]
 *   `<module>.input_global_scale`   F32      [1]           W4A4 checkpoints only; kept as it is
 * FP8 per channel (`float-quantized`, strategy channel): `<module>.weight` F8_E4M3 [out, in] and
 * `<module>.weight_scale` [out, 1] in the model's dtype (`input_scale` kept as it is where present).
 */
import type { Dtype } from '../container/format.js';
import { EqzError } from '../errors.js';
import { NVFP4_BLOCK } from './e2m1.js';
import { checkNvfp4Tensor, type Nvfp4Tensor } from './payload.js';

/** The compressed-tensors formats eqz reads and writes. */
export type CompressedTensorsScheme = 'nvfp4-pack-quantized' | 'float-quantized';

/** What {@link detectCompressedTensors} found in a config. */
export interface CompressedTensorsInfo {
  scheme: CompressedTensorsScheme;
  /** Modules left unquantized (names or `re:` patterns, as the config lists them). */
  ignore: string[];
  /** Whether activations are quantized too (input_activations not null: W4A4 / W8A8). */
  quantizedActivations: boolean;
}

/** A tensor as a model lists it. */
export interface TensorInfo {
  name: string;
  dtype: Dtype;
  shape: readonly number[];
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const malformed = (message: string) => new EqzError('Malformed', `quantization_config: ${message}`, { file: 'config.json' });

/** Checks one group's weight arguments against what `scheme` requires. */
function checkWeightArgs(scheme: CompressedTensorsScheme, group: string, weights: unknown): void {
  if (!isObject(weights)) throw malformed(`config group ${group} has no weights arguments`);
  const { num_bits: bits, type, strategy, group_size: groupSize, symmetric } = weights;
  if (type !== undefined && type !== 'float') throw malformed(`config group ${group}: ${scheme} needs type float, not ${String(type)}`);
  if (symmetric === false) throw malformed(`config group ${group}: ${scheme} needs symmetric quantization`);
  if (scheme === 'nvfp4-pack-quantized') {
    if (bits !== 4 || strategy !== 'tensor_group' || groupSize !== NVFP4_BLOCK) {
      throw malformed(`config group ${group}: NVFP4 needs num_bits 4, strategy tensor_group, group_size 16 (found ${String(bits)}, ${String(strategy)}, ${String(groupSize)})`);
    }
  } else if (bits !== 8 || strategy !== 'channel') {
    throw malformed(`config group ${group}: FP8 float-quantized is read per channel only: num_bits 8, strategy channel (found ${String(bits)}, ${String(strategy)})`);
  }
}

/**
 * The compressed-tensors scheme of a parsed config.json (the whole config, or its `quantization_config`):
 * `nvfp4-pack-quantized` or `float-quantized` (per channel) with the ignore list, or null when the config is not
 * compressed-tensors or uses another format (dense, pack-quantized int, …). A config that names one of the two
 * formats but breaks its rules (group size, bits, strategy, a mix of formats) is EqzError Malformed.
 */
export function detectCompressedTensors(config: unknown): CompressedTensorsInfo | null {
  if (!isObject(config)) return null;
  const quantization = isObject(config.quantization_config) ? config.quantization_config : config;
  if (quantization.quant_method !== 'compressed-tensors') return null;
  const groups = isObject(quantization.config_groups) ? Object.entries(quantization.config_groups) : [];
  const formats = new Set<string>();
  if (typeof quantization.format === 'string' && quantization.format !== 'mixed-precision') formats.add(quantization.format);
  for (const [, group] of groups) {
    if (isObject(group) && typeof group.format === 'string') formats.add(group.format);
  }
  const known = [...formats].filter((format): format is CompressedTensorsScheme => format === 'nvfp4-pack-quantized' || format === 'float-quantized');
  if (known.length === 0) return null;
  if (formats.size > 1) throw malformed(`formats ${[...formats].join(', ')} are mixed; eqz reads one of nvfp4-pack-quantized or float-quantized`);
  const scheme = known[0]!;
  if (groups.length === 0) throw malformed('no config_groups');
  let quantizedActivations = false;
  for (const [name, group] of groups) {
    if (!isObject(group)) throw malformed(`config group ${name} is not an object`);
    checkWeightArgs(scheme, name, group.weights);
    if (group.input_activations !== null && group.input_activations !== undefined) quantizedActivations = true;
  }
  const ignore = quantization.ignore ?? [];
  if (!Array.isArray(ignore) || !ignore.every((entry) => typeof entry === 'string')) throw malformed('ignore is not a list of names');
  return { scheme, ignore: [...ignore], quantizedActivations };
}

/** The tensors of one NVFP4 module in a model. */
export interface Nvfp4Module {
  /** Module name, e.g. `model.layers.0.self_attn.q_proj`. */
  module: string;
  packed: string;
  scale: string;
  globalScale: string;
  /** W4A4 checkpoints: the activation global scale, kept as it is. */
  inputGlobalScale?: string;
  /** The dequantized weight's shape [out, in]. */
  rows: number;
  cols: number;
}

/** The tensors of one FP8 per-channel module. */
export interface Fp8ChannelModule {
  module: string;
  weight: string;
  scale: string;
  /** W8A8 checkpoints: the static activation scale, kept as it is. */
  inputScale?: string;
  rows: number;
  cols: number;
  /** dtype of the scales (the model's dtype). */
  scaleDtype: Dtype;
}

/** The suffixes compressed-tensors appends to a module name. */
export const NVFP4_SUFFIXES = {
  packed: '.weight_packed', scale: '.weight_scale', globalScale: '.weight_global_scale', inputGlobalScale: '.input_global_scale',
} as const;

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function expectTensor(byName: ReadonlyMap<string, TensorInfo>, name: string, dtype: Dtype, shape: readonly number[], owner: string): TensorInfo {
  const tensor = byName.get(name);
  if (tensor === undefined) throw new EqzError('Malformed', `NVFP4 module ${owner} has no ${name}`, { tensor: name });
  if (tensor.dtype !== dtype) throw new EqzError('Malformed', `is ${tensor.dtype}, NVFP4 needs ${dtype}`, { tensor: name });
  if (tensor.shape.length !== shape.length || tensor.shape.some((d, i) => d !== shape[i])) {
    throw new EqzError('Malformed', `has shape ${shapeText(tensor.shape)}, NVFP4 module ${owner} needs ${shapeText(shape)}`, { tensor: name });
  }
  return tensor;
}

/**
 * The NVFP4 modules of a model's tensor list: every `<module>.weight_packed` with its `weight_scale` and
 * `weight_global_scale`, names, dtypes and shapes checked (EqzError Malformed naming the tensor: a missing scale
 * tensor, a wrong dtype or shape, an input dimension not a multiple of 16, or a scale tensor without its
 * weight_packed). `others` lists every tensor that belongs to no module, in the given order.
 */
export function groupNvfp4Modules(tensors: readonly TensorInfo[]): { modules: Nvfp4Module[]; others: string[] } {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const claimed = new Set<string>();
  const modules: Nvfp4Module[] = [];
  for (const tensor of tensors) {
    if (!tensor.name.endsWith(NVFP4_SUFFIXES.packed)) continue;
    const module = tensor.name.slice(0, -NVFP4_SUFFIXES.packed.length);
    if (tensor.dtype !== 'U8') throw new EqzError('Malformed', `is ${tensor.dtype}, weight_packed must be U8`, { tensor: tensor.name });
    if (tensor.shape.length !== 2) throw new EqzError('Malformed', `has shape ${shapeText(tensor.shape)}, weight_packed must be 2-D`, { tensor: tensor.name });
    const [rows, half] = tensor.shape as [number, number];
    const cols = 2 * half;
    if (cols % NVFP4_BLOCK !== 0) {
      throw new EqzError('Malformed', `holds ${cols} columns, not a multiple of ${NVFP4_BLOCK}`, { tensor: tensor.name });
    }
    const scale = expectTensor(byName, module + NVFP4_SUFFIXES.scale, 'F8_E4M3', [rows, cols / NVFP4_BLOCK], module).name;
    const globalScale = expectTensor(byName, module + NVFP4_SUFFIXES.globalScale, 'F32', [1], module).name;
    const entry: Nvfp4Module = { module, packed: tensor.name, scale, globalScale, rows, cols };
    const input = byName.get(module + NVFP4_SUFFIXES.inputGlobalScale);
    if (input !== undefined) {
      entry.inputGlobalScale = expectTensor(byName, input.name, 'F32', [1], module).name;
      claimed.add(input.name);
    }
    claimed.add(tensor.name).add(scale).add(globalScale);
    modules.push(entry);
  }
  for (const tensor of tensors) {
    for (const suffix of [NVFP4_SUFFIXES.scale, NVFP4_SUFFIXES.globalScale]) {
      if (tensor.name.endsWith(suffix) && !claimed.has(tensor.name)) {
        throw new EqzError('Malformed', `has no ${tensor.name.slice(0, -suffix.length)}${NVFP4_SUFFIXES.packed} beside it`, { tensor: tensor.name });
      }
    }
  }
  return { modules, others: tensors.filter((t) => !claimed.has(t.name)).map((t) => t.name) };
}

/**
 * The FP8 per-channel modules of a model's tensor list: every F8_E4M3 `<module>.weight` [out, in] with its
 * `<module>.weight_scale` [out, 1] (F32, F16 or BF16), checked like {@link groupNvfp4Modules}.
 */
export function groupFp8ChannelModules(tensors: readonly TensorInfo[]): { modules: Fp8ChannelModule[]; others: string[] } {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const claimed = new Set<string>();
  const modules: Fp8ChannelModule[] = [];
  for (const tensor of tensors) {
    if (!tensor.name.endsWith('.weight') || tensor.dtype !== 'F8_E4M3') continue;
    const module = tensor.name.slice(0, -'.weight'.length);
    if (tensor.shape.length !== 2) throw new EqzError('Malformed', `has shape ${shapeText(tensor.shape)}, an FP8 weight must be 2-D`, { tensor: tensor.name });
    const [rows, cols] = tensor.shape as [number, number];
    const scaleName = `${module}.weight_scale`;
    const scale = byName.get(scaleName);
    if (scale === undefined) throw new EqzError('Malformed', `FP8 module ${module} has no ${scaleName}`, { tensor: scaleName });
    if (scale.dtype !== 'F32' && scale.dtype !== 'F16' && scale.dtype !== 'BF16') {
      throw new EqzError('Malformed', `is ${scale.dtype}, per-channel scales must be F32, F16 or BF16`, { tensor: scaleName });
    }
    if (scale.shape.length !== 2 || scale.shape[0] !== rows || scale.shape[1] !== 1) {
      throw new EqzError('Malformed', `has shape ${shapeText(scale.shape)}, FP8 module ${module} needs [${rows}, 1]`, { tensor: scaleName });
    }
    const entry: Fp8ChannelModule = { module, weight: tensor.name, scale: scaleName, rows, cols, scaleDtype: scale.dtype };
    const input = byName.get(`${module}.input_scale`);
    if (input !== undefined) {
      entry.inputScale = input.name;
      claimed.add(input.name);
    }
    claimed.add(tensor.name).add(scaleName);
    modules.push(entry);
  }
  return { modules, others: tensors.filter((t) => !claimed.has(t.name)).map((t) => t.name) };
}

/**
 * An {@link Nvfp4Tensor} from the bytes of a module's three tensors (as safetensors stores them), checked: the
 * global scale finite, positive and in [2^-32, 2^32], no E4M3 NaN block scale (EqzError InvalidValue naming the
 * offending tensor), sizes matching the module (Malformed).
 */
export function nvfp4FromModuleBytes(
  module: Nvfp4Module, bytes: { packed: Uint8Array; scale: Uint8Array; globalScale: Uint8Array },
): Nvfp4Tensor {
  if (bytes.globalScale.length !== 4) throw new EqzError('Malformed', `holds ${bytes.globalScale.length} bytes, not one F32`, { tensor: module.globalScale });
  const globalScale = new DataView(bytes.globalScale.buffer, bytes.globalScale.byteOffset, 4).getFloat32(0, true);
  const tensor: Nvfp4Tensor = { packed: bytes.packed, blockScales: bytes.scale, globalScale, rows: module.rows, cols: module.cols };
  checkNvfp4Tensor(tensor, { packed: module.packed, blockScales: module.scale, globalScale: module.globalScale });
  return tensor;
}

/** The three tensors of an NVFP4 module, named and laid out as compressed-tensors stores them. */
export function nvfp4ModuleTensors(module: string, tensor: Nvfp4Tensor): Array<{ name: string; dtype: Dtype; shape: number[]; bytes: Uint8Array }> {
  const global = new Uint8Array(4);
  new DataView(global.buffer).setFloat32(0, tensor.globalScale, true);
  return [
    { name: module + NVFP4_SUFFIXES.packed, dtype: 'U8', shape: [tensor.rows, tensor.cols / 2], bytes: tensor.packed },
    { name: module + NVFP4_SUFFIXES.scale, dtype: 'F8_E4M3', shape: [tensor.rows, tensor.cols / NVFP4_BLOCK], bytes: tensor.blockScales },
    { name: module + NVFP4_SUFFIXES.globalScale, dtype: 'F32', shape: [1], bytes: global },
  ];
}

/** Names of embedding tables: 2-D `.weight`s that are not Linear layers, so they never go in `ignore`. */
const EMBEDDING = /(^|\.)(embed_tokens|embeddings?|wte|wpe|word_embeddings|position_embeddings)(\.|$)/;

/**
 * The `ignore` list for a folder whose Linear modules `quantized` are quantized: every other module holding a
 * 2-D `.weight` (embeddings excepted), plus `lm_head` (a Linear even when tied to the embeddings and so absent
 * from the tensors) unless it is quantized. Sorted.
 */
export function ignoreList(tensors: readonly TensorInfo[], quantized: ReadonlySet<string>): string[] {
  const ignore = new Set<string>();
  if (!quantized.has('lm_head')) ignore.add('lm_head');
  for (const tensor of tensors) {
    if (!tensor.name.endsWith('.weight') || tensor.shape.length !== 2 || EMBEDDING.test(tensor.name)) continue;
    const module = tensor.name.slice(0, -'.weight'.length);
    if (!quantized.has(module)) ignore.add(module);
  }
  return [...ignore].sort();
}

/** compressed-tensors' serialization of float weight arguments (fields in its model order). */
function floatWeightArgs(numBits: number, strategy: string, groupSize: number | null, scaleDtype: string | null) {
  return {
    num_bits: numBits,
    type: 'float',
    symmetric: true,
    group_size: groupSize,
    strategy,
    block_structure: null,
    dynamic: false,
    actorder: null,
    scale_dtype: scaleDtype,
    zp_dtype: 'torch.float8_e4m3fn',
    observer: 'memoryless_minmax',
    observer_kwargs: {},
  };
}

function quantizationConfig(format: CompressedTensorsScheme, weights: object, ignore: readonly string[]) {
  return {
    config_groups: {
      group_0: { targets: ['Linear'], weights, input_activations: null, output_activations: null, format },
    },
    quant_method: 'compressed-tensors',
    kv_cache_scheme: null,
    format,
    quantization_status: 'compressed',
    global_compression_ratio: null,
    ignore: [...ignore],
  };
}

/**
 * The `quantization_config` eqz writes for weight-only NVFP4 (NVFP4A16): one group targeting Linear,
 * weights {num_bits 4, float, tensor_group, group_size 16, symmetric, static, E4M3 scales}, no activation
 * quantization, format `nvfp4-pack-quantized` in the group and at the top, status `compressed`.
 */
export function nvfp4QuantizationConfig(ignore: readonly string[]): Record<string, unknown> {
  return quantizationConfig('nvfp4-pack-quantized', floatWeightArgs(4, 'tensor_group', NVFP4_BLOCK, 'torch.float8_e4m3fn'), ignore);
}

/**
 * The `quantization_config` eqz writes for weight-only FP8 with one scale per output channel: weights
 * {num_bits 8, float, strategy channel, symmetric, static}, `weight_scale` [out, 1] in the model's dtype,
 * format `float-quantized`.
 */
export function fp8ChannelQuantizationConfig(ignore: readonly string[]): Record<string, unknown> {
  return quantizationConfig('float-quantized', floatWeightArgs(8, 'channel', null, null), ignore);
}

/**
 * config.json with `quantization_config` set to `quantizationConfig` and the dtype set to `dtype` (both `dtype`
 * and the older `torch_dtype`: compressed-tensors decompresses NVFP4 to bfloat16 and transformers refuses a
 * float32 config for it). Other members keep their order; the result is 2-space-indented JSON with a newline.
 */
export function withQuantizationConfig(configJson: Uint8Array, quantizationConfig: Record<string, unknown>, dtype = 'bfloat16'): Uint8Array {
  let config: unknown;
  try {
    config = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(configJson));
  } catch (error) {
    throw new EqzError('Malformed', `config.json is not valid JSON (${(error as Error).message})`, { file: 'config.json' });
  }
  if (!isObject(config)) throw new EqzError('Malformed', 'config.json is not a JSON object', { file: 'config.json' });
  const edited = { ...config, dtype, torch_dtype: dtype, quantization_config: quantizationConfig };
  return new TextEncoder().encode(`${JSON.stringify(edited, null, 2)}\n`);
}
