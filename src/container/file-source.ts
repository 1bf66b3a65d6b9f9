/** A {@link ByteSource} over a local file (Node only): positioned reads, nothing else held in memory. */
import { open } from 'node:fs/promises';
import { EqzError } from '../errors.js';
import type { ByteSource } from './sources.js';

/** Largest single read: Node's positioned reads take at most 2 GiB − 1 bytes. */
const MAX_READ = 1 << 30;

export async function fileSource(path: string): Promise<ByteSource> {
  const handle = await open(path, 'r').catch((error: Error) => {
    throw new EqzError('Io', `cannot open: ${error.message}`, { file: path });
  });
  const { size } = await handle.stat();
  return {
    size,
    async read(offset, length) {
      if (offset < 0 || length < 0 || offset + length > size) {
        throw new EqzError('OutOfBounds', `read of ${length} bytes at ${offset} is outside the ${size}-byte file`, { file: path, offset });
      }
      const out = new Uint8Array(length);
      for (let done = 0; done < length;) {
        const { bytesRead } = await handle.read(out, done, Math.min(MAX_READ, length - done), offset + done);
        if (bytesRead === 0) throw new EqzError('Truncated', 'file ended early (changed while reading?)', { file: path, offset: offset + done });
        done += bytesRead;
      }
      return out;
    },
    close: () => handle.close(),
  };
}
