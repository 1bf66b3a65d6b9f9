/**
 * safetensors reading and writing.
 *
 * A safetensors file is `u64 n` (little-endian) + `n` bytes of UTF-8 JSON header + a data buffer. The header maps
 * each tensor name to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the data buffer) and may
 * carry `"__metadata__": {string: string}`. Validation follows the reference Rust crate (huggingface/safetensors,
 * `SafeTensors::read_metadata` and `Metadata::validate`): header length ≤ 100 MB and inside the file, header a JSON
 * object starting with '{', tensors sorted by offsets covering the data buffer exactly with no gap or overlap, and
 * each tensor's byte length equal to numel × dtype size, all computed without overflow.
 *
 * The reader never loads the data buffer: it reads the header once and each tensor on demand by positioned reads.
 * The writer streams: the header is fixed up front from the shapes, then tensors are appended one at a time into a
 * temporary file that is renamed into place only when complete.
 */

import { open, rm, rename, type FileHandle } from 'node:fs/promises';
import { DTYPE_SIZE, isDtype, type Dtype } from '../container/format.js';
import { EqzError, type EqzErrorCode } from '../errors.js';
import { temporaryPath, trackTemporary } from './temporary.js';

/** Largest header the reference implementation accepts (its `MAX_HEADER_SIZE`); bounds what a hostile file can make us allocate. */
export const MAX_HEADER_BYTES = 100_000_000;

/** The header length prefix is one little-endian u64. */
const LENGTH_PREFIX_BYTES = 8;

/** Node moves at most 2^31 − 1 bytes per read or write call; tensors beyond that go through in pieces of this size. */
const IO_PIECE_BYTES = 1 << 30;

/** The reference writer pads the header JSON with spaces so the data buffer starts 8-byte aligned. */
const HEADER_ALIGNMENT = 8;

const METADATA_KEY = '__metadata__';

/**
 * safetensors dtypes that eqz does not handle. They are named so that a file using them is reported as
 * UnsupportedDtype ("valid safetensors, not supported") rather than as an unknown dtype.
 */
const DTYPES_EQZ_LACKS: ReadonlySet<string> = new Set([
  'F4', 'F6_E2M3', 'F6_E3M2', 'F8_E8M0', 'F8_E4M3FNUZ', 'F8_E5M2FNUZ', 'C64',
]);

/** One tensor of a safetensors file, as its header describes it. */
export interface SafetensorsTensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Absolute offset of the first data byte in the file (8 + header length + data_offsets[0]). */
  byteOffset: number;
  /** numel × dtype size; equals data_offsets[1] − data_offsets[0]. */
  byteLength: number;
}

/** What a writer needs to know about a tensor before its bytes exist. */
export interface SafetensorsEntry {
  name: string;
  dtype: Dtype;
  shape: readonly number[];
}

/** Where a validation failure is reported: always the file, and the tensor and byte offset when known. */
interface FailureSite {
  file: string;
  tensor?: string;
  offset?: number;
}

function failure(code: EqzErrorCode, message: string, site: FailureSite): EqzError {
  return new EqzError(code, message, site);
}

/** Wraps an operating-system error (ENOENT, ENOSPC, …) as EqzError('Io') naming the file; EqzErrors pass through. */
export function asIoError(error: unknown, file: string, action: string): EqzError {
  if (error instanceof EqzError) return error;
  const reason = error instanceof Error ? error.message : String(error);
  return new EqzError('Io', `cannot ${action}: ${reason}`, { file });
}

/**
 * Byte length of a tensor: numel × dtype size, or an EqzError when a dimension is not a non-negative integer
 * (Malformed) or the product passes 2^53 − 1 (LimitExceeded). Checked before each multiplication so the result is
 * exact; dimensions are folded in order, so a zero after an overflowing prefix does not rescue it (as in the
 * reference crate's `checked_mul` fold).
 */
