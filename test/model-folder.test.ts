import { cp, mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EqzError, type EqzErrorCode } from '../src/errors.js';
import { MAX_SMALL_FILE_BYTES, openModel, writeModel, type ModelFileLayout, type ModelSource } from '../src/io/model-folder.js';
import { SafetensorsFile, SafetensorsWriter } from '../src/io/safetensors.js';

const DATA = fileURLToPath(new URL('../../shared/data/', import.meta.url));
const STORIES = join(DATA, 'models/stories260K');
const FOLDERS = [STORIES, join(DATA, 'models/babyllama-tok105')];
const SINGLE_FILES = ['silero-vad-v5', 'movenet-lightning-f16', 'ppocrv4-rec-f32'].map((n) => join(DATA, `weights/${n}.safetensors`));

function expectSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  const same = actual.length === expected.length && Buffer.compare(actual, expected) === 0;
  expect(same, `${what}: ${actual.length} bytes vs ${expected.length}`).toBe(true);
}

async function expectEqzError(pending: Promise<unknown>, code: EqzErrorCode, pattern?: RegExp): Promise<EqzError> {
  const error = await pending.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(EqzError);
  expect((error as EqzError).code).toBe(code);
  if (pattern) expect((error as EqzError).message).toMatch(pattern);
  return error as EqzError;
}

/** Checks two opened models hold the same layout, small files and tensor bytes. */
async function expectSameModel(actual: ModelSource, expected: ModelSource): Promise<void> {
  expect(actual.files).toEqual(expected.files);
  expect([...actual.smallFiles.keys()]).toEqual([...expected.smallFiles.keys()]);
  for (const [name, bytes] of expected.smallFiles) expectSameBytes(actual.smallFiles.get(name)!, bytes, name);
  expect(actual.tensors).toEqual(expected.tensors);
  for (const [i, tensor] of expected.tensors.entries()) {
    expectSameBytes(await actual.readTensor(actual.tensors[i]!), await expected.readTensor(tensor), tensor.name);
  }
}

/** Copies a model through writeModel, reading each tensor from `source` when asked. */
function copyModel(source: ModelSource, out: string, options?: { overwrite?: boolean }): Promise<void> {
  const byName = new Map(source.tensors.map((t) => [t.name, t]));
  return writeModel(out, source.files, source.smallFiles, source.tensors, (name) => source.readTensor(byName.get(name)!), options);
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eqz-model-folder-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Writes stories260K as `shardCount` shards (tensors split in file order) plus its small files; optionally an index. */
async function shardStories(folder: string, shardCount: number, withIndex: boolean): Promise<string[]> {
  await mkdir(folder, { recursive: true });
  const source = await SafetensorsFile.open(join(STORIES, 'model.safetensors'));
  const perShard = Math.ceil(source.tensors.length / shardCount);
  const names: string[] = [];
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shardCount; s++) {
    const name = `model-${String(s + 1).padStart(5, '0')}-of-${String(shardCount).padStart(5, '0')}.safetensors`;
    const tensors = source.tensors.slice(s * perShard, (s + 1) * perShard);
    const writer = await SafetensorsWriter.create(join(folder, name), tensors, source.metadata);
    for (const tensor of tensors) {
      await writer.writeTensor(tensor.name, await source.read(tensor));
      weightMap[tensor.name] = name;
    }
    await writer.finish();
    names.push(name);
  }
  await source.close();
  for (const entry of await readdir(STORIES)) {
    if (!entry.endsWith('.safetensors')) await cp(join(STORIES, entry), join(folder, entry));
  }
  if (withIndex) {
    const totalSize = (await readFile(join(STORIES, 'model.safetensors'))).length;
    await writeFile(join(folder, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2));
  }
  return names;
}

