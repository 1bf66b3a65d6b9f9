/**
 * NVFP4 the way llm-compressor writes it (its min–max observer, compressed-tensors' `calculate_qparams`,
 * `generate_gparam` and `NVFP4PackedCompressor`), reproduced operation for operation so that eqz's absmax
 * quantization of a weight gives the same three tensors:
 *
 * - global_scale = 448·6 / max|W|, computed in the weight's dtype, then widened to f32; q/k/v (and gate/up,
 *   q_a/kv_a, w1/w3) of one module share the global scale of their joint max|W| — the smallest of theirs —
 *   because vLLM fuses those layers;
 * - block scale = E4M3(clamp(global_scale · (max|block| / 6), 0, 448)) (round to nearest even), where the
 *   division by 6 is in the weight's dtype and the product in f32; a scale that rounds to 0 becomes 0.125;
 * - codes = cast_to_fp4(w / (f32(block_scale) / global_scale)) (e2m1.ts), both divisions in f32.
 */
import { castE4M3 } from '../quant/grid.js';
import { E4M3_VALUES, bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '../tensor/dtype.js';
import { E2M1_MAX, NVFP4_BLOCK, castE2M1 } from './e2m1.js';
import { MAX_GLOBAL_SCALE, MIN_GLOBAL_SCALE } from './payload.js';

/** Dtypes a source weight may have; llm-compressor computes its statistics in the weight's own dtype. */
export type SourceDtype = 'F32' | 'F16' | 'BF16';

/** Largest E4M3 value: the block scale the absmax rule gives the block holding max|W|. */
export const E4M3_MAX = 448;
/** compressed-tensors replaces a block scale that rounds to 0 by this E4M3 code (0.125). */
export const ZERO_BLOCK_SCALE_CODE = 0x20;

/** `x` rounded to `dtype` (as torch computes an op in that dtype: in f32, then rounded), as a number. */
export function roundToDtype(x: number, dtype: SourceDtype): number {
  const single = Math.fround(x);
  if (dtype === 'BF16') return bf16BitsToF32(f32ToBf16Bits(single));
  if (dtype === 'F16') return f16BitsToF32(f32ToF16Bits(single));
  return single;
}

/** max |w| (0 for an empty or all-zero tensor). */
export function absMax(weights: Float32Array): number {
  let max = 0;
  for (let i = 0; i < weights.length; i++) {
    const magnitude = Math.abs(weights[i]!);
    if (magnitude > max) max = magnitude;
  }
  return max;
}

/**
 * The absmax global scale 448·6 / `absmax` as llm-compressor computes it (in `dtype`, widened to f32),
 * clamped to the range the format allows, [2^-32, 2^32]; 1 for an all-zero tensor (any scale decodes zeros).
 */
export function absmaxGlobalScale(absmax: number, dtype: SourceDtype = 'F32'): number {
  if (!(absmax > 0)) return 1;
  const scale = roundToDtype((E4M3_MAX * E2M1_MAX) / absmax, dtype);
  return Math.min(Math.max(scale, MIN_GLOBAL_SCALE), MAX_GLOBAL_SCALE);
}

/** Module names whose weights llm-compressor gives one global scale (they are fused in vLLM). */
export const FUSED_LAYER_NAMES: readonly (readonly string[])[] = [
  ['gate_proj', 'up_proj'],
  ['q_proj', 'k_proj', 'v_proj'],
  ['q_a_proj', 'kv_a_proj_with_mqa'],
  ['w1', 'w3'],
];

/** `name` without a trailing `.weight` (tensor name → module name). */
function moduleOf(name: string): string {
  return name.endsWith('.weight') ? name.slice(0, -'.weight'.length) : name;
}

/**
 * Groups of names (modules or their `.weight` tensors) that share a global scale: for every parent module
 * holding all present members of one {@link FUSED_LAYER_NAMES} set, e.g. `…self_attn.q_proj`, `k_proj`,
 * `v_proj`. Names in no group are left out. Groups come in the order of their first member in `names`.
 */
export function fusedGroups(names: readonly string[]): string[][] {
  const groups = new Map<string, string[]>();
  for (const name of names) {
    const module = moduleOf(name);
    const dot = module.lastIndexOf('.');
    const parent = module.slice(0, dot + 1);
    const leaf = module.slice(dot + 1);
    const set = FUSED_LAYER_NAMES.findIndex((members) => members.includes(leaf));
    if (set < 0) continue;
    const key = `${set}:${parent}`;
    const group = groups.get(key) ?? [];
    group.push(name);
    groups.set(key, group);
  }
  return [...groups.values()].filter((group) => group.length > 1);
}

/**
 * Each name's global scale once fused layers share one: the smallest of their group (that of their joint
 * max|W|); names in no group keep theirs.
 */
export function shareGlobalScales(scales: ReadonlyMap<string, number>): Map<string, number> {
  const shared = new Map(scales);
  for (const group of fusedGroups([...scales.keys()])) {
    const smallest = Math.min(...group.map((name) => scales.get(name)!));
    for (const name of group) shared.set(name, smallest);
  }
  return shared;
}

/** The three NVFP4 tensors of one weight (compressed-tensors layout) — what every quantizer here returns. */
export interface Nvfp4Quantized {
  /** U8 [rows, cols/2]. */
  packed: Uint8Array;
  /** E4M3 bytes [rows, cols/16]. */
  blockScales: Uint8Array;
  /** f32 value. */
  globalScale: number;
}

export interface AbsmaxOptions {
  /** The global scale to use (a fused group's shared one); default the tensor's own absmax rule. */
  globalScale?: number;
  /** The dtype the weights came in (llm-compressor rounds its statistics to it); default F32. */
  sourceDtype?: SourceDtype;
  /** Emit +0 for values that round to zero (default false: −0 for negative ones, as compressed-tensors). */
  positiveZero?: boolean;
}

/** The llm-compressor block scale code of a block whose max |w| is `blockMax`, at `globalScale`. */
export function absmaxBlockScale(blockMax: number, globalScale: number, dtype: SourceDtype): number {
  const local = roundToDtype(blockMax / E2M1_MAX, dtype);
  const code = castE4M3(Math.min(Math.fround(globalScale * local), E4M3_MAX));
  return code === 0 ? ZERO_BLOCK_SCALE_CODE : code;
}

/**
 * Codes for given block scales, as compressed-tensors quantizes: s = f32(e4m3(scale)) / global_scale and
 * code = cast_to_fp4(w / s), both divisions in f32. A block whose scale is zero gets +0 codes (it decodes to
 * zeros whatever they are). Writes `packed` ([rows, cols/2]).
 */
export function castWithBlockScales(
  weights: Float32Array, blockScales: Uint8Array, globalScale: number, packed: Uint8Array, positiveZero: boolean,
): void {
  for (let block = 0; block < blockScales.length; block++) {
    const scale = Math.fround(E4M3_VALUES[blockScales[block]!]! / globalScale);
    const start = block * NVFP4_BLOCK;
    for (let j = 0; j < NVFP4_BLOCK; j += 2) {
      const low = scale === 0 ? 0 : castE2M1(Math.fround(weights[start + j]! / scale), positiveZero);
      const high = scale === 0 ? 0 : castE2M1(Math.fround(weights[start + j + 1]! / scale), positiveZero);
      packed[(start + j) >> 1] = low | (high << 4);
    }
  }
}

/**
 * NVFP4 with absmax block scales, bit for bit what llm-compressor's NVFP4 scheme writes for this weight
 * ([rows, cols] row-major, cols a multiple of 16, finite values exactly representable in `sourceDtype`).
 */
export function quantizeAbsmaxNvfp4(weights: Float32Array, rows: number, cols: number, options: AbsmaxOptions = {}): Nvfp4Quantized {
  const dtype = options.sourceDtype ?? 'F32';
  const globalScale = options.globalScale ?? absmaxGlobalScale(absMax(weights), dtype);
  const blockScales = new Uint8Array((rows * cols) / NVFP4_BLOCK);
  for (let block = 0; block < blockScales.length; block++) {
    let blockMax = 0;
    for (let i = block * NVFP4_BLOCK; i < (block + 1) * NVFP4_BLOCK; i++) blockMax = Math.max(blockMax, Math.abs(weights[i]!));
    blockScales[block] = absmaxBlockScale(blockMax, globalScale, dtype);
  }
  const packed = new Uint8Array((rows * cols) / 2);
  castWithBlockScales(weights, blockScales, globalScale, packed, options.positiveZero ?? false);
  return { packed, blockScales, globalScale };
}
