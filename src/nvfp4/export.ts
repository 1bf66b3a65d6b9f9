/**
 * Writing compressed-tensors NVFP4 folders (`eqz convert m.eqz -o out/ --dtype nvfp4 [--template dir]`):
 *
 * - with a template (the EntQuant fork's export flow): the template's layout, sharding, config, tokenizer and
 *   every tensor not replaced are copied; each given module's `weight_packed` / `weight_scale` /
 *   `weight_global_scale` is replaced after its names, dtypes and shapes are checked against the template;
 * - without one: the model's own layout, each NVFP4 module's `<module>.weight` replaced in place (same shard) by
 *   its three tensors, config.json given the `quantization_config` and `dtype: bfloat16`, a sharded index's
 *   weight_map and total_size updated.
 *
 * Both write `nvfp4_export_report.json` (per module: shape, MSE, relative L1 and L2, entropy of the codes, stored
 * bits/param) and go through writeModel, so a failure leaves nothing behind. Modules are loaded one at a time,
 * when the writer first needs one of their tensors.
 */
import { DTYPE_SIZE } from '../container/format.js';
import type { ModelFileLayout } from '../io/model-folder.js';
import { openModel, writeModel } from '../io/model-folder.js';
import type { SafetensorsEntry } from '../io/safetensors.js';
import { entropyBitsPerSymbol } from '../codec/index.js';
import { EqzError } from '../errors.js';
import { relativeErrors } from '../quant/result.js';
import {
  detectCompressedTensors, groupNvfp4Modules, ignoreList, nvfp4ModuleTensors, nvfp4QuantizationConfig,
  withQuantizationConfig, type TensorInfo,
} from './compressed-tensors.js';
import { dequantizeNvfp4F32, encodeNvfp4Payload, type Nvfp4Tensor } from './payload.js';

/** Name of the report written beside the weights. */
export const EXPORT_REPORT = 'nvfp4_export_report.json';

/** One NVFP4 module to write, with what the report needs. */
export interface Nvfp4ExportModule {
  tensor: Nvfp4Tensor;
  /** The full-precision weight it was quantized from, when at hand: the report's errors are measured on it. */
  original?: Float32Array;
  /** Errors measured earlier (e.g. from the .eqz's `eqz.stats`), used when `original` is absent. */
  stats?: { mse?: number; relL1?: number; relL2?: number };
  /** Stored bits/param in the .eqz; when absent the `nvfp4` payload is encoded to measure it (needs initCodec). */
  storedBitsPerParam?: number;
}

/** Loads one module (called once per module, when the writer reaches it). */
export type ModuleLoader = (module: string) => Promise<Nvfp4ExportModule>;

/** The modules to write: module name → the [rows, cols] of its weight. */
export type ModuleShapes = ReadonlyMap<string, { rows: number; cols: number }>;

export interface ExportOptions {
  /** Replace an existing output. */
  overwrite?: boolean;
}

/** One module's line of the report. */
export interface ExportReportEntry {
  layer: string;
  shape: [number, number];
  num_weights: number;
  /** Mean squared error and relative L1/L2 errors of the dequantized weight (null when unknown). */
  mse: number | null;
  rel_l1: number | null;
  rel_l2: number | null;
  /** Order-0 entropy of the 4-bit codes, bits per code. */
  code_entropy_bits: number;
  /** Bits per parameter of the module stored in an `nvfp4` payload (codes, scales, tables, everything). */
  stored_bits_per_param: number;
  global_scale: number;
}

function reportEntry(module: string, loaded: Nvfp4ExportModule): ExportReportEntry {
  const { tensor } = loaded;
  const numel = tensor.rows * tensor.cols;
  const counts = new Float64Array(16);
  for (const byte of tensor.packed) {
    counts[byte & 15]!++;
    counts[byte >> 4]!++;
  }
  let mse = loaded.stats?.mse ?? null;
  let relL1 = loaded.stats?.relL1 ?? null;
  let relL2 = loaded.stats?.relL2 ?? null;
  if (loaded.original) {
    const decoded = dequantizeNvfp4F32(tensor);
    let squares = 0;
    for (let i = 0; i < numel; i++) squares += (decoded[i]! - loaded.original[i]!) ** 2;
    mse = numel > 0 ? squares / numel : 0;
    ({ relL1, relL2 } = relativeErrors(loaded.original, decoded));
  }
  return {
    layer: module,
    shape: [tensor.rows, tensor.cols],
    num_weights: numel,
    mse,
    rel_l1: relL1,
    rel_l2: relL2,
    code_entropy_bits: entropyBitsPerSymbol(counts),
    stored_bits_per_param: loaded.storedBitsPerParam ?? (8 * encodeNvfp4Payload(tensor).length) / numel,
    global_scale: tensor.globalScale,
  };
}

