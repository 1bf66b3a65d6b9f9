import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EqzWriter } from '../src/container/writer.js';
import { EqzReader } from '../src/container/reader.js';
import { bufferSource } from '../src/container/sources.js';
import { fileSource } from '../src/container/file-source.js';
import { ValueType } from '../src/container/format.js';
import { encodeHeader, encodeTable, metaBytes, metaString, parseHeader, type Metadata } from '../src/container/table.js';
import { decodeTensor } from '../src/decode/tensor.js';
import { EqzError } from '../src/errors.js';
import { xxh32 } from '../src/codec/xxh32.js';
import { tempDir } from './helpers.js';

const dir = await tempDir();

const metadata: Metadata = new Map([
  ['eqz.producer', metaString('eqz test')],
  ['eqz.file.config.json', metaBytes(new TextEncoder().encode('{"a":1}'))],
  ['custom.u64', { type: ValueType.U64, value: 2n ** 60n }],
  ['custom.i8', { type: ValueType.I8, value: -5 }],
  ['custom.bool', { type: ValueType.BOOL, value: true }],
  ['custom.f64', { type: ValueType.F64, value: Math.PI }],
  ['custom.strings', { type: ValueType.ARRAY, elementType: ValueType.STRING, value: ['x', 'ÿ€'] }],
]);

const f32 = new Float32Array([1, -2, 3.5, 0, -0, 1e-40]);
const tensors = [
  { name: 'w', dtype: 'F32' as const, shape: [2, 3], bytes: new Uint8Array(f32.buffer) },
  { name: 'empty', dtype: 'BF16' as const, shape: [0, 4], bytes: new Uint8Array() },
  { name: 'scalar', dtype: 'I64' as const, shape: [], bytes: new Uint8Array(8).fill(7) },
  { name: 'odd', dtype: 'U8' as const, shape: [5], bytes: Uint8Array.of(1, 2, 3, 4, 5) },
];

async function writeSample(path: string, alignment?: number): Promise<void> {
  const writer = await EqzWriter.create(path, { alignment });
  for (const t of tensors) await writer.addTensor({ name: t.name, dtype: t.dtype, shape: t.shape, encoding: 'raw', payload: t.bytes });
  await writer.finish(metadata);
}

async function expectEqzError(promise: Promise<unknown>, codes?: string[]): Promise<EqzError> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error, 'expected an EqzError').toBeInstanceOf(EqzError);
  if (codes) expect(codes).toContain((error as EqzError).code);
  return error as EqzError;
}

/** Opens and fully decodes every tensor (what `eqz validate` does). */
async function readAll(bytes: Uint8Array): Promise<void> {
  const reader = await EqzReader.open(bufferSource(bytes));
  for (const entry of reader.tensors) await decodeTensor(reader, entry);
}

describe('container round trip', () => {
  it('writes and reads back tensors, metadata and alignment', async () => {
    for (const alignment of [8, 256, 4096]) {
      const path = join(dir, `sample-${alignment}.eqz`);
      await writeSample(path, alignment);
      const reader = await EqzReader.open(await fileSource(path));
      expect(reader.header.alignment).toBe(alignment);
      expect(reader.metadata).toEqual(metadata);
      expect(reader.tensors.map((t) => t.name)).toEqual(tensors.map((t) => t.name));
      for (const t of tensors) {
        const entry = reader.tensor(t.name)!;
        expect(entry.shape).toEqual(t.shape);
        expect(reader.payloadOffset(entry) % alignment).toBe(0);
        expect(await decodeTensor(reader, entry)).toEqual(t.bytes);
      }
      await reader.close();
    }
  });

  it('leaves no file behind when aborted, and only the final file after finish', async () => {
    const sub = join(dir, 'abort');
    await (await import('node:fs/promises')).mkdir(sub);
    const writer = await EqzWriter.create(join(sub, 'x.eqz'));
    await writer.addTensor({ name: 'a', dtype: 'U8', shape: [3], encoding: 'raw', payload: Uint8Array.of(1, 2, 3) });
    expect((await readdir(sub)).length).toBe(1);
    await writer.abort();
    expect(await readdir(sub)).toEqual([]);
    await writeSample(join(sub, 'y.eqz'));
    expect(await readdir(sub)).toEqual(['y.eqz']);
  });

  it('rejects duplicate tensor names while writing', async () => {
    const writer = await EqzWriter.create(join(dir, 'dup.eqz'));
    await writer.addTensor({ name: 'a', dtype: 'U8', shape: [1], encoding: 'raw', payload: Uint8Array.of(1) });
    await expectEqzError(writer.addTensor({ name: 'a', dtype: 'U8', shape: [1], encoding: 'raw', payload: Uint8Array.of(1) }), ['Malformed']);
    await writer.abort();
  });
});

