import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openModel, writeModel } from '../src/io/model-folder.js';
import { fromFloat32, toFloat32 } from '../src/tensor/dtype.js';
import { eqz, SHARED_DATA, tempDir } from './helpers.js';

const dir = await tempDir();


/** Every tensor of `a` equals `b`'s byte for byte, and the same small files come back identical. */
async function expectSameModel(original: string, restored: string): Promise<void> {
  const a = await openModel(original);
  const b = await openModel(restored);
  try {
    expect(b.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual(a.tensors.map((t) => [t.name, t.dtype, t.shape]));
    for (const tensor of a.tensors) {
      const back = b.tensors.find((t) => t.name === tensor.name)!;
      expect(Buffer.from(await b.readTensor(back)).equals(Buffer.from(await a.readTensor(tensor))), tensor.name).toBe(true);
    }
    expect([...b.smallFiles.keys()].sort()).toEqual([...a.smallFiles.keys()].sort());
    for (const [path, bytes] of a.smallFiles) expect(Buffer.from(b.smallFiles.get(path)!).equals(Buffer.from(bytes)), path).toBe(true);
  } finally {
    await a.close();
    await b.close();
  }
}

const sources = [
  ...(await readdir(join(SHARED_DATA, 'models'))).map((m) => ({ label: m, path: join(SHARED_DATA, 'models', m), folder: true })),
  ...(await readdir(join(SHARED_DATA, 'weights'))).filter((f) => f.endsWith('.safetensors'))
    .map((f) => ({ label: f, path: join(SHARED_DATA, 'weights', f), folder: false })),
];

describe('eqz convert --lossless round trip on every shared model and weight file', () => {
  it.each(sources.map((s) => [s.label, s] as const))('%s', async (label, source) => {
    const packed = join(dir, `${label}.eqz`);
    const restored = join(dir, source.folder ? `${label}-back` : `${label}-back.safetensors`);
    expect((await eqz('convert', source.path, '-o', packed, '--lossless')).status).toBe(0);
    const validation = await eqz('validate', packed);
    expect(validation.status, validation.err).toBe(0);
    expect((await eqz('convert', packed, '-o', restored)).status).toBe(0);
    await expectSameModel(source.path, restored);
  });
});

describe('sharded folders', () => {
  it('keep their shards, and --dtype bf16 rounds every float tensor and updates the index total', async () => {
    const source = await openModel(join(SHARED_DATA, 'models', 'stories260K'));
    const names = source.tensors.map((t) => t.name);
    const half = Math.ceil(names.length / 2);
    const layout = [
      { name: 'model-00001-of-00002.safetensors', metadata: { format: 'pt' }, tensors: names.slice(0, half) },
      { name: 'model-00002-of-00002.safetensors', metadata: { format: 'pt' }, tensors: names.slice(half) },
    ];
    const weightMap = Object.fromEntries(layout.flatMap((f) => f.tensors.map((n) => [n, f.name])));
    const total = source.tensors.reduce((sum, t) => sum + t.byteLength, 0);
    const smallFiles = new Map(source.smallFiles);
    smallFiles.set('model.safetensors.index.json', new TextEncoder().encode(JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap })));
    const sharded = join(dir, 'sharded');
    await writeModel(sharded, layout, smallFiles, source.tensors, (name) => source.readTensor(source.tensors.find((t) => t.name === name)!));

    const packed = join(dir, 'sharded.eqz');
    expect((await eqz('convert', sharded, '-o', packed, '--lossless')).status).toBe(0);
    expect((await eqz('convert', packed, '-o', join(dir, 'sharded-back'))).status).toBe(0);
    await expectSameModel(sharded, join(dir, 'sharded-back'));

    expect((await eqz('convert', packed, '-o', join(dir, 'sharded-bf16'), '--dtype', 'bf16')).status).toBe(0);
    const bf16 = await openModel(join(dir, 'sharded-bf16'));
    expect(bf16.files.map((f) => f.name)).toEqual(layout.map((f) => f.name));
    for (const tensor of bf16.tensors) {
      expect(tensor.dtype).toBe('BF16');
      const original = source.tensors.find((t) => t.name === tensor.name)!;
      const expected = fromFloat32(toFloat32(await source.readTensor(original), 'F32'), 'BF16');
      expect(Buffer.from(await bf16.readTensor(tensor)).equals(Buffer.from(expected)), tensor.name).toBe(true);
    }
    const index = JSON.parse(new TextDecoder().decode(bf16.smallFiles.get('model.safetensors.index.json')));
    expect(index.metadata.total_size).toBe(total / 2);
    expect(index.weight_map).toEqual(weightMap);
    await bf16.close();
    await source.close();
  });
});

describe('eqz CLI contract', () => {
  const model = join(SHARED_DATA, 'models', 'stories260K');

  it('inspect --json prints the documented object with totals', async () => {
    const packed = join(dir, 'inspect.eqz');
    await eqz('convert', model, '-o', packed, '--lossless');
    const result = await eqz('inspect', packed, '--json');
    expect(result.status).toBe(0);
    const info = JSON.parse(result.out);
    expect(Object.keys(info).sort()).toEqual(['metadata', 'tensors', 'totals', 'version']);
    expect(info.version).toBe(1);
    expect(Object.keys(info.tensors[0]).sort()).toEqual(['bitsPerParam', 'dtype', 'encoding', 'name', 'shape', 'storedBytes']);
    expect(info.totals.params).toBe(260032);
    const stored = info.tensors.reduce((sum: number, t: { storedBytes: number }) => sum + t.storedBytes, 0);
    expect(info.totals.storedBytes).toBe(stored);
    expect(info.totals.bitsPerParam).toBeCloseTo((stored * 8) / 260032, 10);
    expect(info.metadata['eqz.source.format']).toBe('hf-folder');
  });

  it('validate exits 1 naming the tensor and byte offset of a corrupted payload', async () => {
    const packed = join(dir, 'corrupt.eqz');
    await eqz('convert', model, '-o', packed, '--lossless');
    const info = JSON.parse((await eqz('inspect', packed, '--json')).out);
    const bytes = new Uint8Array(await readFile(packed));
    // Flip a byte at the end of the data section: it belongs to the last tensor's payload.
    const { writeFile } = await import('node:fs/promises');
    const header = new DataView(bytes.buffer);
    const dataEnd = Number(header.getBigUint64(24, true) + header.getBigUint64(32, true));
    bytes[dataEnd - 1]! ^= 0xff;
    await writeFile(packed, bytes);
    const result = await eqz('validate', packed);
    expect(result.status).toBe(1);
    const last = info.tensors.at(-1).name;
    expect(result.err).toContain(`tensor "${last}"`);
    expect(result.err).toMatch(/ChecksumMismatch.*byte offset \d+/);
  });

  it('refuses bad directions and existing outputs, leaving nothing behind', async () => {
    expect((await eqz('convert', model, '-o', join(dir, 'x.safetensors'), '--lossless')).status).toBe(1);
    const existing = join(dir, 'exists.eqz');
    await eqz('convert', model, '-o', existing, '--lossless');
    const before = (await stat(existing)).mtimeMs;
    expect((await eqz('convert', model, '-o', existing, '--lossless')).status).toBe(1);
    expect((await stat(existing)).mtimeMs).toBe(before);
    const missing = await eqz('convert', join(dir, 'no-such-model'), '-o', join(dir, 'none.eqz'), '--lossless');
    expect(missing.status).toBe(1);
    expect((await readdir(dir)).filter((f) => f.includes('none') || f.includes('.tmp-'))).toEqual([]);
    expect((await eqz('frobnicate')).status).toBe(2);
  });
});
