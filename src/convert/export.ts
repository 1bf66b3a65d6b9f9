/**
 * .eqz → compressed-tensors checkpoints that vLLM and transformers load (`eqz convert m.eqz -o out/ --dtype
 * nvfp4|fp8`): quantized tensors are written in their quantized form instead of being dequantized.
 * - nvfp4: each `nvfp4` tensor `<module>.weight` becomes `weight_packed` / `weight_scale` / `weight_global_scale`
 *   (with a template: into the template's files; see src/nvfp4/export.ts), other tensors BF16;
 * - fp8: each `fp8-e4m3` tensor becomes `<module>.weight` F8_E4M3 + `<module>.weight_scale` [out, 1] in the
 *   tensor's source dtype, config.json gets the `float-quantized` channel `quantization_config`.
 */
import { fileSource } from '../container/file-source.js';
import { EqzReader } from '../container/reader.js';
import { getString, numElements, type TensorEntry } from '../container/table.js';
import { META, DTYPE_SIZE, type Dtype } from '../container/format.js';
import { decodeTensor } from '../decode/tensor.js';
import { decodeScaledPayload } from '../encodings/scaled.js';
import { initCodec } from '../codec/index.js';
import { EqzError } from '../errors.js';
import { writeModel } from '../io/model-folder.js';
import { fromFloat32 } from '../tensor/dtype.js';
import {
  decodeNvfp4Payload, exportNvfp4Folder, exportNvfp4WithTemplate, fp8ChannelQuantizationConfig, ignoreList,
  withQuantizationConfig,
} from '../nvfp4/index.js';
import { embeddedFiles, sourceLayout } from './decode.js';

export interface ExportOptions {
  format: 'nvfp4' | 'fp8';
  template?: string;
  overwrite?: boolean;
}

const FLOAT_DTYPES: readonly Dtype[] = ['F32', 'F16', 'BF16'];

/** Per-tensor statistics recorded at encode time (`eqz.stats`), for the export report. */
function recordedStats(reader: EqzReader): Record<string, { relL1?: number; relL2?: number; bitsPerParam?: number }> {
  const text = getString(reader.metadata, META.stats);
  if (text === undefined) return {};
  try {
    return JSON.parse(text) as Record<string, { relL1?: number; relL2?: number }>;
  } catch {
    throw new EqzError('Malformed', `metadata ${META.stats} is not valid JSON`);
  }
}

const moduleOf = (entry: TensorEntry): string => entry.name.replace(/\.weight$/, '');

async function exportNvfp4(reader: EqzReader, output: string, options: ExportOptions): Promise<void> {
  const quantized = reader.tensors.filter((t) => t.encoding === 'nvfp4');
  if (quantized.length === 0) throw new EqzError('InvalidValue', '--dtype nvfp4: the file holds no nvfp4 tensors (quantize with --format nvfp4)');
  const modules = new Map(quantized.map((t) => [moduleOf(t), { rows: t.shape[0]!, cols: t.shape[1]! }]));
  const stats = recordedStats(reader);
  const loadModule = async (module: string) => {
    const entry = reader.tensor(`${module}.weight`)!;
    const payload = await reader.readPayload(entry);
    const tensor = decodeNvfp4Payload(payload, entry.shape[0]!, entry.shape[1]!, { tensor: entry.name, payloadOffset: reader.payloadOffset(entry) });
    return { tensor, stats: stats[entry.name], storedBitsPerParam: (entry.size * 8) / numElements(entry.shape) };
  };
  if (options.template) {
    await exportNvfp4WithTemplate(output, options.template, modules, loadModule, { overwrite: options.overwrite });
    return;
  }
  const others = reader.tensors.filter((t) => t.encoding !== 'nvfp4');
  const outputDtype = (t: TensorEntry): Dtype => (FLOAT_DTYPES.includes(t.dtype) ? 'BF16' : t.dtype);
  await exportNvfp4Folder(output, {
    layout: sourceLayout(reader.metadata, reader.tensors),
    smallFiles: embeddedFiles(reader.metadata),
    tensors: others.map((t) => ({ name: t.name, dtype: outputDtype(t), shape: t.shape })),
    modules,
    readTensor: (name) => {
      const entry = reader.tensor(name)!;
      return decodeTensor(reader, entry, FLOAT_DTYPES.includes(entry.dtype) ? { dtype: 'BF16' } : {});
    },
    loadModule,
  }, { overwrite: options.overwrite });
}

