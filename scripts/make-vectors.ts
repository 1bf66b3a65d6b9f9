/**
 * Generates the conformance vectors in spec/vectors/ (spec §"Conformance vectors"): valid files with the sha256 of
 * every decoded tensor, and invalid files with the error class a decoder must report. Deterministic: the test
 * suite regenerates them and checks the committed files are identical.
 *
 *   node dist/scripts/make-vectors.js [outDir]      (default spec/vectors)
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { EqzWriter } from '../src/container/writer.js';
import { EqzReader } from '../src/container/reader.js';
import { bufferSource } from '../src/container/sources.js';
import { ValueType, type Dtype, type Encoding } from '../src/container/format.js';
import { encodeHeader, encodeTable, metaBytes, metaString, parseHeader, parseTable, type Metadata, type TensorEntry } from '../src/container/table.js';
import { decodeTensor } from '../src/decode/tensor.js';
import { xxh32 } from '../src/codec/xxh32.js';
import { encodePlanes, initCodec } from '../src/codec/index.js';
import { encodeScaledPayload } from '../src/encodings/scaled.js';
import { encodeNvfp4Payload } from '../src/nvfp4/payload.js';
import { syntheticWeights } from '../src/tensor/synthetic.js';
import { fromFloat32 } from '../src/tensor/dtype.js';

export interface VectorTensor { name: string; dtype: Dtype; shape: number[]; encoding: Encoding; sha256: string }
export interface Manifest {
  version: 1;
  valid: { file: string; description: string; tensors: VectorTensor[] }[];
  invalid: { file: string; error: string; description: string }[];
}

/** Deterministic pseudo-random bytes (xorshift32) so vectors never change between runs. */
function seededBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    state ^= state << 13; state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5; state >>>= 0;
    out[i] = state & 0xff;
  }
  return out;
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

interface SourceTensor { name: string; dtype: Dtype; shape: number[]; encoding: Encoding; payload: Uint8Array }

function rawTensors(): SourceTensor[] {
  const f32 = new Float32Array([0, -0, 1, -1.5, 3.4028234663852886e38, 1e-45, Infinity, NaN, 0.1, -2.75, 6, 448]);
  return [
    { name: 'model.f32', dtype: 'F32', shape: [3, 4], encoding: 'raw', payload: new Uint8Array(f32.buffer) },
    { name: 'model.bf16', dtype: 'BF16', shape: [2, 5], encoding: 'raw', payload: seededBytes(20, 1) },
    { name: 'model.f16', dtype: 'F16', shape: [7], encoding: 'raw', payload: seededBytes(14, 2) },
    { name: 'model.fp8', dtype: 'F8_E4M3', shape: [2, 2, 2], encoding: 'raw', payload: seededBytes(8, 3) },
    { name: 'model.i64', dtype: 'I64', shape: [3], encoding: 'raw', payload: seededBytes(24, 4) },
    { name: 'model.bool', dtype: 'BOOL', shape: [3], encoding: 'raw', payload: Uint8Array.of(0, 1, 1) },
    { name: 'model.scalar', dtype: 'F64', shape: [], encoding: 'raw', payload: seededBytes(8, 5) },
    { name: 'model.empty', dtype: 'BF16', shape: [0, 16], encoding: 'raw', payload: new Uint8Array() },
  ];
}

/** Skewed bytes (a geometric-like distribution over a few symbols), so rANS beats stored mode. */
function skewedBytes(length: number, seed: number): Uint8Array {
  const uniform = seededBytes(length, seed);
  return uniform.map((u) => (u < 128 ? 0 : u < 192 ? 1 : u < 224 ? 2 : u < 240 ? 3 : u & 0x0f));
}

