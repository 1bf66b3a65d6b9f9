/**
 * Synthetic decode requests covering every GPU decode path (each encoding and output, partial rows and chunks,
 * stored and one-symbol streams, empty tensors), and a comparison of a {@link GpuDecoder}'s results with the CPU
 * reference. The tests run it on the software adapters; bench:gpu runs it on hardware adapters, whose fast
 * subgroup kernel CI never sees. Requires `await initCodec()`.
 */
import type { Dtype, Encoding } from '../container/format.js';
import type { TensorEntry } from '../container/table.js';
import { encodePlanes, encodeStream, type EncodeStreamOptions } from '../codec/index.js';
import { SeededRandom } from '../tensor/synthetic.js';
import type { GpuDecoder, GpuDecodeRequest } from './decode.js';
import { referenceDecode } from './decode-reference.js';

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
  ];
}

/** Index of the first byte where `a` and `b` differ, −1 when equal. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** A tensor whose GPU result differs from the CPU reference: where, or that its scales differ. */
export interface Mismatch {
  tensor: string;
  firstDifference: number;
  scales: boolean;
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
      let scales = false;
      if (expected.scales) {
        const gpuScales = await decoder.readScales(tensors[i]!);
        scales = firstDifference(new Uint8Array(gpuScales.buffer, gpuScales.byteOffset, gpuScales.byteLength), new Uint8Array(expected.scales.buffer)) >= 0;
      }
      if (difference >= 0 || scales) mismatches.push({ tensor: request.entry.name, firstDifference: difference, scales });
    }
  } finally {
    for (const buffer of new Set(tensors.map((tensor) => tensor.buffer))) buffer.destroy();
  }
  return mismatches;
}
