/**
 * Model sources: one safetensors file, or a Hugging Face model folder (model.safetensors; shards with a
 * `*.safetensors.index.json`; or several `*.safetensors` without an index) together with its small files
 * (config.json, tokenizer files, README, …), and the inverse: writing such a file or folder back, one tensor at a
 * time, into a temporary sibling that is renamed into place only when everything is written.
 */

import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, readFile, realpath, rename, rm, rmdir, stat } from 'node:fs/promises';
import { basename, join, posix } from 'node:path';
import type { Dtype } from '../container/format.js';
import { EqzError } from '../errors.js';
import { temporaryPath, trackTemporary } from './temporary.js';
import { asIoError, SafetensorsFile, SafetensorsWriter, type SafetensorsEntry, type SafetensorsTensor } from './safetensors.js';

/** Largest non-weight file kept with a model; anything bigger is almost surely another copy of the weights. */
export const MAX_SMALL_FILE_BYTES = 64 * 1024 * 1024;

const WEIGHT_SUFFIX = '.safetensors';
const INDEX_SUFFIX = '.safetensors.index.json';

/** One weight file of a model: enough to recreate it with the same tensors in the same order. */
export interface ModelFileLayout {
  /** Path relative to the model folder, '/'-separated (the file name for a single-file source). */
  name: string;
  /** The file's `__metadata__`, or null when it has none. */
  metadata: Record<string, string> | null;
  /** Tensor names in data-offset order. */
  tensors: string[];
}

/** A tensor of a model and the weight file it lives in. */
export interface ModelTensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  byteLength: number;
  /** `name` of the {@link ModelFileLayout} holding it. */
  file: string;
}

/** An opened model: its layout, small files and tensors; tensor bytes are read on demand. */
export interface ModelSource {
  format: 'safetensors' | 'hf-folder';
  files: ModelFileLayout[];
  /** Every non-weight file of a folder, keyed by '/'-separated relative path, byte-exact (empty for a single file). */
  smallFiles: Map<string, Uint8Array>;
  /** All tensors, file by file in `files` order, each file's in data-offset order. */
  tensors: ModelTensor[];
  /** Reads one tensor's bytes. */
  readTensor(tensor: ModelTensor): Promise<Uint8Array>;
  /** Closes every weight file. */
  close(): Promise<void>;
}

/**
 * The model's config.json as an object, or undefined when it has none or it is not a JSON object (callers that
 * only look for optional settings in it; decoding it is not an error they report).
 */
export function modelConfig(smallFiles: ReadonlyMap<string, Uint8Array>): Record<string, unknown> | undefined {
  const bytes = smallFiles.get('config.json');
  if (!bytes) return undefined;
  try {
    const parsed: unknown = JSON.parse(new TextDecoder().decode(bytes));
    return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed as Record<string, unknown> : undefined;
  } catch {
    return undefined;
  }
}

/** Options of {@link writeModel}. */
export interface WriteModelOptions {
  /** Replace an existing output (a non-empty folder or a file) instead of failing. */
  overwrite?: boolean;
}

