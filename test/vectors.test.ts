import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EqzReader } from '../src/container/reader.js';
import { bufferSource } from '../src/container/sources.js';
import { decodeTensor } from '../src/decode/tensor.js';
import { EqzError } from '../src/errors.js';
import { generateVectors, type Manifest } from '../scripts/make-vectors.js';
import { tempDir } from './helpers.js';

const vectorsDir = new URL('../spec/vectors/', import.meta.url).pathname;
const manifest = JSON.parse(await readFile(join(vectorsDir, 'manifest.json'), 'utf8')) as Manifest;

describe('conformance vectors (spec/vectors/manifest.json)', () => {
  it.each(manifest.valid.map((v) => [v.file, v] as const))('%s decodes to the listed sha256 of every tensor', async (_, vector) => {
    const reader = await EqzReader.open(bufferSource(await readFile(join(vectorsDir, vector.file))));
    expect(reader.tensors.map((t) => t.name)).toEqual(vector.tensors.map((t) => t.name));
    for (const expected of vector.tensors) {
      const entry = reader.tensor(expected.name)!;
      expect({ dtype: entry.dtype, shape: entry.shape, encoding: entry.encoding }).toEqual({ dtype: expected.dtype, shape: expected.shape, encoding: expected.encoding });
      const decoded = await decodeTensor(reader, entry);
      expect(createHash('sha256').update(decoded).digest('hex'), expected.name).toBe(expected.sha256);
    }
  });

  it.each(manifest.invalid.map((v) => [v.file, v] as const))('%s is rejected with its error class', async (_, vector) => {
    const bytes = await readFile(join(vectorsDir, vector.file));
    const error = await (async () => {
      const reader = await EqzReader.open(bufferSource(bytes));
      for (const entry of reader.tensors) await decodeTensor(reader, entry);
    })().then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(EqzError);
    expect((error as EqzError).code).toBe(vector.error);
  });

  it('the committed vectors are exactly what the generator produces', async () => {
    const dir = await tempDir();
    const regenerated = await generateVectors(dir);
    expect(regenerated).toEqual(manifest);
    for (const file of [...manifest.valid, ...manifest.invalid].map((v) => v.file)) {
      expect(await readFile(join(dir, file)), file).toEqual(await readFile(join(vectorsDir, file)));
    }
  });
});