function tensorByteLength(dtype: Dtype, shape: readonly unknown[], site: FailureSite): number {
  let numel = 1;
  for (const dim of shape) {
    if (typeof dim !== 'number' || !Number.isInteger(dim) || dim < 0) {
      throw failure('Malformed', `shape [${shape.map(String).join(', ')}] has a dimension that is not a non-negative integer`, site);
    }
    if (dim > Number.MAX_SAFE_INTEGER || (dim !== 0 && numel > Math.floor(Number.MAX_SAFE_INTEGER / dim))) {
      throw failure('LimitExceeded', `shape [${shape.join(', ')}] has more than 2^53 - 1 elements`, site);
    }
    numel *= dim;
  }
  const elementSize = DTYPE_SIZE[dtype];
  if (numel > Math.floor(Number.MAX_SAFE_INTEGER / elementSize)) {
    throw failure('LimitExceeded', `shape [${shape.join(', ')}] of ${dtype} needs more than 2^53 - 1 bytes`, site);
  }
  return numel * elementSize;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A header entry after its fields are checked, before the layout is. */
interface ParsedEntry {
  name: string;
  dtype: Dtype;
  shape: number[];
  begin: number;
  end: number;
  byteLength: number;
}

function parseDtype(value: unknown, site: FailureSite): Dtype {
  if (typeof value !== 'string') throw failure('Malformed', 'dtype is not a string', site);
  if (isDtype(value)) return value;
  if (DTYPES_EQZ_LACKS.has(value)) {
    throw failure('UnsupportedDtype', `safetensors dtype ${value} is not supported by eqz`, site);
  }
  throw failure('UnsupportedDtype', `"${value}" is not a safetensors dtype`, site);
}

function parseOffset(value: unknown, site: FailureSite): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw failure('Malformed', `data_offsets value ${JSON.stringify(value)} is not a non-negative integer`, site);
  }
  if (value > Number.MAX_SAFE_INTEGER) {
    throw failure('OutOfBounds', `data_offsets value ${value} lies beyond 2^53 - 1, past the end of any file`, site);
  }
  return value;
}

function parseEntry(name: string, value: unknown, site: FailureSite): ParsedEntry {
  if (!isRecord(value)) throw failure('Malformed', 'header entry is not an object', site);
  const { dtype: rawDtype, shape, data_offsets: offsets } = value;
  if (rawDtype === undefined || shape === undefined || offsets === undefined) {
    const missing = ['dtype', 'shape', 'data_offsets'].filter((field) => value[field] === undefined);
    throw failure('Malformed', `header entry lacks ${missing.join(', ')}`, site);
  }
  const dtype = parseDtype(rawDtype, site);
  if (!Array.isArray(shape)) throw failure('Malformed', 'shape is not an array', site);
  if (!Array.isArray(offsets) || offsets.length !== 2) {
    throw failure('Malformed', 'data_offsets is not a [begin, end] pair', site);
  }
  const byteLength = tensorByteLength(dtype, shape, site);
  return {
    name,
    dtype,
    shape: shape as number[],
    begin: parseOffset(offsets[0], site),
    end: parseOffset(offsets[1], site),
    byteLength,
  };
}

function parseMetadata(value: unknown, site: FailureSite): Record<string, string> | null {
  if (value === null) return null;
  if (!isRecord(value) || !Object.values(value).every((v) => typeof v === 'string')) {
    throw failure('Malformed', `${METADATA_KEY} is not an object of strings`, site);
  }
  return value as Record<string, string>;
}

/** Decodes and checks the header JSON; returns the entries in data-offset order (layout not yet checked). */
function parseHeader(headerBytes: Uint8Array, file: string): { metadata: Record<string, string> | null; entries: ParsedEntry[] } {
  const headerSite = { file, offset: LENGTH_PREFIX_BYTES };
  if (headerBytes[0] !== 0x7b) throw failure('Malformed', "header does not start with '{'", headerSite);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw failure('Malformed', 'header is not valid UTF-8', headerSite);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw failure('Malformed', `header is not valid JSON (${(error as Error).message})`, headerSite);
  }
  if (!isRecord(json)) throw failure('Malformed', 'header is not a JSON object', headerSite);

  let metadata: Record<string, string> | null = null;
  const entries: ParsedEntry[] = [];
  for (const [name, value] of Object.entries(json)) {
    if (name === METADATA_KEY) metadata = parseMetadata(value, headerSite);
    else entries.push(parseEntry(name, value, { ...headerSite, tensor: name }));
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  return { metadata, entries };
}

/**
 * Checks that the sorted entries tile [0, dataSize) exactly. A header that is self-consistent but describes more
 * data than the file holds is a truncated file; anything else that breaks the tiling is Malformed.
 */