async function exportFp8(reader: EqzReader, output: string, options: ExportOptions): Promise<void> {
  if (options.template) throw new Error('--template applies to --dtype nvfp4 only');
  const int8 = reader.tensors.find((t) => t.encoding === 'int8' || t.encoding === 'nvfp4');
  if (int8) throw new EqzError('InvalidValue', `--dtype fp8 writes fp8-e4m3 tensors; this one is ${int8.encoding} (decode it with --dtype bf16)`, { tensor: int8.name });
  const quantized = new Set(reader.tensors.filter((t) => t.encoding === 'fp8-e4m3' && t.shape.length === 2).map((t) => t.name));
  if (quantized.size === 0) throw new EqzError('InvalidValue', '--dtype fp8: the file holds no fp8-e4m3 tensors');
  const scaleName = (name: string) => `${name}_scale`;
  const entries = reader.tensors.flatMap((t) => quantized.has(t.name)
    ? [{ name: t.name, dtype: 'F8_E4M3' as Dtype, shape: t.shape }, { name: scaleName(t.name), dtype: t.dtype, shape: [t.shape[0]!, 1] }]
    : [{ name: t.name, dtype: t.dtype, shape: t.shape }]);
  const layout = sourceLayout(reader.metadata, reader.tensors).map((file) => ({
    ...file, tensors: file.tensors.flatMap((name) => (quantized.has(name) ? [name, scaleName(name)] : [name])),
  }));
  const files = embeddedFiles(reader.metadata);
  const config = files.get('config.json');
  if (!config) throw new EqzError('Malformed', 'a compressed-tensors folder needs a config.json, and the file embeds none');
  const infos = reader.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape }));
  const modelDtype = reader.tensors.find((t) => quantized.has(t.name))!.dtype;
  const torchDtype = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[modelDtype as 'F32' | 'F16' | 'BF16'];
  files.set('config.json', withQuantizationConfig(config, fp8ChannelQuantizationConfig(ignoreList(infos, new Set([...quantized].map((n) => n.replace(/\.weight$/, ''))))), torchDtype));
  const total = entries.reduce((sum, e) => sum + numElements(e.shape) * DTYPE_SIZE[e.dtype], 0);
  for (const [path, bytes] of files) {
    if (!path.endsWith('.safetensors.index.json')) continue;
    const index = JSON.parse(new TextDecoder().decode(bytes)) as { metadata?: Record<string, unknown>; weight_map: Record<string, string> };
    for (const name of quantized) index.weight_map[scaleName(name)] = index.weight_map[name]!;
    files.set(path, new TextEncoder().encode(`${JSON.stringify({ ...index, metadata: { ...index.metadata, total_size: total } }, null, 2)}\n`));
  }
  await initCodec();
  const scaled = new Map<string, ReturnType<typeof decodeScaledPayload>>();
  await writeModel(output, layout, files, entries, async (name) => {
    if (quantized.has(name)) {
      const entry = reader.tensor(name)!;
      const decoded = decodeScaledPayload(await reader.readPayload(entry), 'fp8-e4m3', entry.shape);
      scaled.set(name, decoded);
      return decoded.codes;
    }
    const owner = name.endsWith('_scale') ? name.slice(0, -'_scale'.length) : undefined;
    if (owner !== undefined && quantized.has(owner)) {
      const decoded = scaled.get(owner)!;
      scaled.delete(owner);
      return fromFloat32(decoded.scales, reader.tensor(owner)!.dtype as 'F32' | 'F16' | 'BF16');
    }
    return decodeTensor(reader, reader.tensor(name)!);
  }, { overwrite: options.overwrite });
}

/** Writes the .eqz at `input` as a compressed-tensors folder at `output`. */
export async function exportCompressedTensors(input: string, output: string, options: ExportOptions): Promise<void> {
  const reader = await EqzReader.open(await fileSource(input));
  try {
    await (options.format === 'nvfp4' ? exportNvfp4(reader, output, options) : exportFp8(reader, output, options));
  } catch (error) {
    throw error instanceof EqzError ? error.locate({ file: input }) : error;
  } finally {
    await reader.close();
  }
}
