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

export async function generateVectors(outDir: string): Promise<Manifest> {
  await mkdir(join(outDir, 'valid'), { recursive: true });
  await mkdir(join(outDir, 'invalid'), { recursive: true });
  const manifest: Manifest = { version: 1, valid: [], invalid: [] };

  const rawPath = join(outDir, 'valid/raw-basic.eqz');
  await writeVector(rawPath, rawTensors(), rawMetadata(), 64);
  const raw = new Uint8Array(await readFile(rawPath));
  manifest.valid.push({ file: 'valid/raw-basic.eqz', description: 'raw encoding: every float width, integers, bool, a scalar, an empty tensor; every metadata type', tensors: await describeValid(raw) });

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