describe('openModel', () => {
  it('opens a Hugging Face folder: its weight file, every other file byte-exact, and every tensor', async () => {
    for (const folder of FOLDERS) {
      const model = await openModel(folder);
      const file = await SafetensorsFile.open(join(folder, 'model.safetensors'));
      try {
        expect(model.format).toBe('hf-folder');
        expect(model.files).toEqual([{ name: 'model.safetensors', metadata: file.metadata, tensors: file.tensors.map((t) => t.name) }]);
        const others = (await readdir(folder)).filter((n) => !n.endsWith('.safetensors')).sort();
        expect([...model.smallFiles.keys()]).toEqual(others);
        for (const name of others) expectSameBytes(model.smallFiles.get(name)!, new Uint8Array(await readFile(join(folder, name))), name);
        expect(model.tensors).toEqual(
          file.tensors.map(({ name, dtype, shape, byteLength }) => ({ name, dtype, shape, byteLength, file: 'model.safetensors' })),
        );
        for (const [i, tensor] of file.tensors.entries()) {
          expectSameBytes(await model.readTensor(model.tensors[i]!), await file.read(tensor), tensor.name);
        }
      } finally {
        await model.close();
        await file.close();
      }
    }
  });

  it('opens a single safetensors file with no small files', async () => {
    const model = await openModel(SINGLE_FILES[0]!);
    const file = await SafetensorsFile.open(SINGLE_FILES[0]!);
    expect(model.format).toBe('safetensors');
    expect(model.files).toEqual([{ name: 'silero-vad-v5.safetensors', metadata: file.metadata, tensors: file.tensors.map((t) => t.name) }]);
    expect(model.smallFiles.size).toBe(0);
    expect(new Set(model.tensors.map((t) => t.dtype))).toEqual(new Set(['F32', 'I64']));
    await model.close();
    await file.close();
  });

  it('keeps nested small files, skips dot-folders, and names the files of a folder with none', async () => {
    const folder = join(dir, 'nested');
    await cp(STORIES, folder, { recursive: true });
    await mkdir(join(folder, 'docs/extra'), { recursive: true });
    await writeFile(join(folder, 'docs/extra/notes.md'), 'nested');
    await mkdir(join(folder, '.git/objects'), { recursive: true });
    await writeFile(join(folder, '.git/objects/pack'), 'tooling');
    const model = await openModel(folder);
    expect(model.smallFiles.get('docs/extra/notes.md')).toEqual(new TextEncoder().encode('nested'));
    expect([...model.smallFiles.keys()].some((k) => k.startsWith('.git'))).toBe(false);
    await model.close();
    await rm(join(folder, 'model.safetensors'));
    await expectEqzError(openModel(folder), 'Malformed', /no \*\.safetensors .*config\.json/);
  });

  it('opens shards with an index and shards without one, in shard order', async () => {
    const original = await openModel(STORIES);
    for (const withIndex of [true, false]) {
      const folder = join(dir, `sharded-${withIndex}`);
      const shards = await shardStories(folder, 2, withIndex);
      const model = await openModel(folder);
      expect(model.files.map((f) => f.name)).toEqual(shards);
      expect(model.files.flatMap((f) => f.tensors)).toEqual(original.files[0]!.tensors);
      expect(model.smallFiles.has('model.safetensors.index.json')).toBe(withIndex);
      expect(model.tensors.map(({ file: _file, ...rest }) => rest)).toEqual(original.tensors.map(({ file: _file, ...rest }) => rest));
      for (const [i, tensor] of original.tensors.entries()) {
        expectSameBytes(await model.readTensor(model.tensors[i]!), await original.readTensor(tensor), tensor.name);
      }
      await model.close();
    }
    await original.close();
  });

  describe('rejects inconsistent folders', () => {
    let folder: string;
    let shards: string[];
    let index: { weight_map: Record<string, string> };
    beforeAll(async () => {
      folder = join(dir, 'hostile');
      shards = await shardStories(folder, 2, true);
      index = JSON.parse(await readFile(join(folder, 'model.safetensors.index.json'), 'utf8'));
    });
    const writeIndex = (value: unknown) => writeFile(join(folder, 'model.safetensors.index.json'), JSON.stringify(value));
    const restoreIndex = () => writeIndex(index);

    it('an index that disagrees with its shards', async () => {
      const [first, second] = Object.keys(index.weight_map);
      const cases: [Record<string, string>, RegExp, string?][] = [
        [{ ...index.weight_map, [first!]: 'model-00009-of-00009.safetensors' }, /not in the folder/, first],
        [Object.fromEntries(Object.entries(index.weight_map).filter(([name]) => name !== second)), /lacks it/, second],
        [{ ...index.weight_map, [first!]: shards[1]! }, /puts it in/, first],
        [{ ...index.weight_map, 'no.such.tensor': shards[0]! }, /no such tensor/, 'no.such.tensor'],
      ];
      for (const [weightMap, pattern, tensor] of cases) {
        await writeIndex({ weight_map: weightMap });
        const error = await expectEqzError(openModel(folder), 'Malformed', pattern);
        expect(error.tensor).toBe(tensor);
        expect(error.file).toBe(join(folder, 'model.safetensors.index.json'));
      }
      await writeIndex({ metadata: {} });
      await expectEqzError(openModel(folder), 'Malformed', /no weight_map/);
      await writeFile(join(folder, 'model.safetensors.index.json'), '{"weight_map": ');
      await expectEqzError(openModel(folder), 'Malformed', /not valid JSON/);
      await restoreIndex();
    });

    it('a weight file beside an index that does not list it', async () => {
      const stray = join(folder, 'consolidated.safetensors');
      const writer = await SafetensorsWriter.create(stray, [{ name: 'other', dtype: 'U8', shape: [1] }]);
      await writer.writeTensor('other', Uint8Array.of(1));
      await writer.finish();
      const error = await expectEqzError(openModel(folder), 'Malformed', /not listed/);
      expect(error.file).toBe(stray);
      await rm(stray);
    });

    it('the same tensor name in two shards', async () => {
      await rm(join(folder, 'model.safetensors.index.json'));
      const source = await SafetensorsFile.open(join(folder, shards[0]!));
      const tensor = source.tensors[3]!;
      const duplicate = join(folder, 'model-extra.safetensors');
      const writer = await SafetensorsWriter.create(duplicate, [tensor]);
      await writer.writeTensor(tensor.name, await source.read(tensor));
      await writer.finish();
      await source.close();
      const error = await expectEqzError(openModel(folder), 'Malformed', /also used in/);
      expect(error.tensor).toBe(tensor.name);
      await rm(duplicate);
      await restoreIndex();
    });

    it('a corrupt shard, naming it', async () => {
      const shard = join(folder, shards[1]!);
      const bytes = await readFile(shard);
      await truncate(shard, bytes.length - 1);
      const error = await expectEqzError(openModel(folder), 'Truncated');
      expect(error.file).toBe(shard);
      await writeFile(shard, bytes);
    });

    it('non-weight files too large to keep, listing them all', async () => {
      for (const name of ['pytorch_model.bin', 'sub/optimizer.pt']) {
        await mkdir(join(folder, 'sub'), { recursive: true });
        await writeFile(join(folder, name), '');
        await truncate(join(folder, name), MAX_SMALL_FILE_BYTES + 1);
      }
      await expectEqzError(openModel(folder), 'LimitExceeded', /pytorch_model\.bin \(67108865 bytes\), sub\/optimizer\.pt/);
      await rm(join(folder, 'sub'), { recursive: true });
      await rm(join(folder, 'pytorch_model.bin'));
      const model = await openModel(folder);
      await model.close();
    });
  });

  it('reports a missing path as Io', async () => {
    await expectEqzError(openModel(join(dir, 'absent')), 'Io');
  });
});

