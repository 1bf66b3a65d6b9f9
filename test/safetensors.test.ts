import { mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EqzError, type EqzErrorCode } from '../src/errors.js';
import { MAX_HEADER_BYTES, SafetensorsFile, SafetensorsWriter } from '../src/io/safetensors.js';

const DATA = fileURLToPath(new URL('../../shared/data/', import.meta.url));
const STORIES = join(DATA, 'models/stories260K/model.safetensors');
const REAL_FILES = [
  'models/stories260K/model.safetensors',
  'models/babyllama-tok105/model.safetensors',
  'weights/faceres-deep-f32.safetensors',
  'weights/ppocrv4-rec-f32.safetensors',
  'weights/movenet-lightning-f16.safetensors',
  'weights/silero-vad-v5.safetensors',
].map((name) => join(DATA, name));

interface RawEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}
type RawHeader = Record<string, unknown>;

/** Splits a safetensors file by hand (independently of the reader under test): header JSON and data buffer. */
async function splitFile(path: string): Promise<{ header: RawHeader; headerLength: number; data: Uint8Array; bytes: Uint8Array }> {
  const bytes = new Uint8Array(await readFile(path));
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength))) as RawHeader;
  return { header, headerLength, data: bytes.subarray(8 + headerLength), bytes };
}

function rawEntries(header: RawHeader): [string, RawEntry][] {
  return (Object.entries(header).filter(([name]) => name !== '__metadata__') as [string, RawEntry][]).sort(
    (a, b) => a[1].data_offsets[0] - b[1].data_offsets[0],
  );
}

/** Assembles a file from an arbitrary header text (not padded, so odd lengths are exercised too). */
function assemble(headerText: string | Uint8Array, data: Uint8Array, declaredLength?: bigint): Uint8Array {
  const header = typeof headerText === 'string' ? new TextEncoder().encode(headerText) : headerText;
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, declaredLength ?? BigInt(header.length), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

/** Byte equality that stays fast on megabytes (toEqual walks typed arrays element by element). */
function expectSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  const same = actual.length === expected.length && Buffer.compare(actual, expected) === 0;
  const firstDifference = same ? -1 : actual.findIndex((byte, i) => byte !== expected[i]);
  expect(same, `${what}: lengths ${actual.length}/${expected.length}, first difference at ${firstDifference}`).toBe(true);
}