/** Per-row absmax E4M3/INT8 codes of a seeded matrix: a deterministic stand-in for any quantizer's output. */
function scaledTensor(encoding: 'fp8-e4m3' | 'int8', rows: number, cols: number, seed: number): { payload: Uint8Array; scales: Float32Array } {
  const weights = syntheticWeights(rows, cols, { seed });
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows);
  const limit = encoding === 'fp8-e4m3' ? 448 : 127;
  for (let r = 0; r < rows; r++) {
    let max = 0;
    for (let c = 0; c < cols; c++) max = Math.max(max, Math.abs(weights[r * cols + c]!));
    // Scales are powers of two here so that the test data needs no rounding rule of its own.
    scales[r] = 2 ** Math.ceil(Math.log2(max / limit));
    for (let c = 0; c < cols; c++) {
      const x = weights[r * cols + c]! / scales[r]!;
      codes[r * cols + c] = encoding === 'int8' ? Math.round(x) & 0xff : e4m3Nearest(x);
    }
  }
  const parts = encodeScaledPayload(codes, scales, 'BF16');
  return { payload: concat(parts), scales };
}

/** The E4M3 code nearest x (|x| ≤ 448; ties to the even code), by search over the table. */
function e4m3Nearest(x: number): number {
  let best = 0;
  for (let code = 0; code < 0x7f; code++) {
    const value = fp8Magnitudes[code]!;
    const distance = Math.abs(Math.abs(x) - value);
    const bestDistance = Math.abs(Math.abs(x) - fp8Magnitudes[best]!);
    if (distance < bestDistance || (distance === bestDistance && (code & 1) === 0)) best = code;
  }
  return best === 0 ? 0 : best | (x < 0 ? 0x80 : 0);
}
const fp8Magnitudes = Float32Array.from({ length: 128 }, (_, code) => {
  const e = code >> 3;
  const m = code & 7;
  return e === 0 ? (m / 8) * 2 ** -6 : (1 + m / 8) * 2 ** (e - 7);
});

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const part of parts) { out.set(part, at); at += part.length; }
  return out;
}

function nvfp4Tensor(rows: number, cols: number, seed: number, codePacking: 'nibble' | 'byte'): Uint8Array {
  const codes = skewedBytes(rows * cols, seed).map((b, i) => (b & 0x7) | ((i * 7) % 5 === 0 ? 8 : 0));
  const packed = new Uint8Array((rows * cols) / 2);
  for (let j = 0; j < packed.length; j++) packed[j] = codes[2 * j]! | (codes[2 * j + 1]! << 4);
  const blockScales = seededBytes((rows * cols) / 16, seed + 1).map((b) => 0x30 + (b & 0x0f));
  return encodeNvfp4Payload({ packed, blockScales, globalScale: Math.fround(2688 / 0.37), rows, cols }, { codePacking });
}

/** One tensor of every lossy/lossless coded encoding, each with rANS-coded and stored streams. */
function encodedTensors(): SourceTensor[] {
  const bf16 = fromFloat32(syntheticWeights(48, 64, { seed: 11 }), 'BF16');
  const f16 = fromFloat32(syntheticWeights(16, 40, { seed: 12 }), 'F16');
  const f32 = new Uint8Array(syntheticWeights(33, 31, { seed: 13 }).buffer);
  const fp8 = skewedBytes(5000, 14);
  return [
    { name: 'planes.bf16', dtype: 'BF16', shape: [48, 64], encoding: 'planes', payload: encodePlanes(bf16, 'BF16') },
    { name: 'planes.f16', dtype: 'F16', shape: [16, 40], encoding: 'planes', payload: encodePlanes(f16, 'F16') },
    { name: 'planes.f32', dtype: 'F32', shape: [33, 31], encoding: 'planes', payload: encodePlanes(f32, 'F32') },
    { name: 'planes.fp8', dtype: 'F8_E4M3', shape: [5000], encoding: 'planes', payload: encodePlanes(fp8, 'F8_E4M3') },
    { name: 'fp8.weight', dtype: 'BF16', shape: [40, 96], encoding: 'fp8-e4m3', payload: scaledTensor('fp8-e4m3', 40, 96, 15).payload },
    { name: 'int8.weight', dtype: 'F32', shape: [24, 2, 20], encoding: 'int8', payload: scaledTensor('int8', 24, 40, 16).payload },
    { name: 'nvfp4.nibble', dtype: 'BF16', shape: [32, 64], encoding: 'nvfp4', payload: nvfp4Tensor(32, 64, 17, 'nibble') },
    { name: 'nvfp4.byte', dtype: 'F16', shape: [16, 48], encoding: 'nvfp4', payload: nvfp4Tensor(16, 48, 18, 'byte') },
  ];
}

