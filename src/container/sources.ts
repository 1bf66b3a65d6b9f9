/**
 * Byte sources the reader can parse a file from, with no Node-only imports so browsers and other runtimes can use
 * them: memory, a Blob/File, and HTTP range requests. (A local file: ./file-source.ts, Node only.)
 */
import { EqzError } from '../errors.js';

/** Random access to the bytes of one file. */
export interface ByteSource {
  /** Total length in bytes. */
  readonly size: number;
  /** Exactly `length` bytes at `offset`; rejects when the range is not inside the source. */
  read(offset: number, length: number): Promise<Uint8Array>;
  close?(): Promise<void>;
}

function checkRange(size: number, offset: number, length: number): void {
  if (offset < 0 || length < 0 || offset + length > size) {
    throw new EqzError('OutOfBounds', `read of ${length} bytes at ${offset} is outside the ${size}-byte source`, { offset });
  }
}

/** A source over bytes already in memory (reads return views, not copies). */
export function bufferSource(bytes: Uint8Array | ArrayBuffer): ByteSource {
  const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  return {
    size: data.length,
    read: async (offset, length) => {
      checkRange(data.length, offset, length);
      return data.subarray(offset, offset + length);
    },
  };
}

/** A source over a Blob or File (browsers, Deno, Node ≥ 20). */
export function blobSource(blob: Blob): ByteSource {
  return {
    size: blob.size,
    read: async (offset, length) => {
      checkRange(blob.size, offset, length);
      return new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
    },
  };
}

/**
 * A source over a URL served with HTTP range requests: only the header, the table and the tensors asked for are
 * transferred. The size comes from a HEAD request's Content-Length.
 */
export async function httpSource(url: string, init: RequestInit = {}): Promise<ByteSource> {
  const head = await fetch(url, { ...init, method: 'HEAD' });
  const size = Number(head.headers.get('content-length'));
  if (!head.ok || !Number.isSafeInteger(size)) {
    throw new EqzError('Io', `HEAD ${url} gave status ${head.status} and no usable Content-Length`);
  }
  return {
    size,
    read: async (offset, length) => {
      checkRange(size, offset, length);
      if (length === 0) return new Uint8Array();
      const response = await fetch(url, { ...init, headers: { ...(init.headers as Record<string, string>), Range: `bytes=${offset}-${offset + length - 1}` } });
      const body = new Uint8Array(await response.arrayBuffer());
      if (response.status === 206 && body.length === length) return body;
      if (response.status === 200 && body.length === size) return body.subarray(offset, offset + length);
      throw new EqzError('Io', `range request ${offset}+${length} to ${url} gave status ${response.status} with ${body.length} bytes`, { offset });
    },
  };
}