interface FoundFile {
  relative: string;
  absolute: string;
  size: number;
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Every regular file under `root` (following symbolic links, as in a Hugging Face cache snapshot), sorted by
 * relative path. Directories whose names start with '.' (.git, .cache, .huggingface) hold tooling state rather
 * than model files and are skipped.
 */
async function listFiles(root: string): Promise<FoundFile[]> {
  const found: FoundFile[] = [];
  const visited = new Set<string>();
  async function walk(directory: string, prefix: string): Promise<void> {
    const real = await realpath(directory);
    if (visited.has(real)) return;
    visited.add(real);
    for (const entry of await readdir(directory, { withFileTypes: true })) {
      const absolute = join(directory, entry.name);
      const relative = prefix + entry.name;
      const info = entry.isSymbolicLink() ? await stat(absolute) : entry;
      if (info.isDirectory()) {
        if (!entry.name.startsWith('.')) await walk(absolute, `${relative}/`);
      } else if (info.isFile()) {
        found.push({ relative, absolute, size: (await stat(absolute)).size });
      }
    }
  }
  try {
    await walk(root, '');
  } catch (error) {
    throw asIoError(error, root, 'list the model folder');
  }
  return found.sort((a, b) => byCodeUnits(a.relative, b.relative));
}

function directoryOf(relative: string): string {
  const slash = relative.lastIndexOf('/');
  return slash < 0 ? '' : relative.slice(0, slash + 1);
}

/**
 * Checks each `*.safetensors.index.json` against the shards: its weight_map must name exactly the tensors of the
 * shards it lists, each under the shard that holds it, and every weight file beside an index must be listed by one.
 */
function checkIndexes(
  smallFiles: ReadonlyMap<string, Uint8Array>,
  shards: ReadonlyMap<string, SafetensorsFile>,
  root: string,
): void {
  const listedByDirectory = new Map<string, Set<string>>();
  for (const [indexName, bytes] of smallFiles) {
    if (!indexName.endsWith(INDEX_SUFFIX)) continue;
    const file = join(root, indexName);
    const malformed = (message: string, tensor?: string) => new EqzError('Malformed', message, { file, tensor });
    let weightMap: unknown;
    try {
      weightMap = (JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) as { weight_map?: unknown }).weight_map;
    } catch (error) {
      throw malformed(`index is not valid JSON (${(error as Error).message})`);
    }
    if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
      throw malformed('index has no weight_map object');
    }
    const directory = directoryOf(indexName);
    const listed = listedByDirectory.get(directory) ?? new Set<string>();
    listedByDirectory.set(directory, listed);
    const mapped = new Map<string, string>();
    for (const [tensor, shardName] of Object.entries(weightMap)) {
      if (typeof shardName !== 'string') throw malformed('weight_map value is not a file name', tensor);
      const shard = posix.normalize(directory + shardName);
      if (!shards.has(shard)) throw malformed(`weight_map names shard "${shardName}", which is not in the folder`, tensor);
      listed.add(shard);
      mapped.set(tensor, shard);
    }
    for (const shard of new Set(mapped.values())) {
      for (const { name } of shards.get(shard)!.tensors) {
        const claimed = mapped.get(name);
        if (claimed !== shard) {
          throw malformed(`tensor is in ${shard} but weight_map ${claimed === undefined ? 'lacks it' : `puts it in ${claimed}`}`, name);
        }
        mapped.delete(name);
      }
    }
    const stray = mapped.entries().next();
    if (!stray.done) {
      const [tensor, shard] = stray.value;
      throw malformed(`weight_map puts the tensor in ${shard}, which has no such tensor`, tensor);
    }
  }
  for (const shard of shards.keys()) {
    const listed = listedByDirectory.get(directoryOf(shard));
    if (listed !== undefined && !listed.has(shard)) {
      throw new EqzError('Malformed', `weight file ${shard} is not listed in the safetensors index beside it`, {
        file: join(root, shard),
      });
    }
  }
}

/** Builds a ModelSource over opened weight files (name → file, in layout order). */
function modelSource(
  format: ModelSource['format'],
  weights: ReadonlyMap<string, SafetensorsFile>,
  smallFiles: Map<string, Uint8Array>,
): ModelSource {
  const located = new Map<string, { file: SafetensorsFile; tensor: SafetensorsTensor }>();
  const files: ModelFileLayout[] = [];
  const tensors: ModelTensor[] = [];
  for (const [name, file] of weights) {
    for (const tensor of file.tensors) {
      const earlier = located.get(tensor.name);
      if (earlier !== undefined) {
        throw new EqzError('Malformed', `tensor name also used in ${earlier.file.path}`, { file: file.path, tensor: tensor.name });
      }
      located.set(tensor.name, { file, tensor });
      tensors.push({ name: tensor.name, dtype: tensor.dtype, shape: tensor.shape, byteLength: tensor.byteLength, file: name });
    }
    files.push({ name, metadata: file.metadata, tensors: file.tensors.map((t) => t.name) });
  }
  return {
    format,
    files,
    smallFiles,
    tensors,
    async readTensor(tensor: ModelTensor): Promise<Uint8Array> {
      const where = located.get(tensor.name);
      if (where === undefined) throw new RangeError(`readTensor: this model has no tensor "${tensor.name}"`);
      return where.file.read(where.tensor);
    },
    async close(): Promise<void> {
      await Promise.all([...weights.values()].map((file) => file.close()));
    },
  };
}

async function openWeightFiles(found: readonly { name: string; absolute: string }[]): Promise<Map<string, SafetensorsFile>> {
  const opened = new Map<string, SafetensorsFile>();
  try {
    for (const { name, absolute } of found) opened.set(name, await SafetensorsFile.open(absolute));
  } catch (error) {
    await Promise.all([...opened.values()].map((file) => file.close()));
    throw error;
  }
  return opened;
}

/**
 * Opens a model: a safetensors file (format 'safetensors') or a model folder (format 'hf-folder'), validating every
 * weight file's header, that tensor names are unique across files and that any index agrees with its shards, and
 * reading every other file (each at most {@link MAX_SMALL_FILE_BYTES}) into `smallFiles`.
 */