/** Parameter-weighted mean of a report field over the entries that have it (null when none does). */
function weightedMean(entries: readonly ExportReportEntry[], field: 'mse' | 'rel_l1' | 'code_entropy_bits' | 'stored_bits_per_param'): number | null {
  let weight = 0;
  let sum = 0;
  for (const entry of entries) {
    const value = entry[field];
    if (value === null) continue;
    weight += entry.num_weights;
    sum += entry.num_weights * value;
  }
  return weight > 0 ? sum / weight : null;
}

/**
 * Produces the replaced tensors module by module (each loaded once, when its first tensor is needed, and
 * dropped once its three tensors are out) and collects the report.
 */
class ModuleWriter {
  private readonly pending = new Map<string, Map<string, Uint8Array>>();
  private readonly owner = new Map<string, string>();
  private readonly entries: ExportReportEntry[] = [];

  constructor(private readonly shapes: ModuleShapes, private readonly load: ModuleLoader) {
    for (const module of shapes.keys()) {
      for (const suffix of ['.weight_packed', '.weight_scale', '.weight_global_scale']) this.owner.set(module + suffix, module);
    }
  }

  /** Whether `name` is one of the replaced tensors. */
  replaces(name: string): boolean {
    return this.owner.has(name);
  }

  async produce(name: string): Promise<Uint8Array> {
    const module = this.owner.get(name)!;
    let tensors = this.pending.get(module);
    if (tensors === undefined) {
      const loaded = await this.load(module);
      const { rows, cols } = this.shapes.get(module)!;
      if (loaded.tensor.rows !== rows || loaded.tensor.cols !== cols) {
        throw new EqzError('Malformed', `module ${module} was announced as [${rows}, ${cols}] but loads as [${loaded.tensor.rows}, ${loaded.tensor.cols}]`, { tensor: name });
      }
      this.entries.push(reportEntry(module, loaded));
      tensors = new Map(nvfp4ModuleTensors(module, loaded.tensor).map((t) => [t.name, t.bytes]));
      this.pending.set(module, tensors);
    }
    const bytes = tensors.get(name)!;
    tensors.delete(name);
    if (tensors.size === 0) this.pending.delete(module);
    return bytes;
  }

  /** The report, once every module has been written. */
  report(extra: Record<string, unknown>): Uint8Array {
    if (this.entries.length !== this.shapes.size) throw new Error('the NVFP4 export report was asked for before every module was written');
    const report = {
      producer: 'eqz',
      ...extra,
      num_modified_layers: this.entries.length,
      aggregate: {
        weighted_mse: weightedMean(this.entries, 'mse'),
        weighted_rel_l1: weightedMean(this.entries, 'rel_l1'),
        weighted_code_entropy_bits: weightedMean(this.entries, 'code_entropy_bits'),
        weighted_stored_bits_per_param: weightedMean(this.entries, 'stored_bits_per_param'),
      },
      layers: this.entries,
    };
    return new TextEncoder().encode(`${JSON.stringify(report, null, 2)}\n`);
  }
}

/**
 * Small files plus one whose bytes exist only once the weights are written (writeModel writes the small files
 * after the weight files); asking for it earlier is an error rather than a wrong file.
 */
class FilesWithLateReport implements ReadonlyMap<string, Uint8Array> {
  constructor(
    private readonly files: ReadonlyMap<string, Uint8Array>,
    private readonly name: string,
    private readonly late: () => Uint8Array,
  ) {}

  get size(): number {
    return this.files.size + (this.files.has(this.name) ? 0 : 1);
  }

  has(key: string): boolean {
    return key === this.name || this.files.has(key);
  }