function checkLayout(entries: readonly ParsedEntry[], dataStart: number, dataSize: number, file: string): void {
  let expectedBegin = 0;
  for (const entry of entries) {
    const site = { file, tensor: entry.name, offset: dataStart + entry.begin };
    const range = `data_offsets [${entry.begin}, ${entry.end}]`;
    if (entry.end < entry.begin) throw failure('Malformed', `${range} end before they begin`, site);
    if (entry.begin < expectedBegin) {
      throw failure('Malformed', `${range} overlap the previous tensor, which ends at ${expectedBegin}`, site);
    }
    if (entry.begin > expectedBegin) {
      throw failure('Malformed', `${range} leave a gap of ${entry.begin - expectedBegin} bytes after the previous tensor`, site);
    }
    if (entry.end - entry.begin !== entry.byteLength) {
      throw failure(
        'Malformed',
        `${range} span ${entry.end - entry.begin} bytes but shape [${entry.shape.join(', ')}] of ${entry.dtype} needs ${entry.byteLength}`,
        site,
      );
    }
    expectedBegin = entry.end;
  }
  if (expectedBegin > dataSize) {
    const cut = entries.find((entry) => entry.end > dataSize)!;
    throw failure(
      'Truncated',
      `file ends ${expectedBegin - dataSize} bytes early: the header places tensor data up to byte ${dataStart + expectedBegin}, the file has ${dataStart + dataSize}`,
      { file, tensor: cut.name, offset: dataStart + dataSize },
    );
  }
  if (expectedBegin < dataSize) {
    throw failure('Malformed', `${dataSize - expectedBegin} bytes after the last tensor belong to no tensor`, {
      file,
      offset: dataStart + expectedBegin,
    });
  }
}

/** Reads exactly `target.length` bytes at `position`, in pieces Node can move; a short file is Truncated. */
async function readFully(handle: FileHandle, target: Uint8Array, position: number, site: FailureSite): Promise<void> {
  let done = 0;
  while (done < target.length) {
    const want = Math.min(IO_PIECE_BYTES, target.length - done);
    let bytesRead: number;
    try {
      ({ bytesRead } = await handle.read(target, done, want, position + done));
    } catch (error) {
      throw asIoError(error, site.file, 'read');
    }
    if (bytesRead === 0) {
      throw failure('Truncated', `file ended after ${position + done} bytes, ${target.length - done} more expected`, {
        ...site,
        offset: position + done,
      });
    }
    done += bytesRead;
  }
}

/** Writes all of `bytes` at `position`, in pieces Node can move. */
async function writeFully(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const want = Math.min(IO_PIECE_BYTES, bytes.length - done);
    const { bytesWritten } = await handle.write(bytes, done, want, position + done);
    done += bytesWritten;
  }
}

/** An open safetensors file: its validated header, and tensor bytes read on demand. */
export class SafetensorsFile {
  private constructor(
    /** The path the file was opened with. */
    readonly path: string,
    /** The header's `__metadata__` map, or null when the header has none. */
    readonly metadata: Record<string, string> | null,
    /** Every tensor, in data-offset order. */
    readonly tensors: readonly SafetensorsTensor[],
    private readonly handle: FileHandle,
  ) {}