describe('hostile .eqz input', () => {
  const path = join(dir, 'hostile.eqz');
  let valid: Uint8Array;

  it('every prefix truncation gives a clear error', async () => {
    await writeSample(path, 8);
    valid = new Uint8Array(await readFile(path));
    await readAll(valid);
    for (let length = 0; length < valid.length; length++) {
      await expectEqzError(readAll(valid.subarray(0, length)), ['Truncated', 'BadMagic', 'Malformed']);
    }
  });

  it('every single-byte flip in header and table is caught', async () => {
    const reader = await EqzReader.open(bufferSource(valid));
    const { tableOffset, tableSize } = reader.header;
    const positions = [...Array(64).keys(), ...Array.from({ length: tableSize }, (_, i) => tableOffset + i)];
    for (const position of positions) {
      const corrupt = valid.slice();
      corrupt[position] ^= 0x5a;
      const error = await expectEqzError(readAll(corrupt));
      const expected = position < 8 ? 'BadMagic' : position < 12 ? 'UnsupportedVersion' : 'ChecksumMismatch';
      expect(error.code, `flip at byte ${position}`).toBe(expected);
    }
  });

  it('a flipped payload byte fails that tensor\'s checksum, naming tensor and offset', async () => {
    const reader = await EqzReader.open(bufferSource(valid));
    const entry = reader.tensor('w')!;
    const corrupt = valid.slice();
    corrupt[reader.payloadOffset(entry) + 5] ^= 1;
    const error = await expectEqzError(readAll(corrupt), ['ChecksumMismatch']);
    expect(error.tensor).toBe('w');
    expect(error.offset).toBe(reader.payloadOffset(entry));
  });

  /** A file with a hand-made table, both checksums valid, so that only the structural check can fire. */
  function fileWithTable(table: Uint8Array, dataSize = 0, version = 1): Uint8Array {
    const header = encodeHeader({ version, alignment: 8, dataOffset: 64, dataSize, tableOffset: 64 + dataSize, tableSize: table.length, tableChecksum: xxh32(table) });
    const file = new Uint8Array(64 + dataSize + table.length);
    file.set(header);
    file.set(table, 64 + dataSize);
    return file;
  }

  function tableBytes(entry: { dtype?: number; encoding?: number; rank?: number; dims?: bigint[]; offset?: bigint; size?: bigint }): Uint8Array {
    const dims = entry.dims ?? [4n];
    const words: number[] = [];
    const u32 = (v: number) => words.push(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24);
    const u64 = (v: bigint) => { for (let i = 0n; i < 8n; i++) words.push(Number((v >> (8n * i)) & 0xffn)); };
    u64(0n); // no metadata
    u64(1n);
    u64(1n); words.push(0x74); // name "t"
    u32(entry.dtype ?? 7); u32(entry.encoding ?? 0); u32(entry.rank ?? dims.length); u32(0);
    for (const d of dims) u64(d);
    u64(entry.offset ?? 0n); u64(entry.size ?? 4n); u32(xxh32(new Uint8Array(4))); u32(0);
    return Uint8Array.from(words);
  }

  it('structural errors each have their class', async () => {
    const cases: [string, Uint8Array, string][] = [
      ['valid control', fileWithTable(tableBytes({}), 8), ''],
      ['unknown version', fileWithTable(tableBytes({}), 8, 2), 'UnsupportedVersion'],
      ['unknown encoding', fileWithTable(tableBytes({ encoding: 99 }), 8), 'UnknownEncoding'],
      ['unknown dtype', fileWithTable(tableBytes({ dtype: 77 }), 8), 'UnsupportedDtype'],
      ['payload past the data section', fileWithTable(tableBytes({ offset: 8n }), 8), 'OutOfBounds'],
      ['offset near 2^64', fileWithTable(tableBytes({ offset: 2n ** 64n - 8n }), 8), 'LimitExceeded'],
      ['element count overflow', fileWithTable(tableBytes({ dims: [2n ** 40n, 2n ** 40n] }), 8), 'LimitExceeded'],
      ['rank 9', fileWithTable(tableBytes({ rank: 9, dims: Array(9).fill(1n) }), 8), 'LimitExceeded'],
      ['raw size mismatch', fileWithTable(tableBytes({ dims: [3n] }), 8), 'Malformed'],
      ['rank larger than the table', fileWithTable(tableBytes({ rank: 1000, dims: [] }), 8), 'LimitExceeded'],
    ];
    for (const [label, file, code] of cases) {
      if (!code) {
        await readAll(file);
        continue;
      }
      const error = await expectEqzError(readAll(file));
      expect(error.code, label).toBe(code);
    }
  });

  it('huge counts and lengths fail before allocating', async () => {
    const hugeMetadata = encodeTable({ metadata: new Map(), tensors: [] });
    new DataView(hugeMetadata.buffer).setBigUint64(0, 2n ** 62n, true);
    expect((await expectEqzError(readAll(fileWithTable(hugeMetadata)))).code).toBe('LimitExceeded');
    const longKey = encodeTable({ metadata: new Map([['k', metaString('v')]]), tensors: [] });
    new DataView(longKey.buffer).setBigUint64(8, 2n ** 40n, true);
    expect((await expectEqzError(readAll(fileWithTable(longKey)))).code).toBe('LimitExceeded');
    const longArray = encodeTable({ metadata: new Map([['k', metaBytes(new Uint8Array(3))]]), tensors: [] });
    new DataView(longArray.buffer).setBigUint64(8 + 8 + 1 + 4 + 4, 2n ** 50n, true);
    expect((await expectEqzError(readAll(fileWithTable(longArray)))).code).toBe('Truncated');
  });

  it('rejects wrong magic, trailing bytes and a header pointing past the end', async () => {
    expect((await expectEqzError(readAll(new TextEncoder().encode('{"not": "an eqz file"}'.padEnd(80))))).code).toBe('BadMagic');
    const trailing = new Uint8Array(valid.length + 3);
    trailing.set(valid);
    expect((await expectEqzError(readAll(trailing))).code).toBe('Malformed');
    const header = parseHeader(valid, valid.length);
    const past = encodeHeader({ ...header, tableOffset: header.tableOffset + 1000 });
    const file = valid.slice();
    file.set(past);
    expect((await expectEqzError(readAll(file))).code).toBe('Truncated');
  });
});
