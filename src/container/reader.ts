/**
 * Reads an .eqz container from any {@link ByteSource}: on open only the header and the table are read; each
 * tensor's payload is fetched on demand and checked against its checksum. No Node-only imports.
 */
import { EqzError } from '../errors.js';
import { xxh32 } from '../codec/xxh32.js';
import { HEADER_SIZE } from './format.js';
import type { ByteSource } from './sources.js';
import { parseHeader, parseTable, type EqzHeader, type Metadata, type TensorEntry } from './table.js';

export class EqzReader {
  private readonly byName: Map<string, TensorEntry>;

  private constructor(
    readonly source: ByteSource,
    readonly header: EqzHeader,
    readonly metadata: Metadata,
    readonly tensors: readonly TensorEntry[],
  ) {
    this.byName = new Map(tensors.map((tensor) => [tensor.name, tensor]));
  }

  /** Reads and validates the header and the table (see spec §"Decoder checks"). */
  static async open(source: ByteSource): Promise<EqzReader> {
    const headerBytes = await source.read(0, Math.min(HEADER_SIZE, source.size));
    const header = parseHeader(headerBytes, source.size);
    const table = parseTable(await source.read(header.tableOffset, header.tableSize), header);
    return new EqzReader(source, header, table.metadata, table.tensors);
  }

  get version(): number {
    return this.header.version;
  }

  tensor(name: string): TensorEntry | undefined {
    return this.byName.get(name);
  }

  /** Absolute file offset of a tensor's payload. */
  payloadOffset(entry: TensorEntry): number {
    return this.header.dataOffset + entry.offset;
  }

  /** The stored payload of `entry`, its checksum verified. */
  async readPayload(entry: TensorEntry): Promise<Uint8Array> {
    const offset = this.payloadOffset(entry);
    const payload = await this.source.read(offset, entry.size);
    if (xxh32(payload) !== entry.checksum) {
      throw new EqzError('ChecksumMismatch', 'payload checksum does not match', { tensor: entry.name, offset });
    }
    return payload;
  }

  async close(): Promise<void> {
    await this.source.close?.();
  }
}