function rawMetadata(): Metadata {
  return new Map<string, Metadata extends Map<string, infer V> ? V : never>([
    ['eqz.producer', metaString('eqz conformance vectors')],
    ['eqz.source.format', metaString('safetensors')],
    ['eqz.file.config.json', metaBytes(new TextEncoder().encode('{"model_type": "test"}\n'))],
    ['test.u8', { type: ValueType.U8, value: 200 }],
    ['test.i8', { type: ValueType.I8, value: -100 }],
    ['test.u16', { type: ValueType.U16, value: 65000 }],
    ['test.i16', { type: ValueType.I16, value: -30000 }],
    ['test.u32', { type: ValueType.U32, value: 4000000000 }],
    ['test.i32', { type: ValueType.I32, value: -2000000000 }],
    ['test.f32', { type: ValueType.F32, value: 0.5 }],
    ['test.bool', { type: ValueType.BOOL, value: true }],
    ['test.u64', { type: ValueType.U64, value: 2n ** 63n + 1n }],
    ['test.i64', { type: ValueType.I64, value: -(2n ** 62n) }],
    ['test.f64', { type: ValueType.F64, value: -1.25 }],
    ['test.utf8', { type: ValueType.STRING, value: 'Grüße, 世界' }],
    ['test.array.i32', { type: ValueType.ARRAY, elementType: ValueType.I32, value: [1, -2, 3] }],
    ['test.array.string', { type: ValueType.ARRAY, elementType: ValueType.STRING, value: ['a', '', 'ccc'] }],
    ['test.array.empty', { type: ValueType.ARRAY, elementType: ValueType.F64, value: [] }],
  ]);
}

async function writeVector(path: string, tensors: SourceTensor[], metadata: Metadata, alignment: number): Promise<void> {
  const writer = await EqzWriter.create(path, { alignment });
  for (const t of tensors) await writer.addTensor({ name: t.name, dtype: t.dtype, shape: t.shape, encoding: t.encoding, payload: t.payload });
  await writer.finish(metadata);
}

/** Decodes every tensor of a vector with this implementation: the manifest's expected hashes. */
async function describeValid(bytes: Uint8Array): Promise<VectorTensor[]> {
  const reader = await EqzReader.open(bufferSource(bytes));
  const out: VectorTensor[] = [];
  for (const entry of reader.tensors) {
    out.push({ name: entry.name, dtype: entry.dtype, shape: entry.shape, encoding: entry.encoding, sha256: sha256(await decodeTensor(reader, entry)) });
  }
  return out;
}

/** Rewrites the table through `edit` and fixes both checksums, so that only the structural rule is violated. */
function withTable(file: Uint8Array, edit: (tensors: TensorEntry[], table: Uint8Array) => Uint8Array | void): Uint8Array {
  const header = parseHeader(file, file.length);
  const tableBytes = file.subarray(header.tableOffset, header.tableOffset + header.tableSize);
  const table = parseTable(tableBytes, header);
  let encoded = encodeTable(table);
  encoded = edit(table.tensors, encoded) ?? encodeTable(table);
  const out = new Uint8Array(header.tableOffset + encoded.length);
  out.set(file.subarray(0, header.tableOffset));
  out.set(encoded, header.tableOffset);
  out.set(encodeHeader({ ...header, tableSize: encoded.length, tableChecksum: xxh32(encoded) }));
  return out;
}