export async function openModel(path: string): Promise<ModelSource> {
  let isDirectory: boolean;
  try {
    isDirectory = (await stat(path)).isDirectory();
  } catch (error) {
    throw asIoError(error, path, 'open the model');
  }
  if (!isDirectory) {
    return modelSource('safetensors', await openWeightFiles([{ name: basename(path), absolute: path }]), new Map());
  }

  const found = await listFiles(path);
  const weightFiles = found.filter((f) => f.relative.endsWith(WEIGHT_SUFFIX));
  const others = found.filter((f) => !f.relative.endsWith(WEIGHT_SUFFIX));
  if (weightFiles.length === 0) {
    const seen = others.length ? `; it holds ${others.map((f) => f.relative).join(', ')}` : '';
    throw new EqzError('Malformed', `no *.safetensors weight files in the folder${seen}`, { file: path });
  }
  const oversized = others.filter((f) => f.size > MAX_SMALL_FILE_BYTES);
  if (oversized.length) {
    const list = oversized.map((f) => `${f.relative} (${f.size} bytes)`).join(', ');
    throw new EqzError('LimitExceeded', `non-weight files over ${MAX_SMALL_FILE_BYTES} bytes: ${list}`, { file: path });
  }
  const smallFiles = new Map<string, Uint8Array>();
  for (const { relative, absolute } of others) {
    try {
      smallFiles.set(relative, new Uint8Array(await readFile(absolute)));
    } catch (error) {
      throw asIoError(error, absolute, 'read');
    }
  }
  const weights = await openWeightFiles(weightFiles.map((f) => ({ name: f.relative, absolute: f.absolute })));
  try {
    checkIndexes(smallFiles, weights, path);
    return modelSource('hf-folder', weights, smallFiles);
  } catch (error) {
    await Promise.all([...weights.values()].map((file) => file.close()));
    throw error;
  }
}

/**
 * Rejects a relative path from (possibly hostile) input that could escape the output folder or cannot be created:
 * empty, absolute, with '\\' or NUL, or with an empty, '.' or '..' segment.
 */
function checkRelativePath(name: string, what: string): void {
  const segments = name.split('/');
  const bad =
    name.includes('\\') || name.includes('\0') || segments.some((s) => s === '' || s === '.' || s === '..');
  if (bad) throw new EqzError('Malformed', `${what} "${name}" is not a safe relative path`);
}

/**
 * Checks the layout against the tensors (every tensor in exactly one file, no unknown names) and the file names
 * (safe relative paths; weight files end in .safetensors, small files do not; no name is also another's folder).
 */
function checkOutputPlan(
  files: readonly ModelFileLayout[],
  entries: ReadonlyMap<string, SafetensorsEntry>,
  smallFiles: ReadonlyMap<string, Uint8Array>,
): void {
  const placed = new Set<string>();
  for (const file of files) {
    checkRelativePath(file.name, 'weight file');
    if (!file.name.endsWith(WEIGHT_SUFFIX)) throw new EqzError('Malformed', `weight file "${file.name}" does not end in ${WEIGHT_SUFFIX}`);
    for (const name of file.tensors) {
      if (!entries.has(name)) throw new EqzError('Malformed', `layout of ${file.name} names an unknown tensor`, { tensor: name });
      if (placed.has(name)) throw new EqzError('Malformed', 'tensor is placed in the layout twice', { tensor: name });
      placed.add(name);
    }
  }
  const unplaced = [...entries.keys()].find((name) => !placed.has(name));
  if (unplaced !== undefined) throw new EqzError('Malformed', 'tensor is in no file of the layout', { tensor: unplaced });
  for (const name of smallFiles.keys()) {
    checkRelativePath(name, 'small file');
    if (name.endsWith(WEIGHT_SUFFIX)) throw new EqzError('Malformed', `small file "${name}" would be read back as weights`);
  }
  const names = [...files.map((f) => f.name), ...smallFiles.keys()];
  const all = new Set(names);
  if (all.size !== names.length) throw new EqzError('Malformed', 'two output files have the same name');
  for (const name of names) {
    const segments = name.split('/');
    for (let i = 1; i < segments.length; i++) {
      const folder = segments.slice(0, i).join('/');
      if (all.has(folder)) throw new EqzError('Malformed', `output file "${folder}" is also the folder of "${name}"`);
    }
  }
}

async function writeWeightFile(
  path: string,
  file: ModelFileLayout,
  entries: ReadonlyMap<string, SafetensorsEntry>,
  produce: (name: string) => Uint8Array | Promise<Uint8Array>,
): Promise<void> {
  const writer = await SafetensorsWriter.create(path, file.tensors.map((name) => entries.get(name)!), file.metadata);
  try {
    for (const name of file.tensors) await writer.writeTensor(name, await produce(name));
    await writer.finish();
  } catch (error) {
    await writer.abort();
    throw error;
  }
}