  get(key: string): Uint8Array | undefined {
    return key === this.name ? this.late() : this.files.get(key);
  }

  forEach(callback: (value: Uint8Array, key: string, map: ReadonlyMap<string, Uint8Array>) => void): void {
    for (const [key, value] of this.entries()) callback(value, key, this);
  }

  *entries(): MapIterator<[string, Uint8Array]> {
    for (const entry of this.files) if (entry[0] !== this.name) yield entry;
    yield [this.name, this.late()];
  }

  *keys(): MapIterator<string> {
    for (const key of this.files.keys()) if (key !== this.name) yield key;
    yield this.name;
  }

  *values(): MapIterator<Uint8Array> {
    for (const [, value] of this.entries()) yield value;
  }

  [Symbol.iterator](): MapIterator<[string, Uint8Array]> {
    return this.entries();
  }
}

function decodeJson(bytes: Uint8Array, file: string): unknown {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (error) {
    throw new EqzError('Malformed', `not valid JSON (${(error as Error).message})`, { file });
  }
}

/**
 * Writes `out` from the compressed-tensors NVFP4 folder `template`, replacing the NVFP4 modules of `modules`
 * (loaded by `load`) and copying everything else: config, tokenizer and other files, every other tensor, the
 * shard layout and index. Before anything is written, each module must exist in the template as an NVFP4
 * module of the same shape (EqzError Malformed naming the template tensor otherwise); the template must be a
 * compressed-tensors NVFP4 folder.
 */
export async function exportNvfp4WithTemplate(
  out: string, template: string, modules: ModuleShapes, load: ModuleLoader, options: ExportOptions = {},
): Promise<void> {
  const model = await openModel(template);
  try {
    const config = model.smallFiles.get('config.json');
    if (config === undefined) throw new EqzError('Malformed', 'the template has no config.json', { file: template });
    if (detectCompressedTensors(decodeJson(config, 'config.json'))?.scheme !== 'nvfp4-pack-quantized') {
      throw new EqzError('Malformed', 'the template is not a compressed-tensors NVFP4 folder (config.json quantization_config)', { file: template });
    }
    const templateModules = new Map(groupNvfp4Modules(model.tensors).modules.map((m) => [m.module, m]));
    for (const [module, { rows, cols }] of modules) {
      const found = templateModules.get(module);
      if (found === undefined) throw new EqzError('Malformed', `the template has no NVFP4 module ${module}`, { tensor: `${module}.weight_packed`, file: template });
      if (found.rows !== rows || found.cols !== cols) {
        throw new EqzError('Malformed', `template module is [${found.rows}, ${found.cols}] (weight_packed [${found.rows}, ${found.cols / 2}]), the model's is [${rows}, ${cols}]`, { tensor: found.packed, file: template });
      }
    }
    const writer = new ModuleWriter(modules, load);
    const byName = new Map(model.tensors.map((t) => [t.name, t]));
    const files = new FilesWithLateReport(model.smallFiles, EXPORT_REPORT, () => writer.report({ template }));
    await writeModel(out, model.files, files, model.tensors, (name) => writer.replaces(name) ? writer.produce(name) : model.readTensor(byName.get(name)!), options);
  } finally {
    await model.close();
  }
}

/** What {@link exportNvfp4Folder} writes from: a model whose NVFP4 modules are stored as `<module>.weight`. */
export interface Nvfp4FolderSource {
  /** The weight files and the tensors each holds (an NVFP4 module as its `<module>.weight`). */
  layout: readonly ModelFileLayout[];
  /** config.json (required), tokenizer and other files; a `*.safetensors.index.json` is rewritten. */
  smallFiles: ReadonlyMap<string, Uint8Array>;
  /** Every tensor written as it is (not the NVFP4 modules' weights): name, output dtype, shape. */
  tensors: readonly SafetensorsEntry[];
  /** The NVFP4 modules and their weights' [rows, cols]. */
  modules: ModuleShapes;
  readTensor(name: string): Promise<Uint8Array>;
  loadModule: ModuleLoader;
}