/** Position of a u32 field of the named tensor's entry in an encoded table (0 = dtype, 1 = encoding, 2 = rank). */
function entryField(table: Uint8Array, name: string, field: number): number {
  const nameBytes = new TextEncoder().encode(name);
  for (let i = 0; i + 8 + nameBytes.length <= table.length; i++) {
    if (table[i] === nameBytes.length && table.subarray(i + 8, i + 8 + nameBytes.length).every((b, k) => b === nameBytes[k])) {
      return i + 8 + nameBytes.length + 4 * field;
    }
  }
  throw new Error(`tensor ${name} not found in table`);
}

function setU32(bytes: Uint8Array, at: number, value: number): Uint8Array {
  new DataView(bytes.buffer, bytes.byteOffset).setUint32(at, value, true);
  return bytes;
}

/** Offset (in the payload) of the first lane state of the rANS stream at `streamAt`. */
function findStates(payload: Uint8Array, streamAt: number): number {
  if (payload[streamAt] !== 1) throw new Error('vector generator: expected a rANS stream');
  const alphabet = 1 << payload[streamAt + 1]!;
  let at = streamAt + 24;
  const bitmap = payload.subarray(at, at + alphabet / 8);
  at += alphabet / 8;
  for (let symbol = 0; symbol < alphabet; symbol++) {
    if (bitmap[symbol >> 3]! & (1 << (symbol & 7))) at += payload[at]! & 0x80 ? 2 : 1;
  }
  return streamAt + Math.ceil((at - streamAt) / 4) * 4;
}

function payloadOf(file: Uint8Array, header: { dataOffset: number }, tensors: readonly TensorEntry[], name: string): Uint8Array {
  const entry = tensors.find((t) => t.name === name)!;
  return file.subarray(header.dataOffset + entry.offset, header.dataOffset + entry.offset + entry.size);
}

/** The file with one payload replaced by `payload`, placed after the data section (entry and checksums updated). */
function replacePayload(file: Uint8Array, header: { dataOffset: number; dataSize: number; tableOffset: number; alignment: number }, tensors: readonly TensorEntry[], name: string, payload: Uint8Array): Uint8Array {
  const offset = Math.ceil(header.dataSize / header.alignment) * header.alignment;
  const dataSize = offset + payload.length;
  const out = new Uint8Array(header.dataOffset + dataSize);
  out.set(file.subarray(0, header.dataOffset + header.dataSize));
  out.set(payload, header.dataOffset + offset);
  const entries = tensors.map((t) => (t.name === name ? { ...t, offset, size: payload.length, checksum: xxh32(payload) } : t));
  const parsed = parseHeader(file, file.length);
  const table = encodeTable({ metadata: parseTable(file.subarray(parsed.tableOffset), parsed).metadata, tensors: entries });
  const result = new Uint8Array(out.length + table.length);
  result.set(out);
  result.set(table, out.length);
  result.set(encodeHeader({ ...parsed, dataSize, tableOffset: out.length, tableSize: table.length, tableChecksum: xxh32(table) }));
  return result;
}