async function expectEqzError(
  pending: Promise<unknown>,
  code: EqzErrorCode,
  context: { file?: string; tensor?: string; offset?: number } = {},
): Promise<EqzError> {
  const error = await pending.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(EqzError);
  const eqz = error as EqzError;
  expect(eqz.code).toBe(code);
  expect(eqz).toMatchObject(context);
  return eqz;
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eqz-safetensors-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('SafetensorsFile on real files', () => {
  it('lists every tensor in offset order and reads its bytes from where the header puts them', async () => {
    for (const path of REAL_FILES) {
      const { header, headerLength, bytes } = await splitFile(path);
      const file = await SafetensorsFile.open(path);
      try {
        expect(file.metadata).toEqual(header.__metadata__ ?? null);
        const expected = rawEntries(header);
        expect(file.tensors.map((t) => t.name)).toEqual(expected.map(([name]) => name));
        for (const [i, [name, entry]] of expected.entries()) {
          const tensor = file.tensors[i]!;
          const [begin, end] = entry.data_offsets;
          expect(tensor).toEqual({ name, dtype: entry.dtype, shape: entry.shape, byteOffset: 8 + headerLength + begin, byteLength: end - begin });
          expectSameBytes(await file.read(tensor), bytes.subarray(8 + headerLength + begin, 8 + headerLength + end), name);
        }
      } finally {
        await file.close();
      }
    }
  });

  it('reads into a caller buffer, and refuses one that is too small', async () => {
    const file = await SafetensorsFile.open(STORIES);
    try {
      const tensor = file.tensors[1]!;
      const target = new Uint8Array(tensor.byteLength + 16).fill(0xee);
      const view = await file.read(tensor, target);
      expect(view.buffer).toBe(target.buffer);
      expectSameBytes(view, await file.read(tensor), tensor.name);
      expect(target.subarray(tensor.byteLength)).toEqual(new Uint8Array(16).fill(0xee));
      await expect(file.read(tensor, new Uint8Array(tensor.byteLength - 1))).rejects.toThrow(RangeError);
    } finally {
      await file.close();
    }
  });
});

describe('SafetensorsWriter', () => {
  it('round-trips every real file: same tensors, bytes, metadata and data buffer', async () => {
    for (const [i, path] of REAL_FILES.entries()) {
      const source = await SafetensorsFile.open(path);
      const out = join(dir, `roundtrip-${i}.safetensors`);
      try {
        const writer = await SafetensorsWriter.create(out, source.tensors, source.metadata);
        for (const tensor of source.tensors) await writer.writeTensor(tensor.name, await source.read(tensor));
        await writer.finish();
      } finally {
        await source.close();
      }
      const original = await splitFile(path);
      const copy = await splitFile(out);
      expect(copy.header).toEqual(original.header);
      expectSameBytes(copy.data, original.data, `${path} data buffer`);
      expect(copy.headerLength % 8).toBe(0);
      const reopened = await SafetensorsFile.open(out);
      expect(reopened.metadata).toEqual(source.metadata);
      expect(reopened.tensors.map(({ name, dtype, shape, byteLength }) => ({ name, dtype, shape, byteLength }))).toEqual(
        source.tensors.map(({ name, dtype, shape, byteLength }) => ({ name, dtype, shape, byteLength })),
      );
      await reopened.close();
      await rm(out);
    }
  });

  it('writes the header as the reference crate does: compact JSON, space padding to 8, metadata first or absent', async () => {
    const entries = [
      { name: 'scalar', dtype: 'I64' as const, shape: [] },
      { name: 'empty', dtype: 'F16' as const, shape: [0, 7] },
      { name: 'odd "name"', dtype: 'U8' as const, shape: [3] },
    ];
    for (const metadata of [null, { format: 'pt', note: 'é' }]) {
      const out = join(dir, 'header.safetensors');
      const writer = await SafetensorsWriter.create(out, entries, metadata);
      await writer.writeTensor('scalar', new Uint8Array(8).fill(1));
      await writer.writeTensor('empty', new Uint8Array(0));
      await writer.writeTensor('odd "name"', Uint8Array.of(7, 8, 9));
      await writer.finish();
      const { bytes, headerLength, data } = await splitFile(out);
      const text = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
      const json =
        (metadata ? `{"__metadata__":${JSON.stringify(metadata)},` : '{') +
        '"scalar":{"dtype":"I64","shape":[],"data_offsets":[0,8]},' +
        '"empty":{"dtype":"F16","shape":[0,7],"data_offsets":[8,8]},' +
        '"odd \\"name\\"":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}}';
      expect(text.trimEnd()).toBe(json);
      expect(headerLength).toBe(Math.ceil(new TextEncoder().encode(json).length / 8) * 8);
      expect(data).toEqual(Uint8Array.of(1, 1, 1, 1, 1, 1, 1, 1, 7, 8, 9));
      const file = await SafetensorsFile.open(out);
      expect(file.metadata).toEqual(metadata);
      expect(file.tensors.map((t) => [t.name, t.byteLength])).toEqual([['scalar', 8], ['empty', 0], ['odd "name"', 3]]);
      expect(await file.read(file.tensors[1]!)).toEqual(new Uint8Array(0));
      await file.close();
      await rm(out);
    }
  });

  describe('leaves nothing behind when it does not finish', () => {
    const entries = [
      { name: 'a', dtype: 'F32' as const, shape: [2, 2] },
      { name: 'b', dtype: 'BF16' as const, shape: [3] },
    ];
    let folder: string;
    let out: string;
    beforeAll(async () => {
      folder = await mkdtemp(join(dir, 'writer-'));
      out = join(folder, 'out.safetensors');
    });
    const expectEmpty = async () => expect(await readdir(folder)).toEqual([]);

    it('on abort after some tensors', async () => {
      const writer = await SafetensorsWriter.create(out, entries);
      expect(await readdir(folder)).toEqual([writer.tempPath.slice(folder.length + 1)]);
      expect(writer.tempPath).toMatch(new RegExp(`^${out.replace(/\./g, '\\.')}\\.tmp-${process.pid}-[0-9a-f]+$`));
      await writer.writeTensor('a', new Uint8Array(16));
      await writer.abort();
      await writer.abort();
      await expectEmpty();
    });

    it('on finish with a tensor missing', async () => {
      const writer = await SafetensorsWriter.create(out, entries);
      await writer.writeTensor('a', new Uint8Array(16));
      await expectEqzError(writer.finish(), 'Truncated', { file: out });
      await expectEmpty();
    });

    it('on a tensor out of order or of the wrong length', async () => {
      const outOfOrder = await SafetensorsWriter.create(out, entries);
      await expectEqzError(outOfOrder.writeTensor('b', new Uint8Array(6)), 'Malformed', { tensor: 'b' });
      await expectEmpty();
      const wrongLength = await SafetensorsWriter.create(out, entries);
      await wrongLength.writeTensor('a', new Uint8Array(16));
      await expectEqzError(wrongLength.writeTensor('b', new Uint8Array(5)), 'Malformed', { tensor: 'b' });
      await expectEmpty();
      await expect(wrongLength.writeTensor('b', new Uint8Array(6))).rejects.toThrow(/already finished or aborted/);
    });

    it('on entries it cannot describe, before creating anything', async () => {
      await expectEqzError(SafetensorsWriter.create(out, [entries[0]!, entries[0]!]), 'Malformed', { tensor: 'a' });
      await expectEqzError(SafetensorsWriter.create(out, [{ name: '__metadata__', dtype: 'U8', shape: [1] }]), 'Malformed');
      await expectEqzError(SafetensorsWriter.create(out, [{ name: 'x', dtype: 'U8', shape: [-1] }]), 'Malformed', { tensor: 'x' });
      await expectEqzError(SafetensorsWriter.create(out, [{ name: 'x', dtype: 'F32', shape: [2 ** 30, 2 ** 30, 2 ** 30] }]), 'LimitExceeded');
      await expectEqzError(SafetensorsWriter.create(out, [{ name: 'x', dtype: 'C64' as 'F32', shape: [1] }]), 'UnsupportedDtype');
      await expectEmpty();
    });
  });
});

describe('SafetensorsFile on hostile input', () => {
  let stories: Awaited<ReturnType<typeof splitFile>>;
  let counter = 0;
  beforeAll(async () => {
    stories = await splitFile(STORIES);
  });

  async function put(bytes: Uint8Array): Promise<string> {
    const path = join(dir, `hostile-${counter++}.safetensors`);
    await writeFile(path, bytes);
    return path;
  }

  /**
   * The stories260K file with its header changed by `edit` (data buffer unchanged unless given); `dataStart` is
   * where the data buffer begins in the new file.
   */
  async function withHeader(
    edit: (header: RawHeader) => void,
    data: Uint8Array = stories.data,
  ): Promise<{ path: string; dataStart: number; size: number }> {
    const header = structuredClone(stories.header);
    edit(header);
    const bytes = assemble(JSON.stringify(header), data);
    return { path: await put(bytes), dataStart: bytes.length - data.length, size: bytes.length };
  }
  const entry = (header: RawHeader, name: string) => header[name] as RawEntry;
  const tensorsInOrder = () => rawEntries(stories.header).map(([name]) => name);

  it('rejects every truncation of a small file as Truncated', async () => {
    const source = await SafetensorsFile.open(STORIES);
    const small = join(dir, 'small.safetensors');
    const picked = source.tensors.filter((t) => t.byteLength <= 256).slice(0, 3);
    const writer = await SafetensorsWriter.create(small, picked, source.metadata);
    for (const tensor of picked) await writer.writeTensor(tensor.name, await source.read(tensor));
    await writer.finish();
    await source.close();
    const size = (await readFile(small)).length;
    expect(size).toBeLessThan(2000);
    for (let length = size - 1; length >= 0; length--) {
      await truncate(small, length);
      await expectEqzError(SafetensorsFile.open(small), 'Truncated', { file: small });
    }
  });

  it('rejects prefixes of a real file cut in the length, the header and the data as Truncated', async () => {
    const headerEnd = 8 + stories.headerLength;
    const cuts = [stories.bytes.length - 1, headerEnd + 131073, headerEnd + 1, headerEnd, headerEnd - 1, 8 + 100, 8, 5];
    for (const length of cuts) {
      const path = await put(stories.bytes.subarray(0, length));
      const error = await expectEqzError(SafetensorsFile.open(path), 'Truncated', { file: path });
      if (length > headerEnd) expect(error.offset).toBe(length);
    }
  });

  it('bounds the header length before reading it', async () => {
    const header = stories.bytes.subarray(8, 8 + stories.headerLength);
    const fileSize = stories.bytes.length;
    await expectEqzError(put(assemble(header, stories.data, BigInt(fileSize - 7))).then(SafetensorsFile.open), 'Truncated', { offset: 0 });
    for (const declared of [BigInt(MAX_HEADER_BYTES) + 1n, 2n ** 53n, 2n ** 64n - 1n]) {
      await expectEqzError(put(assemble(header, stories.data, declared)).then(SafetensorsFile.open), 'LimitExceeded', { offset: 0 });
    }
    await expectEqzError(put(assemble(header, stories.data, BigInt(MAX_HEADER_BYTES))).then(SafetensorsFile.open), 'Truncated');
  });

  it('rejects a header that is not a UTF-8 JSON object starting with "{"', async () => {
    const text = new TextDecoder().decode(stories.bytes.subarray(8, 8 + stories.headerLength));
    const badUtf8 = new TextEncoder().encode(text);
    badUtf8[badUtf8.indexOf(0x6d /* 'm' of the first name */)] = 0xff;
    for (const header of [
      `{${'x'.repeat(text.length - 1)}`,
      ` ${text.slice(0, -1)}`,
      `[${text.slice(1, -1)}]`,
      `${text.trimEnd()}x`,
      badUtf8,
      '',
    ]) {
      await expectEqzError(put(assemble(header, stories.data)).then(SafetensorsFile.open), 'Malformed', { offset: 8 });
    }
  });

  it('rejects dtypes that safetensors does not define or eqz does not support', async () => {
    const name = 'model.layers.0.input_layernorm.weight';
    for (const dtype of ['Q4_K', 'f32', 'F8_E8M0', 'C64']) {
      const { path } = await withHeader((h) => {
        entry(h, name).dtype = dtype;
      });
      const error = await expectEqzError(SafetensorsFile.open(path), 'UnsupportedDtype', { file: path, tensor: name });
      expect(error.message).toContain(dtype);
    }
  });

  it('rejects a shape whose size differs from the data_offsets span', async () => {
    const name = 'model.embed_tokens.weight';
    const { path, dataStart } = await withHeader((h) => {
      entry(h, name).shape = [512, 63];
    });
    const error = await expectEqzError(SafetensorsFile.open(path), 'Malformed', { tensor: name, offset: dataStart });
    expect(error.message).toMatch(/131072 bytes .* needs 129024/);
  });

  it('rejects overlapping offsets, gaps, reversed offsets and bytes no tensor owns', async () => {
    const [first, second, third] = tensorsInOrder();
    const overlap = await withHeader((h) => {
      entry(h, second!).data_offsets[0] -= 4;
    });
    expect((await expectEqzError(SafetensorsFile.open(overlap.path), 'Malformed', { tensor: second })).message).toContain('overlap');
    const gap = await withHeader((h) => {
      delete h[second!];
    });
    expect((await expectEqzError(SafetensorsFile.open(gap.path), 'Malformed', { tensor: third })).message).toContain('gap');
    const notAtZero = await withHeader((h) => {
      delete h[first!];
    });
    const offset = notAtZero.dataStart + entry(stories.header, second!).data_offsets[0];
    expect((await expectEqzError(SafetensorsFile.open(notAtZero.path), 'Malformed', { tensor: second, offset })).message).toContain('gap');
    const reversed = await withHeader((h) => {
      const offsets = entry(h, first!).data_offsets;
      entry(h, first!).data_offsets = [offsets[1], offsets[0]];
    });
    await expectEqzError(SafetensorsFile.open(reversed.path), 'Malformed', { tensor: first });
    const trailing = new Uint8Array(stories.data.length + 4);
    trailing.set(stories.data);
    const extra = await withHeader(() => undefined, trailing);
    await expectEqzError(SafetensorsFile.open(extra.path), 'Malformed', { offset: extra.size - 4 });
  });

  it('rejects offsets past the end of the file', async () => {
    const names = tensorsInOrder();
    const last = names[names.length - 1]!;
    const grown = await withHeader((h) => {
      const e = entry(h, last);
      e.shape = [e.shape[0]! + 1, ...e.shape.slice(1)];
      e.data_offsets[1] += (e.data_offsets[1] - e.data_offsets[0]) / (e.shape[0]! - 1);
    });
    await expectEqzError(SafetensorsFile.open(grown.path), 'Truncated', { tensor: last, offset: grown.size });
    const far = await withHeader((h) => {
      entry(h, last).data_offsets = [entry(h, last).data_offsets[0], 2 ** 64];
    });
    await expectEqzError(SafetensorsFile.open(far.path), 'OutOfBounds', { tensor: last });
  });

  it('rejects shapes whose element count or byte length overflows', async () => {
    const name = 'model.layers.0.input_layernorm.weight';
    // [2^30, 2^30, 0] has no elements, but like the reference crate's checked fold it overflows before the zero.
    const shapes = [[2 ** 53, 2 ** 53], [2 ** 26, 2 ** 26, 2 ** 26], [2 ** 40, 2 ** 20], [2 ** 53, 0], [2 ** 51 + 1], [2 ** 30, 2 ** 30, 0]];
    for (const shape of shapes) {
      const { path } = await withHeader((h) => {
        entry(h, name).shape = shape;
      });
      await expectEqzError(SafetensorsFile.open(path), 'LimitExceeded', { tensor: name });
    }
    const bytes = await withHeader((h) => {
      entry(h, name).dtype = 'U8';
      entry(h, name).shape = [2 ** 26, 2 ** 26, 2 ** 26];
    });
    await expectEqzError(SafetensorsFile.open(bytes.path), 'LimitExceeded', { tensor: name });
  });

  it('rejects negative, fractional and non-numeric dimensions and malformed entries', async () => {
    const name = 'model.layers.0.input_layernorm.weight';
    const edits: ((e: Record<string, unknown>) => void)[] = [
      (e) => (e.shape = [-1, -64]),
      (e) => (e.shape = [64.5]),
      (e) => (e.shape = ['64']),
      (e) => (e.shape = 64),
      (e) => delete e.data_offsets,
      (e) => delete e.dtype,
      (e) => (e.data_offsets = [131072]),
      (e) => (e.data_offsets = [131072, -1]),
      (e) => (e.data_offsets = [131072.5, 131328]),
    ];
    for (const edit of edits) {
      const { path } = await withHeader((h) => edit(h[name] as Record<string, unknown>));
      await expectEqzError(SafetensorsFile.open(path), 'Malformed', { tensor: name });
    }
    const notObject = await withHeader((h) => {
      h[name] = [1, 2];
    });
    await expectEqzError(SafetensorsFile.open(notObject.path), 'Malformed', { tensor: name });
    const badMetadata = await withHeader((h) => {
      h.__metadata__ = { format: 1 };
    });
    await expectEqzError(SafetensorsFile.open(badMetadata.path), 'Malformed', { offset: 8 });
  });

  it('reports a missing file as Io', async () => {
    await expectEqzError(SafetensorsFile.open(join(dir, 'absent.safetensors')), 'Io');
  });
});
