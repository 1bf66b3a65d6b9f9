/**
 * .eqz → safetensors file or Hugging Face folder: each tensor decoded and written in turn; the folder's small files
 * (config, tokenizer...) and shard layout come back from the metadata.
 */
import { fileSource } from '../container/file-source.js';
import { EqzReader } from '../container/reader.js';
import { getString, numElements, type Metadata, type TensorEntry } from '../container/table.js';
import { DTYPE_SIZE, META, ValueType } from '../container/format.js';
import { decodeTensor, outputDtypeOf, type DecodeOptions } from '../decode/tensor.js';
import { writeModel, type ModelFileLayout } from '../io/model-folder.js';
import { EqzError } from '../errors.js';
import type { GpuDecoder } from '../gpu/decode.js';
import { decodeNvfp4Payload, nvfp4ModuleTensors } from '../nvfp4/index.js';
import { NVFP4_SOURCE_FORMAT, nvfp4Parts } from './import.js';

export interface DecodeModelOptions extends DecodeOptions {
  overwrite?: boolean;
  /** Decode the encodings it handles (planes, fp8-e4m3, int8, nvfp4) on this WebGPU decoder; the rest on the CPU. */
  gpu?: GpuDecoder;
  onProgress?: (done: number, total: number, bytes: number) => void;
}

/** The shard layout recorded at encode time, or one file holding every tensor in table order. */
export function sourceLayout(metadata: Metadata, tensors: readonly TensorEntry[], otherNames: Iterable<string> = []): ModelFileLayout[] {
  const recorded = getString(metadata, META.sourceFiles);
  if (recorded !== undefined) {
    let layout: unknown;
    try {
      layout = JSON.parse(recorded);
    } catch {
      throw new EqzError('Malformed', `metadata ${META.sourceFiles} is not valid JSON`);
    }
    const names = new Set([...tensors.map((t) => t.name), ...otherNames]);
    const valid = Array.isArray(layout) && layout.every((file) =>
      typeof file?.name === 'string' && Array.isArray(file.tensors) && file.tensors.every((n: unknown) => typeof n === 'string' && names.has(n)));
    if (!valid) throw new EqzError('Malformed', `metadata ${META.sourceFiles} does not describe this file's tensors`);
    return layout as ModelFileLayout[];
  }
  return [{ name: 'model.safetensors', metadata: null, tensors: tensors.map((t) => t.name) }];
}

/** Files embedded under `eqz.file.<path>`. */
export function embeddedFiles(metadata: Metadata): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  for (const [key, value] of metadata) {
    if (!key.startsWith(META.filePrefix)) continue;
    if (value.type !== ValueType.ARRAY || !(value.value instanceof Uint8Array)) {
      throw new EqzError('Malformed', `metadata ${key} is not an array of u8`);
    }
    const path = key.slice(META.filePrefix.length);
    if (path === '' || path.startsWith('/') || path.split('/').some((part) => part === '..' || part === '')) {
      throw new EqzError('Malformed', `embedded file path "${path}" is not a plain relative path`);
    }
    files.set(path, value.value);
  }
  return files;
}

/**
 * A sharded model's index records the total weight size; when the output dtype differs from the stored one, the
 * index is rewritten with the new total (its weight map is unchanged).
 */
function updateIndexTotals(files: Map<string, Uint8Array>, totalBytes: number): void {
  for (const [path, bytes] of files) {
    if (!path.endsWith('.safetensors.index.json')) continue;
    let index: { metadata?: { total_size?: number } };
    try {
      index = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      continue; // not ours to judge: copied as it came
    }
    if (index.metadata?.total_size === undefined || index.metadata.total_size === totalBytes) continue;
    index.metadata.total_size = totalBytes;
    files.set(path, new TextEncoder().encode(`${JSON.stringify(index, null, 2)}\n`));
  }
}

const GPU_ENCODINGS = ['planes', 'fp8-e4m3', 'int8', 'nvfp4'];

