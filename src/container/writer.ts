/**
 * Streams an .eqz container to disk (Node only). Payloads are appended one tensor at a time, so a model is never
 * held in memory whole; the table goes at the end and the header is patched last. Everything is written to a
 * temporary file beside the target and renamed into place only by {@link EqzWriter.finish}: a run that fails or is
 * interrupted leaves no .eqz behind.
 */
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { EqzError } from '../errors.js';
import { temporaryPath, trackTemporary } from '../io/temporary.js';
import { xxh32, Xxh32 } from '../codec/xxh32.js';
import { DEFAULT_ALIGNMENT, FORMAT_VERSION, HEADER_SIZE, LIMITS, MAX_ALIGNMENT, MIN_ALIGNMENT, type Dtype, type Encoding } from './format.js';
import { encodeHeader, encodeTable, numElements, type Metadata, type TensorEntry } from './table.js';

export interface EqzWriterOptions {
  /** Payload alignment, a power of two (default 256: WebGPU's minStorageBufferOffsetAlignment). */
  alignment?: number;
}

export interface TensorToWrite {
  name: string;
  dtype: Dtype;
  shape: number[];
  encoding: Encoding;
  /** The payload, possibly in several pieces written back to back. */
  payload: Uint8Array | readonly Uint8Array[];
}

export class EqzWriter {
  private readonly entries: TensorEntry[] = [];
  private readonly names = new Set<string>();
  /** Next free offset relative to the data section. */
  private dataEnd = 0;
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly temporaryPath: string,
    private readonly handle: FileHandle,
    private readonly alignment: number,
    private readonly untrack: () => void,
  ) {}

  static async create(path: string, options: EqzWriterOptions = {}): Promise<EqzWriter> {
    const alignment = options.alignment ?? DEFAULT_ALIGNMENT;
    if (alignment < MIN_ALIGNMENT || alignment > MAX_ALIGNMENT || (alignment & (alignment - 1)) !== 0) {
      throw new Error(`alignment ${alignment} must be a power of two between ${MIN_ALIGNMENT} and ${MAX_ALIGNMENT}`);
    }
    const temporary = temporaryPath(path);
    const handle = await open(temporary, 'wx');
    return new EqzWriter(path, temporary, handle, alignment, trackTemporary(temporary));
  }

  private get dataOffset(): number {
    return Math.ceil(HEADER_SIZE / this.alignment) * this.alignment;
  }

  /** Appends one tensor's payload at the next aligned offset. */
  async addTensor(tensor: TensorToWrite): Promise<TensorEntry> {
    if (this.closed) throw new Error('EqzWriter: addTensor after finish/abort');
    if (this.names.has(tensor.name)) throw new EqzError('Malformed', 'duplicate tensor name', { tensor: tensor.name });
    if (tensor.shape.length > LIMITS.maxRank || numElements(tensor.shape) > LIMITS.maxElements) {
      throw new EqzError('LimitExceeded', `shape [${tensor.shape.join(', ')}] exceeds the format's limits`, { tensor: tensor.name });
    }
    const pieces = tensor.payload instanceof Uint8Array ? [tensor.payload] : tensor.payload;
    const offset = Math.ceil(this.dataEnd / this.alignment) * this.alignment;
    const hash = new Xxh32();
    let position = this.dataOffset + offset;
    for (const piece of pieces) {
      hash.update(piece);
      for (let done = 0; done < piece.length;) {
        const { bytesWritten } = await this.handle.write(piece, done, piece.length - done, position);
        done += bytesWritten;
        position += bytesWritten;
      }
    }
    const size = position - this.dataOffset - offset;
    const entry: TensorEntry = {
      name: tensor.name, dtype: tensor.dtype, encoding: tensor.encoding, shape: [...tensor.shape], offset, size, checksum: hash.digest(),
    };
    this.entries.push(entry);
    this.names.add(tensor.name);
    this.dataEnd = offset + size;
    return entry;
  }

  /** Writes table and header, flushes to disk and renames the file into place. */
  async finish(metadata: Metadata): Promise<TensorEntry[]> {
    if (this.closed) throw new Error('EqzWriter: finish after finish/abort');
    try {
      const table = encodeTable({ metadata, tensors: this.entries });
      const tableOffset = this.dataOffset + this.dataEnd;
      await this.handle.write(table, 0, table.length, tableOffset);
      const header = encodeHeader({
        version: FORMAT_VERSION, alignment: this.alignment, dataOffset: this.dataOffset, dataSize: this.dataEnd,
        tableOffset, tableSize: table.length, tableChecksum: xxh32(table),
      });
      // Zero the gap between header and data section explicitly (a sparse hole reads as zeros too).
      const headerBlock = new Uint8Array(this.dataOffset);
      headerBlock.set(header);
      await this.handle.write(headerBlock, 0, headerBlock.length, 0);
      await this.handle.truncate(tableOffset + table.length);
      await this.handle.sync();
      await this.handle.close();
      this.closed = true;
      await rename(this.temporaryPath, this.path);
      this.untrack();
      return this.entries;
    } catch (error) {
      await this.abort();
      throw error;
    }
  }

  /** Closes and deletes the temporary file; nothing is left behind. */
  async abort(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await this.handle.close().catch(() => undefined);
    }
    await rm(this.temporaryPath, { force: true });
    this.untrack();
  }
}
