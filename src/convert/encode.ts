/**
 * safetensors file or Hugging Face folder → .eqz: read → (quantize) → encode → write, one tensor at a time.
 */
import { stat } from 'node:fs/promises';
import { EqzWriter } from '../container/writer.js';
import { META, type Dtype, type Encoding } from '../container/format.js';
import { metaBytes, metaString, numElements, type Metadata } from '../container/table.js';
import { openModel, type ModelSource, type ModelTensor } from '../io/model-folder.js';
import { EqzError } from '../errors.js';

/** How one tensor is to be stored. */
export interface EncodedTensor {
  encoding: Encoding;
  payload: Uint8Array | readonly Uint8Array[];
  /** Per-tensor statistics recorded under `eqz.stats` (rate, error...). */
  stats?: Record<string, number | string>;
}

/** Chooses and produces the stored form of one tensor from its source bytes. */
export type TensorEncoder = (tensor: ModelTensor, bytes: Uint8Array) => Promise<EncodedTensor>;

export interface EncodeProgress {
  tensorsDone: number;
  tensorsTotal: number;
  sourceBytesDone: number;
  sourceBytesTotal: number;
  storedBytes: number;
  paramsDone: number;
  paramsTotal: number;
}

/**
 * Several source tensors stored as one .eqz tensor (e.g. an NVFP4 module's weight_packed, weight_scale and
 * weight_global_scale as one `nvfp4` tensor), written where the first of `parts` stood.
 */
export interface CombinedTensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  parts: ModelTensor[];
  encode(parts: Uint8Array[]): Promise<EncodedTensor>;
}

export interface EncodeModelOptions {
  encodeTensor: TensorEncoder;
  /**
   * Source tensors to store combined, given the opened model, and the `eqz.source.format` that then describes
   * the source (default: none).
   */
  combine?: (model: ModelSource) => { tensors: CombinedTensor[]; sourceFormat: string } | undefined;
  alignment?: number;
  /** Extra metadata (quantization method and parameters). */
  metadata?: Metadata;
  producer: string;
  onProgress?: (progress: EncodeProgress) => void;
}

export interface TensorSummary {
  name: string;
  dtype: Dtype;
  shape: number[];
  encoding: Encoding;
  sourceBytes: number;
  storedBytes: number;
  stats?: Record<string, number | string>;
}

export interface EncodeSummary {
  tensors: TensorSummary[];
  params: number;
  sourceBytes: number;
  /** Size of the whole .eqz file (header, table, padding included). */
  fileBytes: number;
  seconds: number;
}

export async function encodeModel(input: string, output: string, options: EncodeModelOptions): Promise<EncodeSummary> {
  const started = performance.now();
  const model = await openModel(input);
  const writer = await EqzWriter.create(output, { alignment: options.alignment });
  const summaries: TensorSummary[] = [];
  try {
    const progress: EncodeProgress = {
      tensorsDone: 0, tensorsTotal: model.tensors.length, sourceBytesDone: 0,
      sourceBytesTotal: model.tensors.reduce((sum, t) => sum + t.byteLength, 0), storedBytes: 0, paramsDone: 0,
      paramsTotal: model.tensors.reduce((sum, t) => sum + numElements(t.shape), 0),
    };
    const combination = options.combine?.(model);
    const combined = combination?.tensors ?? [];
    const combinedAt = new Map(combined.map((c) => [c.parts[0]!.name, c]));
    const absorbed = new Set(combined.flatMap((c) => c.parts.slice(1).map((p) => p.name)));
    for (const tensor of model.tensors) {
      if (absorbed.has(tensor.name)) continue;
      const together = combinedAt.get(tensor.name);
      const target = together ?? tensor;
      const parts = together?.parts ?? [tensor];
      let encoded: EncodedTensor;
      try {
        const bytes = await Promise.all(parts.map((part) => model.readTensor(part)));
        encoded = together ? await together.encode(bytes) : await options.encodeTensor(tensor, bytes[0]!);
      } catch (error) {
        throw error instanceof EqzError ? error.locate({ tensor: target.name, file: tensor.file }) : error;
      }
      const sourceBytes = parts.reduce((sum, part) => sum + part.byteLength, 0);
      const entry = await writer.addTensor({ name: target.name, dtype: target.dtype, shape: target.shape, encoding: encoded.encoding, payload: encoded.payload });
      summaries.push({
        name: target.name, dtype: target.dtype, shape: target.shape, encoding: encoded.encoding,
        sourceBytes, storedBytes: entry.size, stats: encoded.stats,
      });
      progress.tensorsDone += parts.length;
      progress.sourceBytesDone += sourceBytes;
      progress.storedBytes += entry.size;
      progress.paramsDone += parts.reduce((sum, part) => sum + numElements(part.shape), 0);
      options.onProgress?.(progress);
    }
    const metadata: Metadata = new Map([
      [META.producer, metaString(options.producer)],
      [META.sourceFormat, metaString(combination?.sourceFormat ?? model.format)],
      [META.sourceFiles, metaString(JSON.stringify(model.files))],
    ]);
    for (const [path, contents] of model.smallFiles) metadata.set(META.filePrefix + path, metaBytes(contents));
    for (const [key, value] of options.metadata ?? []) metadata.set(key, value);
    const stats = Object.fromEntries(summaries.filter((s) => s.stats).map((s) => [s.name, s.stats]));
    if (Object.keys(stats).length > 0) metadata.set(META.stats, metaString(JSON.stringify(stats)));
    await writer.finish(metadata);
  } catch (error) {
    await writer.abort();
    throw error;
  } finally {
    await model.close();
  }
  return {
    tensors: summaries,
    params: summaries.reduce((sum, s) => sum + numElements(s.shape), 0),
    sourceBytes: summaries.reduce((sum, s) => sum + s.sourceBytes, 0),
    fileBytes: (await stat(output)).size,
    seconds: (performance.now() - started) / 1000,
  };
}