  /**
   * Opens and validates a safetensors file, reading only the length prefix and the header. Every way the file can
   * be bad is an EqzError: Truncated, Malformed, OutOfBounds, LimitExceeded or UnsupportedDtype (or Io when the
   * file cannot be read at all).
   */
  static async open(path: string): Promise<SafetensorsFile> {
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (error) {
      throw asIoError(error, path, 'open');
    }
    try {
      const { metadata, tensors } = await readHeader(handle, path);
      return new SafetensorsFile(path, metadata, tensors, handle);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /**
   * Reads one tensor's bytes. With `into` (at least `tensor.byteLength` long) the bytes land there and the
   * returned view is `into`'s first `byteLength` bytes; otherwise a new array is allocated.
   */
  async read(tensor: SafetensorsTensor, into?: Uint8Array): Promise<Uint8Array> {
    if (into !== undefined && into.length < tensor.byteLength) {
      throw new RangeError(`read(${tensor.name}): target holds ${into.length} bytes, tensor has ${tensor.byteLength}`);
    }
    const target = into ? into.subarray(0, tensor.byteLength) : new Uint8Array(tensor.byteLength);
    await readFully(this.handle, target, tensor.byteOffset, { file: this.path, tensor: tensor.name });
    return target;
  }

  /** Closes the file; the object must not be used afterwards. */
  async close(): Promise<void> {
    await this.handle.close();
  }
}

async function readHeader(
  handle: FileHandle,
  file: string,
): Promise<{ metadata: Record<string, string> | null; tensors: SafetensorsTensor[] }> {
  let fileSize: number;
  try {
    fileSize = (await handle.stat()).size;
  } catch (error) {
    throw asIoError(error, file, 'stat');
  }
  if (fileSize < LENGTH_PREFIX_BYTES) {
    throw failure('Truncated', `file has ${fileSize} bytes, fewer than the 8-byte header length`, { file, offset: 0 });
  }
  const prefix = new Uint8Array(LENGTH_PREFIX_BYTES);
  await readFully(handle, prefix, 0, { file });
  const declared = new DataView(prefix.buffer).getBigUint64(0, true);
  if (declared > BigInt(MAX_HEADER_BYTES)) {
    throw failure('LimitExceeded', `header length ${declared} exceeds the ${MAX_HEADER_BYTES}-byte limit`, { file, offset: 0 });
  }
  const headerLength = Number(declared);
  if (headerLength > fileSize - LENGTH_PREFIX_BYTES) {
    throw failure(
      'Truncated',
      `header length ${headerLength} runs past the end of the file (${fileSize - LENGTH_PREFIX_BYTES} bytes follow the length)`,
      { file, offset: 0 },
    );
  }
  const headerBytes = new Uint8Array(headerLength);
  await readFully(handle, headerBytes, LENGTH_PREFIX_BYTES, { file });
  const { metadata, entries } = parseHeader(headerBytes, file);
  const dataStart = LENGTH_PREFIX_BYTES + headerLength;
  checkLayout(entries, dataStart, fileSize - dataStart, file);
  const tensors = entries.map(({ name, dtype, shape, begin, byteLength }) => ({
    name,
    dtype,
    shape,
    byteOffset: dataStart + begin,
    byteLength,
  }));
  return { metadata, tensors };
}

/**
 * Serializes a header as the reference writer does: compact JSON, `__metadata__` first when present, tensors with
 * consecutive offsets in the given order, spaces appended to a multiple of 8 bytes. Returns the padded header and
 * each tensor's byte length.
 */
function encodeHeader(
  entries: readonly SafetensorsEntry[],
  metadata: Record<string, string> | null,
  file: string,
): { header: Uint8Array; byteLengths: number[] } {
  if (metadata !== null && !Object.values(metadata).every((v) => typeof v === 'string')) {
    throw failure('Malformed', `${METADATA_KEY} values must be strings`, { file });
  }
  const seen = new Set<string>();
  const byteLengths: number[] = [];
  const parts: string[] = metadata === null ? [] : [`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(metadata)}`];
  let offset = 0;
  for (const { name, dtype, shape } of entries) {
    const site = { file, tensor: name };
    if (name === METADATA_KEY || seen.has(name)) {
      throw failure('Malformed', name === METADATA_KEY ? 'tensor name is reserved' : 'duplicate tensor name', site);
    }
    seen.add(name);
    if (!isDtype(dtype)) throw failure('UnsupportedDtype', `"${String(dtype)}" is not a dtype eqz writes`, site);
    const byteLength = tensorByteLength(dtype, shape, site);
    if (offset + byteLength > Number.MAX_SAFE_INTEGER) {
      throw failure('LimitExceeded', 'tensor data would pass 2^53 - 1 bytes', site);
    }
    byteLengths.push(byteLength);
    parts.push(
      `${JSON.stringify(name)}:{"dtype":"${dtype}","shape":[${shape.join(',')}],"data_offsets":[${offset},${offset + byteLength}]}`,
    );
    offset += byteLength;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const paddedLength = Math.ceil(json.length / HEADER_ALIGNMENT) * HEADER_ALIGNMENT;
  if (paddedLength > MAX_HEADER_BYTES) {
    throw failure('LimitExceeded', `header would be ${paddedLength} bytes, over the ${MAX_HEADER_BYTES}-byte limit`, { file });
  }
  const header = new Uint8Array(LENGTH_PREFIX_BYTES + paddedLength).fill(0x20);
  new DataView(header.buffer).setBigUint64(0, BigInt(paddedLength), true);
  header.set(json, LENGTH_PREFIX_BYTES);
  return { header, byteLengths };
}

/**
 * Streaming safetensors writer. `create` fixes the header from names, dtypes and shapes; `writeTensor` must then be
 * called once per entry, in entry order, each call awaited before the next; `finish` fsyncs the temporary file
 * (`<path>.tmp-<pid>-<random>`, same directory) and renames it onto `path`. Any failure — a wrong name or length,
 * a missing tensor at `finish`, an I/O error — deletes the temporary file before the error is thrown, so an
 * unfinished writer leaves nothing behind; `abort` does the same on request.
 */
export class SafetensorsWriter {
  private nextIndex = 0;
  private position: number;
  private busy = false;
  private closed = false;

  private constructor(
    /** Final path of the file. */
    readonly path: string,
    /** Temporary file the data goes to until `finish`. */
    readonly tempPath: string,
    private readonly entries: readonly SafetensorsEntry[],
    private readonly byteLengths: readonly number[],
    headerBytes: number,
    private readonly handle: FileHandle,
    /** Unregisters the temporary file from the interruption cleanup. */
    private readonly untrack: () => void,
  ) {
    this.position = headerBytes;
  }

  /** Validates the entries, writes the header to a new temporary file and returns the writer. */
  static async create(
    path: string,
    entries: readonly SafetensorsEntry[],
    metadata: Record<string, string> | null = null,
  ): Promise<SafetensorsWriter> {
    const { header, byteLengths } = encodeHeader(entries, metadata, path);
    const tempPath = temporaryPath(path);
    let handle: FileHandle;
    try {
      handle = await open(tempPath, 'wx');
    } catch (error) {
      throw asIoError(error, tempPath, 'create');
    }
    const writer = new SafetensorsWriter(path, tempPath, entries, byteLengths, header.length, handle, trackTemporary(tempPath));
    await writer.guard(() => writeFully(handle, header, 0));
    return writer;
  }

  /** Appends the bytes of the next entry; `name` and `bytes.length` must match it. */
  async writeTensor(name: string, bytes: Uint8Array): Promise<void> {
    this.assertOpen();
    this.busy = true;
    try {
      const index = this.nextIndex;
      const expected = this.entries[index];
      if (expected === undefined || expected.name !== name) {
        await this.abort();
        throw failure(
          'Malformed',
          expected === undefined ? 'all tensors are already written' : `expected tensor "${expected.name}" next`,
          { file: this.path, tensor: name },
        );
      }
      if (bytes.length !== this.byteLengths[index]) {
        await this.abort();
        throw failure('Malformed', `got ${bytes.length} bytes, shape and dtype need ${this.byteLengths[index]}`, {
          file: this.path,
          tensor: name,
          offset: this.position,
        });
      }
      await this.guard(() => writeFully(this.handle, bytes, this.position));
      this.position += bytes.length;
      this.nextIndex = index + 1;
    } finally {
      this.busy = false;
    }
  }

  /** Checks every tensor was written, fsyncs, closes and renames the file into place. */
  async finish(): Promise<void> {
    this.assertOpen();
    if (this.nextIndex < this.entries.length) {
      const missing = this.entries.length - this.nextIndex;
      await this.abort();
      throw failure('Truncated', `finish() with ${missing} tensor(s) unwritten, first "${this.entries[this.nextIndex]!.name}"`, {
        file: this.path,
      });
    }
    await this.guard(async () => {
      await this.handle.sync();
      this.closed = true;
      await this.handle.close();
      await rename(this.tempPath, this.path);
      this.untrack();
    });
  }

  /** Closes and deletes the temporary file. Safe to call more than once, and after a failure. */
  async abort(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await this.handle.close().catch(() => undefined);
    }
    await rm(this.tempPath, { force: true });
    this.untrack();
  }

  /** Runs an I/O step; on failure deletes the temporary file and rethrows as EqzError('Io'). */
  private async guard(step: () => Promise<void>): Promise<void> {
    try {
      await step();
    } catch (error) {
      await this.abort();
      throw asIoError(error, this.tempPath, 'write');
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`SafetensorsWriter for ${this.path} is already finished or aborted`);
    if (this.busy) throw new Error(`SafetensorsWriter for ${this.path}: await each writeTensor before the next call`);
  }
}