/** One tensor through the WebGPU decoder, read back (bit-identical to the CPU decoder: the tests check). */
async function decodeOnGpu(gpu: GpuDecoder, reader: EqzReader, entry: TensorEntry, options: DecodeOptions): Promise<Uint8Array> {
  const payload = await reader.readPayload(entry);
  const dtype = outputDtypeOf(entry, options);
  const output = dtype === entry.dtype && entry.encoding === 'planes' ? 'source' : dtype as 'F32' | 'F16' | 'BF16';
  const [tensor] = await gpu.decodeToBuffers([{ entry, payload, output, payloadOffset: reader.payloadOffset(entry) }]);
  try {
    return await gpu.readBack(tensor!);
  } finally {
    tensor!.buffer.destroy();
  }
}

export async function decodeModel(input: string, output: string, options: DecodeModelOptions = {}): Promise<{ tensors: number; bytes: number; seconds: number }> {
  const started = performance.now();
  const reader = await EqzReader.open(await fileSource(input));
  try {
    const files = embeddedFiles(reader.metadata);
    // Imported NVFP4 checkpoints: each nvfp4 tensor stands for its module's three compressed-tensors tensors.
    const parts = new Map<string, { owner: TensorEntry; index: number }>();
    const imported = getString(reader.metadata, META.sourceFormat) === NVFP4_SOURCE_FORMAT;
    if (imported) {
      for (const entry of reader.tensors.filter((t) => t.encoding === 'nvfp4')) {
        nvfp4Parts(entry.name, entry.shape[0]!, entry.shape[1]!).forEach((part, index) => parts.set(part.name, { owner: entry, index }));
      }
    }
    let layout = sourceLayout(reader.metadata, reader.tensors, parts.keys());
    if (imported) {
      if (options.dtype) {
        // Dequantizing: the module's weight takes the place of its parts, and config.json loses quantization_config.
        layout = layout.map((file) => ({ ...file, tensors: [...new Set(file.tensors.map((name) => parts.get(name)?.owner.name ?? name))] }));
        parts.clear();
        const config = files.get('config.json');
        if (config) {
          const { quantization_config: _dropped, ...plain } = JSON.parse(new TextDecoder().decode(config)) as Record<string, unknown>;
          files.set('config.json', new TextEncoder().encode(`${JSON.stringify(plain, null, 2)}\n`));
        }
      }
    }
    let done = 0;
    let bytes = 0;
    const outputs = layout.flatMap((file) => file.tensors).map((name) => {
      const part = parts.get(name);
      if (part) return nvfp4Parts(part.owner.name, part.owner.shape[0]!, part.owner.shape[1]!)[part.index]!;
      const entry = reader.tensor(name)!;
      return { name, dtype: outputDtypeOf(entry, options), shape: entry.shape };
    });
    if (outputs.some((t) => { const entry = reader.tensor(t.name); return entry !== undefined && t.dtype !== entry.dtype; })) {
      updateIndexTotals(files, outputs.reduce((sum, t) => sum + numElements(t.shape) * DTYPE_SIZE[t.dtype], 0));
    }
    let module: { owner: string; tensors: Uint8Array[] } | undefined;
    await writeModel(
      output,
      layout,
      files,
      outputs,
      async (name) => {
        const part = parts.get(name);
        let decoded: Uint8Array;
        if (part) {
          if (module?.owner !== part.owner.name) {
            const payload = await reader.readPayload(part.owner);
            const tensor = decodeNvfp4Payload(payload, part.owner.shape[0]!, part.owner.shape[1]!, { tensor: part.owner.name, payloadOffset: reader.payloadOffset(part.owner) });
            module = { owner: part.owner.name, tensors: nvfp4ModuleTensors(part.owner.name.replace(/\.weight$/, ''), tensor).map((t) => t.bytes) };
          }
          decoded = module.tensors[part.index]!;
        } else {
          const entry = reader.tensor(name)!;
          decoded = options.gpu && GPU_ENCODINGS.includes(entry.encoding)
            ? await decodeOnGpu(options.gpu, reader, entry, options)
            : await decodeTensor(reader, entry, options);
        }
        bytes += decoded.length;
        options.onProgress?.(++done, outputs.length, bytes);
        return decoded;
      },
      { overwrite: options.overwrite },
    );
    return { tensors: reader.tensors.length, bytes, seconds: (performance.now() - started) / 1000 };
  } catch (error) {
    throw error instanceof EqzError ? error.locate({ file: input }) : error;
  } finally {
    await reader.close();
  }
}
