/**
 * Synthetic decode requests covering every GPU decode path (each encoding and output, partial rows and chunks,
 * stored and one-symbol streams, empty tensors), and a comparison of a {@link GpuDecoder}'s results with the CPU
 * reference. The tests run it on the software adapters; bench:gpu runs it on hardware adapters, whose fast
 * subgroup kernel CI never sees. Requires `await initCodec()`.
 */
import type { Dtype, Encoding } from '../container/format.js';
import type { TensorEntry } from '../container/table.js';
import { encodePlanes, encodeStream, type EncodeStreamOptions } from '../codec/index.js';
import { NVFP4_BLOCK, unpackCodes } from '../nvfp4/e2m1.js';
import { NVFP4_PAYLOAD_HEADER_BYTES, type CodePacking, type Nvfp4Tensor } from '../nvfp4/payload.js';
import { SeededRandom } from '../tensor/synthetic.js';
import type { GpuDecoder, GpuDecodeRequest, GpuTensor } from './decode.js';
import { referenceDecode, type ReferenceOutput } from './decode-reference.js';

/** A table entry for a synthetic tensor (offset, size and checksum do not matter to the decoders). */
export function syntheticEntry(name: string, dtype: Dtype, encoding: Encoding, shape: number[]): TensorEntry {
  return { name, dtype, encoding, shape, offset: 0, size: 0, checksum: 0 };
}

/** E4M3 codes shaped like quantized weights: mostly small magnitudes, both signs, never the NaN codes. */
export function e4m3Codes(count: number, seed: number, spread = 12): Uint8Array {
  const random = new SeededRandom(seed);
  const out = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const magnitude = Math.min(0x7e, Math.floor(-Math.log(1 - random.next()) * spread));
    out[i] = magnitude | (random.next() < 0.5 ? 0x80 : 0);
  }
  return out;
}

/** Int8 codes (two's complement bytes) of a rounded normal with standard deviation 20. */
export function int8Codes(count: number, seed: number): Uint8Array {
  const random = new SeededRandom(seed);
  return Uint8Array.from({ length: count }, () => Math.max(-128, Math.min(127, Math.round(random.normal() * 20))) & 0xff);
}

/** Row scales spread log-uniformly over [low, high], exact in f32. */
export function rowScales(rows: number, seed: number, low = 2 ** -12, high = 2 ** -4): Float32Array {
  const random = new SeededRandom(seed);
  return Float32Array.from({ length: rows }, () => Math.fround(low * (high / low) ** random.next()));
}

/**
 * Little-endian elements of `width` bytes with random bits (NaNs, infinities and subnormals included), the
 * top byte's exponent bits skewed so that an exponent plane codes with rANS rather than being stored.
 */
export function randomElements(count: number, width: number, seed: number): Uint8Array {
  const random = new SeededRandom(seed);
  const out = new Uint8Array(count * width);
  for (let i = 0; i < out.length; i++) out[i] = random.nextU32() & 0xff;
  if (width > 1) for (let i = width - 1; i < out.length; i += width) out[i] = (out[i]! & 0x80) | (0x3c + (random.nextU32() % 4));
  return out;
}

/** An fp8-e4m3 / int8 payload (spec §"2 fp8-e4m3 and 3 int8"): F32 scales, then the codes as a coded stream. */
export function quantizedPayload(codes: Uint8Array, scales: Float32Array, options: EncodeStreamOptions = {}): Uint8Array {
  const stream = encodeStream(codes, options);
  const head = 8 + 4 * scales.length;
  const out = new Uint8Array(head + stream.length);
  const view = new DataView(out.buffer);
  scales.forEach((scale, row) => view.setFloat32(8 + 4 * row, scale, true));
  out.set(stream, head);
  return out;
}

