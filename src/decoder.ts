/**
 * `eqz/decoder` — the embeddable decoder: parse an .eqz file from any byte source, list its tensors, decode one on
 * the CPU (WASM) or into a GPUBuffer on a GPUDevice the caller opened. No Node-only imports: it runs in browsers,
 * Node, Deno and workers alike. The GPU decoder (and its WGSL, embedded at build time) is loaded on first use, so
 * bundles that never decode on a GPU do not carry it.
 *
 * ```ts
 * import { openEqz } from 'eqz/decoder';
 * const file = await openEqz('https://example.com/model.eqz');   // HTTP range requests: only what is read is fetched
 * for (const t of file.tensors) console.log(t.name, t.shape, t.encoding);
 * const bytes = await file.decode('model.layers.0.mlp.up_proj.weight', { dtype: 'BF16' });
 * const onGpu = await file.decodeToGpu('model.layers.0.mlp.up_proj.weight', device, { dtype: 'BF16' });
 * // onGpu.buffer holds the BF16 elements at onGpu.offset .. onGpu.offset + onGpu.byteLength
 * ```
 */
import { EqzReader } from './container/reader.js';
import { blobSource, bufferSource, httpSource, type ByteSource } from './container/sources.js';
import type { Dtype } from './container/format.js';
import type { TensorEntry } from './container/table.js';
import { decodeTensor, type DecodeOptions } from './decode/tensor.js';
import { EqzError } from './errors.js';
import type { GpuDecoder } from './gpu/decode.js';
import type { DecodeShaderName } from './gpu/decode-shaders.js';

export { EqzReader } from './container/reader.js';
export { blobSource, bufferSource, httpSource, type ByteSource } from './container/sources.js';
export { decodePayload, decodeTensor, outputDtypeOf, type DecodeOptions, type OutputDtype } from './decode/tensor.js';
export type { Metadata, MetadataValue, TensorEntry } from './container/table.js';
export type { Dtype } from './container/format.js';
export { EqzError, type EqzErrorCode } from './errors.js';

/** A tensor decoded into GPU memory by {@link EqzFile.decodeToGpu}. */
export interface GpuDecodedTensor {
  name: string;
  /** Element dtype of the bytes (the output dtype). */
  dtype: Dtype;
  shape: readonly number[];
  /** A buffer of this tensor alone (usage STORAGE | COPY_SRC | COPY_DST); the caller owns it and destroys it. */
  buffer: GPUBuffer;
  /** Byte offset of the first element in `buffer` (a multiple of 256). */
  offset: number;
  byteLength: number;
  /** Copies the tensor's bytes (little-endian elements of `dtype`) back to the host. */
  readBack(): Promise<Uint8Array>;
}

/** An opened .eqz file: its tensors and a one-call decode. */
export interface EqzFile {
  reader: EqzReader;
  tensors: readonly TensorEntry[];
  /** Decodes the named tensor to little-endian bytes of its output dtype. */
  decode(name: string, options?: DecodeOptions): Promise<Uint8Array>;
  /**
   * Decodes the named tensor into a new GPUBuffer on `device`, bit-identical to {@link decode}. The first call on
   * a device loads the GPU decoder and compiles its pipelines. Open the device with the `subgroups` feature and the
   * adapter's `maxComputeWorkgroupStorageSize` where offered: the decoder then uses its faster kernels. Encodings
   * the GPU decoder does not handle reject with EqzError `UnknownEncoding` (decode those with {@link decode}).
   */
  decodeToGpu(name: string, device: GPUDevice, options?: DecodeOptions): Promise<GpuDecodedTensor>;
  close(): Promise<void>;
}

/** One GPU decoder per device: its pipelines are compiled once. */
const gpuDecoders = new WeakMap<GPUDevice, Promise<GpuDecoder>>();

function gpuDecoderFor(device: GPUDevice): Promise<GpuDecoder> {
  let decoder = gpuDecoders.get(device);
  if (!decoder) {
    decoder = (async () => {
      const [{ GpuDecoder }, { gpuContextOf }, { DECODE_WGSL }] = await Promise.all([
        import('./gpu/decode.js'), import('./gpu/context.js'), import('./gpu/decode-shaders-embedded.js'),
      ]);
      const shaderLoader = (name: DecodeShaderName): string => {
        const source = DECODE_WGSL[name];
        if (source === undefined) throw new Error(`the GPU decoder's shader ${name}.wgsl is not embedded in this build`);
        return source;
      };
      return GpuDecoder.create(gpuContextOf(device), { shaderLoader });
    })();
    decoder.catch(() => gpuDecoders.delete(device));
    gpuDecoders.set(device, decoder);
  }
  return decoder;
}

async function decodeToGpu(reader: EqzReader, entry: TensorEntry, device: GPUDevice, options: DecodeOptions): Promise<GpuDecodedTensor> {
  const [decoder, payload] = await Promise.all([gpuDecoderFor(device), reader.readPayload(entry)]);
  const [tensor] = await decoder.decodeToBuffers([
    { entry, payload, output: options.dtype ?? 'source', payloadOffset: reader.payloadOffset(entry) },
  ]);
  const { name, dtype, shape, buffer, offset, byteLength } = tensor!;
  return { name, dtype, shape, buffer, offset, byteLength, readBack: () => decoder.readBuffer(buffer, offset, byteLength) };
}

/** Opens an .eqz file from a URL (range requests), a Blob/File, bytes in memory, or any {@link ByteSource}. */
export async function openEqz(input: string | URL | Blob | ArrayBuffer | Uint8Array | ByteSource): Promise<EqzFile> {
  const source = typeof input === 'string' || input instanceof URL ? await httpSource(String(input))
    : typeof Blob !== 'undefined' && input instanceof Blob ? blobSource(input)
    : input instanceof ArrayBuffer || input instanceof Uint8Array ? bufferSource(input)
    : input as ByteSource;
  const reader = await EqzReader.open(source);
  const entryNamed = (name: string): TensorEntry => {
    const entry = reader.tensor(name);
    if (!entry) throw new EqzError('Malformed', `no tensor named "${name}"`);
    return entry;
  };
  return {
    reader,
    tensors: reader.tensors,
    decode: async (name, options) => decodeTensor(reader, entryNamed(name), options),
    decodeToGpu: async (name, device, options = {}) => decodeToGpu(reader, entryNamed(name), device, options),
    close: () => reader.close(),
  };
}