/** The module of an NVFP4 weight name `<module>.weight` (throws for another name). */
function moduleOfWeight(name: string): string {
  if (!name.endsWith('.weight')) throw new EqzError('Malformed', 'an NVFP4 module\'s weight must be named <module>.weight', { tensor: name });
  return name.slice(0, -'.weight'.length);
}

/** A sharded index with the NVFP4 weights' entries replaced by their three tensors and the new total size. */
function rewriteIndex(bytes: Uint8Array, file: string, modules: ModuleShapes, totalSize: number): Uint8Array {
  const index = decodeJson(bytes, file) as { metadata?: Record<string, unknown>; weight_map?: Record<string, string> };
  if (typeof index !== 'object' || index === null || typeof index.weight_map !== 'object' || index.weight_map === null) {
    throw new EqzError('Malformed', 'index has no weight_map object', { file });
  }
  const weightMap: Record<string, string> = {};
  for (const [name, shard] of Object.entries(index.weight_map)) {
    const module = name.endsWith('.weight') ? name.slice(0, -'.weight'.length) : undefined;
    if (module !== undefined && modules.has(module)) {
      for (const suffix of ['.weight_packed', '.weight_scale', '.weight_global_scale']) weightMap[module + suffix] = shard;
    } else {
      weightMap[name] = shard;
    }
  }
  const rewritten = { ...index, metadata: { ...index.metadata, total_size: totalSize }, weight_map: weightMap };
  return new TextEncoder().encode(`${JSON.stringify(rewritten, null, 2)}\n`);
}

/**
 * Writes `out` as a compressed-tensors NVFP4 folder without a template: the source layout with each module's
 * `<module>.weight` replaced in place by its three tensors, config.json given the weight-only NVFP4
 * `quantization_config` (ignore: every other Linear, lm_head included) and dtype bfloat16, an index rewritten,
 * and the report.
 */
export async function exportNvfp4Folder(out: string, source: Nvfp4FolderSource, options: ExportOptions = {}): Promise<void> {
  const config = source.smallFiles.get('config.json');
  if (config === undefined) throw new EqzError('Malformed', 'a compressed-tensors folder needs a config.json, and the model has none');
  const entries: SafetensorsEntry[] = [...source.tensors];
  const infos: TensorInfo[] = [...source.tensors];
  for (const [module, { rows, cols }] of source.modules) {
    entries.push(...nvfp4ModuleTensors(module, { packed: new Uint8Array(0), blockScales: new Uint8Array(0), globalScale: 1, rows, cols }));
    infos.push({ name: `${module}.weight`, dtype: 'BF16', shape: [rows, cols] });
  }
  const placed = new Set<string>();
  const layout = source.layout.map((file) => ({
    ...file,
    tensors: file.tensors.flatMap((name) => {
      if (!name.endsWith('.weight') || !source.modules.has(moduleOfWeight(name))) return [name];
      const module = moduleOfWeight(name);
      placed.add(module);
      return ['.weight_packed', '.weight_scale', '.weight_global_scale'].map((suffix) => module + suffix);
    }),
  }));
  const missing = [...source.modules.keys()].find((module) => !placed.has(module));
  if (missing !== undefined) throw new EqzError('Malformed', 'NVFP4 module is in no weight file of the layout', { tensor: `${missing}.weight` });

  const totalSize = entries.reduce((sum, entry) => sum + byteLength(entry), 0);
  const smallFiles = new Map(source.smallFiles);
  smallFiles.set('config.json', withQuantizationConfig(config, nvfp4QuantizationConfig(ignoreList(infos, new Set(source.modules.keys())))));
  for (const [name, bytes] of source.smallFiles) {
    if (name.endsWith('.safetensors.index.json')) smallFiles.set(name, rewriteIndex(bytes, name, source.modules, totalSize));
  }
  const writer = new ModuleWriter(source.modules, source.loadModule);
  const files = new FilesWithLateReport(smallFiles, EXPORT_REPORT, () => writer.report({}));
  await writeModel(out, layout, files, entries, (name) => writer.replaces(name) ? writer.produce(name) : source.readTensor(name), options);
}

/** Bytes of a tensor entry. */
function byteLength(entry: SafetensorsEntry): number {
  return entry.shape.reduce((product, dim) => product * dim, DTYPE_SIZE[entry.dtype]);
}