/** A request for an fp8-e4m3 / int8 tensor of `shape` holding `codes`. */
export function quantizedRequest(
  name: string, encoding: 'fp8-e4m3' | 'int8', dtype: Dtype, shape: number[], codes: Uint8Array,
  output: GpuDecodeRequest['output'] = 'source', options: EncodeStreamOptions = {},
  scales = rowScales(shape[0]!, codes.length + 7),
): GpuDecodeRequest {
  return { entry: syntheticEntry(name, dtype, encoding, shape), payload: quantizedPayload(codes, scales, options), output };
}

/** A request for a planes tensor of `count` random elements of `dtype`. */
export function planesRequest(name: string, dtype: Dtype, count: number, seed: number, output?: GpuDecodeRequest['output']): GpuDecodeRequest {
  const width = dtype === 'F32' || dtype === 'I32' || dtype === 'U32' ? 4 : dtype === 'U8' || dtype === 'I8' ? 1 : 2;
  return { entry: syntheticEntry(name, dtype, 'planes', [count]), payload: encodePlanes(randomElements(count, width, seed), dtype), output };
}

/** The E4M3 block scales of {@link randomNvfp4}: what absmax writes, and the values it never does. */
const SPECIAL_BLOCK_SCALES = [0x00, 0x80, 0x01, 0x81, 0x7e, 0xfe];

/**
 * A random [rows, cols] NVFP4 tensor: E2M1 codes skewed to small magnitudes, both signs, −0 included; block
 * scales mostly in [2^-6, 2^3] and positive, one block in eight zero, negative, subnormal or the largest (±448);
 * the global scale as given.
 */
export function randomNvfp4(rows: number, cols: number, seed: number, globalScale = 2 ** -5): Nvfp4Tensor {
  const random = new SeededRandom(seed);
  const codes = new Uint8Array(rows * cols);
  for (let i = 0; i < codes.length; i++) {
    codes[i] = Math.min(7, Math.floor(-Math.log(1 - random.next()) * 1.5)) | (random.next() < 0.5 ? 8 : 0);
  }
  const blockScales = new Uint8Array((rows * cols) / NVFP4_BLOCK);
  for (let block = 0; block < blockScales.length; block++) {
    blockScales[block] = random.next() < 0.125
      ? SPECIAL_BLOCK_SCALES[random.nextU32() % SPECIAL_BLOCK_SCALES.length]!
      : 0x18 + (random.nextU32() % 72);
  }
  const packed = new Uint8Array((rows * cols) / 2);
  for (let j = 0; j < packed.length; j++) packed[j] = codes[2 * j]! | (codes[2 * j + 1]! << 4);
  return { packed, blockScales, globalScale, rows, cols };
}

/**
 * An nvfp4 payload (spec §7.6) of `tensor` with its streams coded as asked: what encodeNvfp4Payload writes for
 * the same packing with default options, but with control over chunk sizes and stored streams.
 */
export function nvfp4Payload(
  tensor: Nvfp4Tensor, packing: CodePacking, scaleOptions: EncodeStreamOptions = {}, codeOptions: EncodeStreamOptions = {},
): Uint8Array {
  const scales = encodeStream(tensor.blockScales, { ...scaleOptions, symbolBits: 8 });
  const codes = packing === 'byte'
    ? encodeStream(tensor.packed, { ...codeOptions, symbolBits: 8 })
    : encodeStream(unpackCodes(tensor.packed), { ...codeOptions, symbolBits: 4 });
  const payload = new Uint8Array(NVFP4_PAYLOAD_HEADER_BYTES + scales.length + codes.length);
  new DataView(payload.buffer).setFloat32(0, tensor.globalScale, true);
  payload[4] = packing === 'byte' ? 1 : 0;
  payload.set(scales, NVFP4_PAYLOAD_HEADER_BYTES);
  payload.set(codes, NVFP4_PAYLOAD_HEADER_BYTES + scales.length);
  return payload;
}

/** A request for an nvfp4 tensor of `dtype` holding `tensor`, coded as {@link nvfp4Payload} does. */
export function nvfp4Request(
  name: string, dtype: Dtype, tensor: Nvfp4Tensor, packing: CodePacking, output: GpuDecodeRequest['output'] = 'source',
  scaleOptions: EncodeStreamOptions = {}, codeOptions: EncodeStreamOptions = {},
): GpuDecodeRequest {
  return {
    entry: syntheticEntry(name, dtype, 'nvfp4', [tensor.rows, tensor.cols]),
    payload: nvfp4Payload(tensor, packing, scaleOptions, codeOptions),
    output,
  };
}