describe('writeModel', () => {
  it('round-trips both Hugging Face folders byte for byte', async () => {
    for (const [i, folder] of FOLDERS.entries()) {
      const source = await openModel(folder);
      const out = join(dir, `folder-copy-${i}`);
      await copyModel(source, out);
      const copy = await openModel(out);
      await expectSameModel(copy, source);
      expectSameBytes(
        new Uint8Array(await readFile(join(out, 'model.safetensors'))).subarray(-1000),
        new Uint8Array(await readFile(join(folder, 'model.safetensors'))).subarray(-1000),
        'data tail',
      );
      await copy.close();
      await source.close();
    }
  });

  it('round-trips single files, keeping dtypes and metadata', async () => {
    for (const [i, path] of SINGLE_FILES.entries()) {
      const source = await openModel(path);
      const out = join(dir, `single-copy-${i}.safetensors`);
      await copyModel(source, out);
      const copy = await openModel(out);
      expect(copy.files[0]!.metadata).toEqual(source.files[0]!.metadata);
      expect({ ...copy.files[0]!, name: '' }).toEqual({ ...source.files[0]!, name: '' });
      expect(copy.tensors.map(({ file: _f, ...t }) => t)).toEqual(source.tensors.map(({ file: _f, ...t }) => t));
      for (const [j, tensor] of source.tensors.entries()) {
        expectSameBytes(await copy.readTensor(copy.tensors[j]!), await source.readTensor(tensor), tensor.name);
      }
      await copy.close();
      await source.close();
    }
  });

  it('round-trips a sharded folder (shards, index and small files), and merges it into one file', async () => {
    const folder = join(dir, 'sharded-source');
    await shardStories(folder, 3, true);
    const source = await openModel(folder);
    expect(source.files).toHaveLength(3);
    const out = join(dir, 'sharded-copy');
    await copyModel(source, out);
    const copy = await openModel(out);
    await expectSameModel(copy, source);
    await copy.close();

    const merged = join(dir, 'merged.safetensors');
    await copyModel(source, merged);
    const single = await openModel(merged);
    expect(single.files).toEqual([{ name: 'merged.safetensors', metadata: source.files[0]!.metadata, tensors: source.files.flatMap((f) => f.tensors) }]);
    for (const [i, tensor] of source.tensors.entries()) {
      expectSameBytes(await single.readTensor(single.tensors[i]!), await source.readTensor(tensor), tensor.name);
    }
    await single.close();
    await source.close();
  });

  it('produces tensors one at a time in layout order', async () => {
    const folder = join(dir, 'order-source');
    await shardStories(folder, 2, true);
    const source = await openModel(folder);
    const byName = new Map(source.tensors.map((t) => [t.name, t]));
    const asked: string[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    await writeModel(join(dir, 'order-copy'), source.files, source.smallFiles, source.tensors, async (name) => {
      asked.push(name);
      maxInFlight = Math.max(maxInFlight, ++inFlight);
      const bytes = await source.readTensor(byName.get(name)!);
      inFlight--;
      return bytes;
    });
    expect(maxInFlight).toBe(1);
    expect(asked).toEqual(source.files.flatMap((f) => f.tensors));
    await source.close();
  });

  it('with an empty layout writes one model.safetensors in tensor order', async () => {
    const tensors = [
      { name: 'b', dtype: 'U8' as const, shape: [2] },
      { name: 'a', dtype: 'I16' as const, shape: [1] },
    ];
    const out = join(dir, 'no-layout');
    await writeModel(out, [], new Map([['config.json', Uint8Array.of(123, 125)]]), tensors, (name) =>
      name === 'b' ? Uint8Array.of(1, 2) : Uint8Array.of(3, 4),
    );
    const model = await openModel(out);
    expect(model.files).toEqual([{ name: 'model.safetensors', metadata: null, tensors: ['b', 'a'] }]);
    expect(await model.readTensor(model.tensors[1]!)).toEqual(Uint8Array.of(3, 4));
    await model.close();
  });

  describe('replaces outputs only when asked, and leaves nothing behind on failure', () => {
    let source: ModelSource;
    let parent: string;
    beforeAll(async () => {
      source = await openModel(STORIES);
      parent = await mkdtemp(join(dir, 'outputs-'));
    });
    afterAll(async () => {
      await source.close();
    });
    const siblings = async () => (await readdir(parent)).sort();

    it('an existing non-empty folder is kept unless overwrite is set', async () => {
      const out = join(parent, 'existing');
      await mkdir(out);
      await writeFile(join(out, 'keep.txt'), 'mine');
      await expectEqzError(copyModel(source, out), 'Io', /overwrite/);
      expect(await readdir(out)).toEqual(['keep.txt']);
      await copyModel(source, out, { overwrite: true });
      expect(await siblings()).toEqual(['existing']);
      const copy = await openModel(out);
      await expectSameModel(copy, source);
      await copy.close();
      await rm(out, { recursive: true });
    });

    it('an existing empty folder or absent path is simply filled', async () => {
      const out = join(parent, 'empty');
      await mkdir(out);
      await copyModel(source, out);
      expect((await readdir(out)).sort()).toEqual([...source.smallFiles.keys(), 'model.safetensors'].sort());
      await rm(out, { recursive: true });
    });

    it('an existing single file is kept unless overwrite is set', async () => {
      const out = join(parent, 'existing.safetensors');
      await writeFile(out, 'mine');
      await expectEqzError(copyModel(source, out), 'Io', /overwrite/);
      expect(await readFile(out, 'utf8')).toBe('mine');
      await copyModel(source, out, { overwrite: true });
      const copy = await openModel(out);
      expect(copy.tensors).toHaveLength(source.tensors.length);
      await copy.close();
      await rm(out);
    });

    it('a failing or short produce leaves neither output nor temporary files', async () => {
      const byName = new Map(source.tensors.map((t) => [t.name, t]));
      let calls = 0;
      const failing = async (name: string) => {
        if (++calls === 10) throw new Error('decoder failed');
        return source.readTensor(byName.get(name)!);
      };
      for (const out of [join(parent, 'failed'), join(parent, 'failed.safetensors')]) {
        calls = 0;
        await expect(writeModel(out, source.files, source.smallFiles, source.tensors, failing)).rejects.toThrow('decoder failed');
        expect(await siblings()).toEqual([]);
      }
      const short = async (name: string) => (await source.readTensor(byName.get(name)!)).subarray(1);
      await expectEqzError(writeModel(join(parent, 'short'), source.files, source.smallFiles, source.tensors, short), 'Malformed');
      expect(await siblings()).toEqual([]);
    });

    it('unsafe file names and layouts that do not place every tensor exactly once', async () => {
      const file = source.files[0]!;
      const byName = new Map(source.tensors.map((t) => [t.name, t]));
      const produce = (name: string) => source.readTensor(byName.get(name)!);
      const out = join(parent, 'bad');
      const badLayouts: [ModelFileLayout[], RegExp][] = [
        [[{ ...file, name: '../escape.safetensors' }], /not a safe relative path/],
        [[{ ...file, name: '/abs/model.safetensors' }], /not a safe relative path/],
        [[{ ...file, name: 'a//model.safetensors' }], /not a safe relative path/],
        [[{ ...file, name: 'model.bin' }], /does not end in/],
        [[{ ...file, tensors: file.tensors.slice(1) }], /in no file/],
        [[{ ...file, tensors: [...file.tensors, 'unknown'] }], /unknown tensor/],
        [[file, { ...file, name: 'second.safetensors', tensors: file.tensors.slice(0, 1) }], /twice/],
      ];
      for (const [layout, pattern] of badLayouts) {
        await expectEqzError(writeModel(out, layout, source.smallFiles, source.tensors, produce), 'Malformed', pattern);
      }
      const badSmallFiles: [string, RegExp][] = [
        ['../../etc/passwd', /not a safe relative path/],
        ['sub/../../x', /not a safe relative path/],
        ['a\\b', /not a safe relative path/],
        ['', /not a safe relative path/],
        ['x.safetensors', /read back as weights/],
        ['model.safetensors/inner', /also the folder of/],
        ['model.safetensors', /(also the folder of|same name|read back as weights)/],
      ];
      for (const [name, pattern] of badSmallFiles) {
        const smallFiles = new Map([[name, Uint8Array.of(1)]]);
        await expectEqzError(writeModel(out, source.files, smallFiles, source.tensors, produce), 'Malformed', pattern);
      }
      expect(await siblings()).toEqual([]);
    });
  });
});