async function writeFileSynced(path: string, bytes: Uint8Array): Promise<void> {
  const handle = await open(path, 'wx');
  try {
    await handle.writeFile(bytes);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** What is at `path`: nothing, an empty folder, or something a write would replace. */
async function existing(path: string): Promise<'none' | 'empty-folder' | 'occupied'> {
  try {
    const info = await lstat(path);
    if (info.isDirectory() && (await readdir(path)).length === 0) return 'empty-folder';
    return 'occupied';
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'none';
    throw asIoError(error, path, 'inspect the output');
  }
}

function occupiedError(path: string): EqzError {
  return new EqzError('Io', 'output already exists and is not an empty folder (use the overwrite option to replace it)', { file: path });
}

function uniqueSuffix(): string {
  return `${process.pid}-${randomBytes(6).toString('hex')}`;
}

/** Moves the finished temporary folder onto `out`, replacing what is there only when `overwrite` allows it. */
async function moveIntoPlace(temp: string, out: string, overwrite: boolean): Promise<void> {
  const state = await existing(out);
  if (state === 'occupied' && !overwrite) throw occupiedError(out);
  if (state === 'empty-folder') await rmdir(out);
  if (state !== 'occupied') {
    await rename(temp, out);
    return;
  }
  const old = `${out}.old-${uniqueSuffix()}`;
  await rename(out, old);
  await rename(temp, out);
  await rm(old, { recursive: true, force: true });
}

/**
 * Writes a model, producing and writing one tensor at a time so that the whole model is never in memory.
 *
 * `outPath` ending in `.safetensors`: one file with every tensor, in the layout's order flattened, carrying the
 * first layout file's metadata; small files are not written (a single file cannot hold them). Otherwise a folder:
 * each layout file recreated with its tensors in order and its metadata, plus every small file, all written into
 * `<outPath>.tmp-<pid>-<random>` and renamed onto `outPath` only once complete. An empty `layout` means one
 * `model.safetensors` holding `tensors` in their given order. An existing output (other than an empty folder) is an
 * error unless `options.overwrite`. On any failure nothing is left behind.
 *
 * Names in `layout` and `smallFiles` may come from a hostile container, so they must be safe relative paths; the
 * layout must place every tensor of `tensors` exactly once, and `produce(name)` must return exactly that tensor's
 * numel × dtype size bytes.
 */
export async function writeModel(
  outPath: string,
  layout: readonly ModelFileLayout[],
  smallFiles: ReadonlyMap<string, Uint8Array>,
  tensors: readonly SafetensorsEntry[],
  produce: (name: string) => Uint8Array | Promise<Uint8Array>,
  options: WriteModelOptions = {},
): Promise<void> {
  const entries = new Map<string, SafetensorsEntry>();
  for (const entry of tensors) {
    if (entries.has(entry.name)) throw new EqzError('Malformed', 'duplicate tensor name', { tensor: entry.name });
    entries.set(entry.name, entry);
  }
  const files = layout.length ? layout : [{ name: 'model.safetensors', metadata: null, tensors: tensors.map((t) => t.name) }];
  checkOutputPlan(files, entries, smallFiles);
  const overwrite = options.overwrite ?? false;
  if (!overwrite && (await existing(outPath)) === 'occupied') throw occupiedError(outPath);

  if (outPath.endsWith(WEIGHT_SUFFIX)) {
    const single = { name: basename(outPath), metadata: files[0]!.metadata, tensors: files.flatMap((f) => f.tensors) };
    await writeWeightFile(outPath, single, entries, produce);
    return;
  }

  const temp = temporaryPath(outPath);
  await fileSystemStep(temp, 'create the output folder', () => mkdir(temp));
  const untrack = trackTemporary(temp);
  try {
    for (const file of files) {
      const path = join(temp, file.name);
      await fileSystemStep(path, 'create the folder of', () => mkdir(join(temp, directoryOf(file.name)), { recursive: true }));
      await writeWeightFile(path, file, entries, produce);
    }
    for (const [name, bytes] of smallFiles) {
      const path = join(temp, name);
      await fileSystemStep(path, 'write', async () => {
        await mkdir(join(temp, directoryOf(name)), { recursive: true });
        await writeFileSynced(path, bytes);
      });
    }
    await fileSystemStep(outPath, 'move the finished model into place', () => moveIntoPlace(temp, outPath, overwrite));
  } catch (error) {
    await rm(temp, { recursive: true, force: true });
    throw error;
  } finally {
    untrack();
  }
}

/** Runs a file-system step, reporting its failure as EqzError('Io') naming `path` (errors of `produce` pass untouched). */
async function fileSystemStep(path: string, action: string, step: () => Promise<unknown>): Promise<void> {
  try {
    await step();
  } catch (error) {
    throw asIoError(error, path, action);
  }
}