/**
 * One request of every nvfp4 path: nibble and byte code streams (rANS in several chunks, stored, one symbol) to
 * each float output and as codes, block scales coded and stored, extreme global scales.
 */
export function nvfp4SelfCheckRequests(): GpuDecodeRequest[] {
  const chunked = { chunkLog2: 12 };
  const tensor = randomNvfp4(24, 1024, 40);
  const zeros: Nvfp4Tensor = { ...tensor, packed: new Uint8Array(tensor.packed.length), blockScales: new Uint8Array(tensor.blockScales.length) };
  return [
    nvfp4Request('nvfp4-nibble-bf16', 'BF16', tensor, 'nibble', 'source', chunked, chunked),
    nvfp4Request('nvfp4-nibble-f16', 'BF16', tensor, 'nibble', 'F16', {}, chunked),
    nvfp4Request('nvfp4-nibble-f32', 'F16', tensor, 'nibble', 'F32', chunked, chunked),
    nvfp4Request('nvfp4-byte-bf16', 'F32', tensor, 'byte', 'BF16', chunked, chunked),
    nvfp4Request('nvfp4-byte-f16', 'F16', tensor, 'byte', 'source', chunked, chunked),
    nvfp4Request('nvfp4-byte-f32', 'BF16', tensor, 'byte', 'F32', {}, chunked),
    nvfp4Request('nvfp4-nibble-codes', 'BF16', tensor, 'nibble', 'codes', chunked, chunked),
    nvfp4Request('nvfp4-byte-codes', 'BF16', tensor, 'byte', 'codes', chunked, chunked),
    // F16 overflows to ±Inf (m = 2^32) and underflows to ±0 (m = 2^-32); stored streams; all-zero blocks.
    nvfp4Request('nvfp4-stored-f16-huge', 'F16', randomNvfp4(5, 176, 41, 2 ** -32), 'nibble', 'source', { mode: 'stored' }, { mode: 'stored' }),
    nvfp4Request('nvfp4-stored-f16-tiny', 'F16', randomNvfp4(5, 176, 42, 2 ** 32), 'byte', 'source', {}, { mode: 'stored' }),
    nvfp4Request('nvfp4-stored-codes', 'BF16', randomNvfp4(3, 48, 43), 'nibble', 'codes', { mode: 'stored' }, { mode: 'stored' }),
    nvfp4Request('nvfp4-zeros', 'BF16', zeros, 'nibble', 'source', { mode: 'rans' }, { mode: 'rans' }),
  ];
}

