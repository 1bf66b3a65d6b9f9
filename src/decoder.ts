/**
 * `eqz/decoder` — the embeddable decoder: parse an .eqz file from any byte source, list its tensors, decode one on
 * the CPU. No Node-only imports: it runs in browsers, Node, Deno and workers alike.
 *
 * ```ts
 * import { openEqz } from 'eqz/decoder';
 * const file = await openEqz('https://example.com/model.eqz');   // HTTP range requests: only what is read is fetched
 * for (const t of file.tensors) console.log(t.name, t.shape, t.encoding);
 * const bytes = await file.decode('model.layers.0.mlp.up_proj.weight', { dtype: 'BF16' });
 * ```
 */
import { EqzReader } from './container/reader.js';
import { blobSource, bufferSource, httpSource, type ByteSource } from './container/sources.js';
import type { TensorEntry } from './container/table.js';
import { decodeTensor, type DecodeOptions } from './decode/tensor.js';
import { EqzError } from './errors.js';

export { EqzReader } from './container/reader.js';
export { blobSource, bufferSource, httpSource, type ByteSource } from './container/sources.js';
export { decodePayload, decodeTensor, outputDtypeOf, type DecodeOptions, type OutputDtype } from './decode/tensor.js';
export type { Metadata, MetadataValue, TensorEntry } from './container/table.js';
export { EqzError, type EqzErrorCode } from './errors.js';

/** An opened .eqz file: its tensors and a one-call decode. */
export interface EqzFile {
  reader: EqzReader;
  tensors: readonly TensorEntry[];
  /** Decodes the named tensor to little-endian bytes of its output dtype. */
  decode(name: string, options?: DecodeOptions): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** Opens an .eqz file from a URL (range requests), a Blob/File, bytes in memory, or any {@link ByteSource}. */
export async function openEqz(input: string | URL | Blob | ArrayBuffer | Uint8Array | ByteSource): Promise<EqzFile> {
  const source = typeof input === 'string' || input instanceof URL ? await httpSource(String(input))
    : typeof Blob !== 'undefined' && input instanceof Blob ? blobSource(input)
    : input instanceof ArrayBuffer || input instanceof Uint8Array ? bufferSource(input)
    : input as ByteSource;
  const reader = await EqzReader.open(source);
  return {
    reader,
    tensors: reader.tensors,
    decode: (name, options) => {
      const entry = reader.tensor(name);
      if (!entry) return Promise.reject(new EqzError('Malformed', `no tensor named "${name}"`));
      return decodeTensor(reader, entry, options);
    },
    close: () => reader.close(),
  };
}
