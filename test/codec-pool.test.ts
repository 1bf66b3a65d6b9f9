import { describe, expect, it } from 'vitest';
import { EqzError } from '../src/errors.js';
import { decodeStream, encodeLossless, encodePlanes, encodeStream, initCodec } from '../src/codec/index.js';
import { CodecPool, splitRange, type PoolReply, type PoolRequest, type PoolWorker } from '../src/codec/pool.js';
import { answer } from '../src/codec/pool-tasks.js';
import { fromFloat32 } from '../src/tensor/dtype.js';
import { SeededRandom, syntheticWeights } from '../src/tensor/synthetic.js';

await initCodec();

// The pool's splitting, dispatch and assembly, with workers that answer on this thread (the real ones run the
// same pool-tasks.ts in worker threads from the built JavaScript; bench/codec.ts runs those).
function inThreadWorker(): PoolWorker {
  const messageListeners: Array<(reply: PoolReply) => void> = [];
  setImmediate(() => messageListeners.forEach((listener) => listener({ id: -1, value: 'ready' })));
  return {
    postMessage(request: PoolRequest) {
      setImmediate(() => {
        const { reply } = answer(request);
        messageListeners.forEach((listener) => listener(reply));
      });
    },
    on(event: 'message' | 'error', listener: never) {
      if (event === 'message') messageListeners.push(listener);
    },
    terminate: async () => 0,
  };
}

function skewed(count: number, seed: number): Uint8Array {
  const random = new SeededRandom(seed);
  return Uint8Array.from({ length: count }, () => Math.min(255, Math.floor(-Math.log(1 - random.next()) * 2)));
}

describe('CodecPool', () => {
  it('splits ranges evenly and never into empty parts', () => {
    expect(splitRange(10, 3)).toEqual([[0, 3], [3, 6], [6, 10]]);
    expect(splitRange(2, 5)).toEqual([[0, 1], [1, 2]]);
    expect(splitRange(0, 4)).toEqual([]);
  });

  it('encodes the same bytes as encodeStream and decodes chunk ranges into one output', async () => {
    const pool = await CodecPool.create(3, inThreadWorker);
    try {
      const symbols = skewed(20 * 4096 + 77, 1);
      const stream = encodeStream(symbols, { chunkLog2: 12 });
      expect(Buffer.from(await pool.encodeStream(symbols, { chunkLog2: 12 })).equals(stream)).toBe(true);
      expect(Buffer.from((await pool.decodeStream(stream)).symbols).equals(symbols)).toBe(true);
      const into = new Uint8Array(symbols.length + 3);
      const decoded = await pool.decodeStream(stream, { into });
      expect(decoded.symbols.buffer).toBe(into.buffer);
      expect(Buffer.from(decoded.symbols).equals(symbols)).toBe(true);
      const [whole, nine] = await pool.decodeStreams([stream, encodeStream(symbols.subarray(0, 9))]);
      expect(Buffer.from(whole!).equals(symbols)).toBe(true);
      expect(Array.from(nine!)).toEqual(Array.from(symbols.subarray(0, 9)));
      const encoded = await pool.encodeStreams([symbols.subarray(0, 5000), symbols.subarray(5000)]);
      expect(encoded.map((s) => decodeStream(s).symbols.length)).toEqual([5000, symbols.length - 5000]);
    } finally {
      await pool.close();
    }
  });

  it('decodes planes in element ranges and encodes lossless payloads as the thread does', async () => {
    const pool = await CodecPool.create(2, inThreadWorker);
    try {
      const bytes = fromFloat32(syntheticWeights(300, 1001, { seed: 2 }), 'BF16');
      const payload = encodePlanes(bytes, 'BF16');
      expect(Buffer.from(await pool.decodePlanes(payload, 'BF16', bytes.length / 2)).equals(bytes)).toBe(true);
      const pooled = await pool.encodeLossless(bytes, 'BF16');
      const local = encodeLossless(bytes, 'BF16');
      expect(pooled.encoding).toBe(local.encoding);
      expect(Buffer.from(pooled.payload).equals(local.payload)).toBe(true);
    } finally {
      await pool.close();
    }
  });

  it('passes EqzErrors on with their code and offset', async () => {
    const pool = await CodecPool.create(2, inThreadWorker);
    try {
      const stream = encodeStream(skewed(10 * 4096, 3), { chunkLog2: 12 });
      const damaged = stream.slice();
      damaged[damaged.length - 40] ^= 0x21;
      const error = await pool.decodeStream(damaged).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(EqzError);
      expect((error as EqzError).code).toBe('CorruptStream');
      expect((error as EqzError).message).toMatch(/^CorruptStream: chunk \d+: .*\(byte offset \d+\)$/);
      await expect(pool.decodeStream(stream, { maxSymbols: 10 })).rejects.toThrow(/LimitExceeded/);
    } finally {
      await pool.close();
    }
  });
});