/** One request of every path, small enough for a software adapter. */
export function selfCheckRequests(): GpuDecodeRequest[] {
  const chunked = { chunkLog2: 12 };
  const codes = e4m3Codes(48_000, 1);
  return [
    quantizedRequest('fp8-bf16', 'fp8-e4m3', 'BF16', [48, 1000], codes, 'source', chunked),
    quantizedRequest('fp8-f16', 'fp8-e4m3', 'BF16', [48, 1000], codes, 'F16', chunked),
    quantizedRequest('fp8-f32', 'fp8-e4m3', 'F32', [48, 1000], codes, 'source', chunked),
    quantizedRequest('fp8-codes', 'fp8-e4m3', 'BF16', [48, 1000], codes, 'codes', chunked),
    quantizedRequest('fp8-f16-subnormal', 'fp8-e4m3', 'F16', [1, 4129], e4m3Codes(4129, 2, 20), 'source', {}, Float32Array.of(2 ** -20)),
    quantizedRequest('fp8-f16-overflow', 'fp8-e4m3', 'F16', [1, 4129], e4m3Codes(4129, 2, 20), 'source', {}, Float32Array.of(2 ** 10)),
    quantizedRequest('int8-short-rows', 'int8', 'BF16', [1121, 11], int8Codes(1121 * 11, 4), 'source', chunked),
    quantizedRequest('int8-codes', 'int8', 'F32', [12331, 1], int8Codes(12331, 6), 'codes', chunked),
    // About 8 bits a symbol, forced to rANS: half the lanes take a word each row, the window slides every row or two.
    quantizedRequest('int8-uniform', 'int8', 'BF16', [64, 1000], randomElements(64_000, 1, 5), 'source', { mode: 'rans', chunkLog2: 12 }),
    quantizedRequest('one-symbol', 'fp8-e4m3', 'BF16', [1, 1], Uint8Array.of(0xb8), 'source', { mode: 'rans' }),
    quantizedRequest('constant', 'fp8-e4m3', 'F32', [50, 100], new Uint8Array(5000).fill(0x38), 'source', { mode: 'rans' }),
    quantizedRequest('stored', 'fp8-e4m3', 'BF16', [70, 1001], e4m3Codes(70_070, 7), 'source', { mode: 'stored' }),
    quantizedRequest('empty', 'fp8-e4m3', 'BF16', [0, 64], new Uint8Array(0), 'source'),
    planesRequest('planes-bf16', 'BF16', 20_011, 10),
    planesRequest('planes-f32', 'F32', 7_001, 12),
    planesRequest('planes-u8', 'U8', 5_003, 13),
    planesRequest('planes-f16-to-f32', 'F16', 9_000, 15, 'F32'),
    planesRequest('planes-f32-to-bf16', 'F32', 4_099, 16, 'BF16'),
    { entry: syntheticEntry('raw-f16-to-f32', 'F16', 'raw', [3, 5]), payload: randomElements(15, 2, 19), output: 'F32' },
    ...nvfp4SelfCheckRequests(),
  ];
}

/** Index of the first byte where `a` and `b` differ, −1 when equal. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** A tensor whose GPU result differs from the CPU reference: where, or that its scales (row, block or global) differ. */
export interface Mismatch {
  tensor: string;
  firstDifference: number;
  scales: boolean;
}

/** Whether a `codes` output's scales on the GPU differ from the reference's. */
async function scalesDiffer(decoder: GpuDecoder, tensor: GpuTensor, expected: ReferenceOutput): Promise<boolean> {
  if (expected.scales) {
    const gpuScales = await decoder.readScales(tensor);
    return firstDifference(new Uint8Array(gpuScales.buffer, gpuScales.byteOffset, gpuScales.byteLength), new Uint8Array(expected.scales.buffer)) >= 0;
  }
  if (expected.blockScales) {
    const blockScales = await decoder.readBuffer(tensor.buffer, tensor.blockScales!.offset, tensor.blockScales!.count);
    const globalScale = await decoder.readBuffer(tensor.buffer, tensor.globalScale!.offset, 4);
    return firstDifference(blockScales, expected.blockScales) >= 0
      || new DataView(globalScale.buffer, globalScale.byteOffset).getFloat32(0, true) !== expected.globalScale
      || tensor.globalScale!.value !== expected.globalScale;
  }
  return false;
}

/** Decodes `requests` on the GPU and compares each with the CPU reference; returns the mismatches (none: pass). */
export async function compareWithCpu(decoder: GpuDecoder, requests: readonly GpuDecodeRequest[]): Promise<Mismatch[]> {
  const tensors = await decoder.decodeToBuffers(requests);
  const mismatches: Mismatch[] = [];
  try {
    for (const [i, request] of requests.entries()) {
      const expected = referenceDecode(request);
      const actual = await decoder.readBack(tensors[i]!);
      const difference = firstDifference(actual, expected.bytes);
      const scales = await scalesDiffer(decoder, tensors[i]!, expected);
      if (difference >= 0 || scales) mismatches.push({ tensor: request.entry.name, firstDifference: difference, scales });
    }
  } finally {
    for (const buffer of new Set(tensors.map((tensor) => tensor.buffer))) buffer.destroy();
  }
  return mismatches;
}