export async function generateVectors(outDir: string): Promise<Manifest> {
  await mkdir(join(outDir, 'valid'), { recursive: true });
  await mkdir(join(outDir, 'invalid'), { recursive: true });
  const manifest: Manifest = { version: 1, valid: [], invalid: [] };

  const rawPath = join(outDir, 'valid/raw-basic.eqz');
  await writeVector(rawPath, rawTensors(), rawMetadata(), 64);
  const raw = new Uint8Array(await readFile(rawPath));
  manifest.valid.push({ file: 'valid/raw-basic.eqz', description: 'raw encoding: every float width, integers, bool, a scalar, an empty tensor; every metadata type', tensors: await describeValid(raw) });

  await initCodec();
  const codedPath = join(outDir, 'valid/encodings.eqz');
  await writeVector(codedPath, encodedTensors(), new Map([['eqz.producer', metaString('eqz conformance vectors')]]), 256);
  const coded = new Uint8Array(await readFile(codedPath));
  manifest.valid.push({ file: 'valid/encodings.eqz', description: 'planes (BF16, F16, F32, FP8), fp8-e4m3 (BF16 scales), int8 (rank 3), nvfp4 with nibble and byte code packing', tensors: await describeValid(coded) });

  const header = parseHeader(raw, raw.length);
  const flip = (at: number): Uint8Array => { const copy = raw.slice(); copy[at]! ^= 0x01; return copy; };
  const invalid: [string, string, string, Uint8Array][] = [
    ['bad-magic.eqz', 'BadMagic', 'first magic byte changed', flip(0)],
    ['unsupported-version.eqz', 'UnsupportedVersion', 'version 2 with a valid header checksum', (() => {
      const copy = raw.slice();
      copy.set(encodeHeader({ ...header, version: 2 }));
      return copy;
    })()],
    ['truncated.eqz', 'Truncated', 'the last 16 bytes of the table missing', raw.slice(0, raw.length - 16)],
    ['header-checksum.eqz', 'ChecksumMismatch', 'a bit of data_size flipped, header checksum not updated', flip(32)],
    ['table-checksum.eqz', 'ChecksumMismatch', 'a bit flipped inside the table', flip(header.tableOffset + 20)],
    ['payload-checksum.eqz', 'ChecksumMismatch', 'a bit flipped inside the payload of model.f32', flip(header.dataOffset + 3)],
    ['trailing-bytes.eqz', 'Malformed', 'four bytes after the table', (() => { const copy = new Uint8Array(raw.length + 4); copy.set(raw); return copy; })()],
    ['offset-past-end.eqz', 'OutOfBounds', 'model.f32 payload offset beyond the data section', withTable(raw, (tensors) => { tensors[0]!.offset = header.dataSize + 64; })],
    ['overlapping-payloads.eqz', 'Malformed', 'model.bf16 payload overlaps model.f32', withTable(raw, (tensors) => { tensors[1]!.offset = tensors[0]!.offset; })],
    ['element-overflow.eqz', 'LimitExceeded', 'shape [2^40, 2^40] overflows the element limit', withTable(raw, (tensors) => { tensors[0]!.shape = [2 ** 40, 2 ** 40]; })],
    ['rank-too-large.eqz', 'LimitExceeded', 'rank 9', withTable(raw, (tensors) => { tensors[0]!.shape = Array(9).fill(1); })],
    ['unknown-encoding.eqz', 'UnknownEncoding', 'encoding code 200 on model.f32', withTable(raw, (_, table) => setU32(table, entryField(table, 'model.f32', 1), 200))],
    ['unknown-dtype.eqz', 'UnsupportedDtype', 'dtype code 99 on model.f32', withTable(raw, (_, table) => setU32(table, entryField(table, 'model.f32', 0), 99))],
    ['raw-size-mismatch.eqz', 'Malformed', 'model.f32 declares shape [3, 5] but holds 48 bytes', withTable(raw, (tensors) => { tensors[0]!.shape = [3, 5]; })],
  ];
  const codedHeader = parseHeader(coded, coded.length);
  const codedTable = parseTable(coded.subarray(codedHeader.tableOffset), codedHeader);
  /** The coded vector with one tensor's payload changed and its checksum fixed, so the payload check passes. */
  const withPayload = (name: string, mutate: (payload: Uint8Array, entry: TensorEntry) => void): Uint8Array => {
    const copy = coded.slice();
    const entry = codedTable.tensors.find((t) => t.name === name)!;
    const payload = copy.subarray(codedHeader.dataOffset + entry.offset, codedHeader.dataOffset + entry.offset + entry.size);
    mutate(payload, entry);
    return withTable(copy, (tensors) => { tensors.find((t) => t.name === name)!.checksum = xxh32(payload); });
  };
  const u32At = (payload: Uint8Array, at: number) => new DataView(payload.buffer, payload.byteOffset).getUint32(at, true);
  invalid.push(
    ['planes-plane-count.eqz', 'Malformed', 'planes.bf16 declares 3 planes', withPayload('planes.bf16', (p) => { p[0] = 3; })],
    ['planes-f64.eqz', 'UnsupportedDtype', 'planes.f32 entry relabelled F64 (width 8 has no planes)', withTable(coded, (_, table) => setU32(table, entryField(table, 'planes.f32', 0), 3))],
    ['rans-corrupt-state.eqz', 'CorruptStream', 'planes.bf16 exponent plane: first lane state set below 2^16', withPayload('planes.bf16', (p) => {
      // Plane 0's stream starts at payload offset 8: header, frequency table, then the lane states.
      const states = findStates(p, 8);
      new DataView(p.buffer, p.byteOffset).setUint32(states, 0x1234, true);
    })],
    ['rans-extra-words.eqz', 'CorruptStream', 'planes.bf16 exponent plane: a chunk word changed so the final states are wrong', withPayload('planes.bf16', (p) => {
      const states = findStates(p, 8);
      new DataView(p.buffer, p.byteOffset).setUint32(states + 4, u32At(p, states + 4) ^ 0x5555, true);
    })],
    ['fp8-nan-code.eqz', 'InvalidValue', 'fp8.weight: a code set to 0x7F (E4M3 NaN) in a stored-mode rewrite', withTable(
      replacePayload(coded, codedHeader, codedTable.tensors, 'fp8.weight', (() => {
        const codes = new Uint8Array(40 * 96).fill(0x38);
        codes[77] = 0x7f;
        return concat(encodeScaledPayload(codes, new Float32Array(40).fill(0.5), 'BF16'));
      })()),
      () => undefined)],
    ['fp8-zero-scale.eqz', 'InvalidValue', 'fp8.weight: row 3 scale set to +0', withPayload('fp8.weight', (p) => { p[8 + 6] = 0; p[8 + 7] = 0; })],
    ['fp8-rank-1.eqz', 'Malformed', 'fp8.weight relabelled as rank 1', withTable(coded, (tensors) => { tensors.find((t) => t.name === 'fp8.weight')!.shape = [3840]; })],
    ['nvfp4-global-scale-nan.eqz', 'InvalidValue', 'nvfp4.nibble global scale NaN', withPayload('nvfp4.nibble', (p) => { new DataView(p.buffer, p.byteOffset).setFloat32(0, NaN, true); })],
    ['nvfp4-cols.eqz', 'Malformed', 'nvfp4.byte relabelled [32, 24]: 24 columns is not a multiple of 16', withTable(coded, (tensors) => { tensors.find((t) => t.name === 'nvfp4.byte')!.shape = [32, 24]; })],
    ['payload-trailing.eqz', 'Malformed', 'int8.weight payload with 4 extra zero bytes', withTable(
      replacePayload(coded, codedHeader, codedTable.tensors, 'int8.weight', concat([payloadOf(coded, codedHeader, codedTable.tensors, 'int8.weight'), new Uint8Array(4)])),
      () => undefined)],
  );
  for (const [name, error, description, bytes] of invalid) {
    const file = `invalid/${name}`;
    await writeFile(join(outDir, file), bytes);
    manifest.invalid.push({ file, error, description });
  }
  await writeFile(join(outDir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return manifest;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const outDir = process.argv[2] ?? 'spec/vectors';
  await rm(join(outDir, 'manifest.json'), { force: true });
  const manifest = await generateVectors(outDir);
  console.log(`wrote ${manifest.valid.length} valid and ${manifest.invalid.length} invalid vectors to ${outDir}`);
}
