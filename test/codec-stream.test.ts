import { beforeAll, describe, expect, it } from 'vitest';
import {
  decodeStream, encodeStream, initCodec, parseRansLayout, parseStreamHeader, STREAM_HEADER_SIZE,
} from '../src/codec/index.js';
import { codecRuntime } from '../src/codec/wasm.js';
import { SeededRandom } from '../src/tensor/synthetic.js';

beforeAll(initCodec);

/** `count` symbols, geometric-ish with mean about `spread` (0: all zero), capped to `max`. */
function skewed(count: number, spread: number, seed: number, max = 255): Uint8Array {
  const random = new SeededRandom(seed);
  const out = new Uint8Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.min(max, Math.floor(-Math.log(1 - random.next()) * spread));
  return out;
}

function uniform(count: number, seed: number, alphabet = 256): Uint8Array {
  const random = new SeededRandom(seed);
  return Uint8Array.from({ length: count }, () => random.nextU32() % alphabet);
}

/** Index of the first difference between two byte arrays (−1: equal); toEqual is too slow for millions. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

function roundTrip(symbols: Uint8Array, options: Parameters<typeof encodeStream>[1] = {}): Uint8Array {
  const stream = encodeStream(symbols, options);
  const decoded = decodeStream(stream);
  expect(decoded.byteLength).toBe(stream.length);
  expect(firstDifference(decoded.symbols, symbols)).toBe(-1);
  return stream;
}

describe('coded stream round trips', () => {
  it('codes sizes around lane, row and chunk boundaries, forced to rANS', () => {
    for (const count of [1, 2, 31, 32, 33, 63, 64, 65, 4095, 4096, 4097, 8191, 8192, 8193, 3 * 4096 + 17]) {
      const stream = roundTrip(skewed(count, 3, count), { mode: 'rans', chunkLog2: 12 });
      const header = parseStreamHeader(stream);
      expect(header.mode).toBe('rans');
      expect(parseRansLayout(stream, header).chunkCount).toBe(Math.ceil(count / 4096));
    }
  });

  it('codes random and skewed data at several chunk sizes, including both chunk_log2 limits', () => {
    for (const chunkLog2 of [12, 13, 17, 24]) {
      roundTrip(skewed(100_003, 2, chunkLog2), { mode: 'rans', chunkLog2 });
      roundTrip(uniform(50_001, chunkLog2), { mode: 'rans', chunkLog2 });
    }
  });

  it('splits a stream longer than 2^24 symbols into chunks at chunk_log2 24', () => {
    const symbols = skewed(2 ** 24 + 1000, 1.5, 5);
    const stream = roundTrip(symbols, { mode: 'rans', chunkLog2: 24 });
    expect(parseRansLayout(stream).chunkCount).toBe(2);
  });

  it('codes a single repeated symbol with no words, in any number of chunks', () => {
    for (const count of [1, 33, 4096 * 3 + 5]) {
      const stream = roundTrip(new Uint8Array(count).fill(201), { mode: 'rans', chunkLog2: 12 });
      const layout = parseRansLayout(stream);
      expect(layout.frequencies[201]).toBe(4096);
      expect(layout.wordStarts[layout.chunkCount]).toBe(0);
    }
    // Automatic mode: a million copies of one byte take a header, a table and one chunk's states.
    const stream = roundTrip(new Uint8Array(1 << 20).fill(7));
    expect(stream.length).toBe(STREAM_HEADER_SIZE + 36 + 132);
  });

  it('stores all 256 symbols uniform in auto mode, and still codes them when forced', () => {
    const symbols = uniform(1 << 16, 3);
    const auto = roundTrip(symbols);
    expect(parseStreamHeader(auto).mode).toBe('stored');
    expect(auto.length).toBe(STREAM_HEADER_SIZE + (1 << 16));
    const forced = roundTrip(symbols, { mode: 'rans' });
    expect(forced.length).toBeGreaterThan(auto.length);
  });

  it('picks rANS when it is smaller and stored when it is not', () => {
    const skew = skewed(100_000, 1, 9);
    const auto = roundTrip(skew);
    const stored = roundTrip(skew, { mode: 'stored' });
    const rans = roundTrip(skew, { mode: 'rans' });
    expect(parseStreamHeader(auto).mode).toBe('rans');
    expect(firstDifference(auto, rans)).toBe(-1);
    expect(rans.length).toBeLessThan(stored.length);
    // Tiny inputs: 132 bytes of states cost more than the symbols.
    for (const count of [0, 1, 31, 100]) expect(parseStreamHeader(roundTrip(skewed(count, 1, count))).mode).toBe('stored');
  });

  it('codes nibble streams stored (low nibble first) and with rANS', () => {
    for (const count of [0, 1, 2, 3, 4095, 10_001]) {
      const symbols = skewed(count, 2, count, 15);
      const stored = roundTrip(symbols, { symbolBits: 4, mode: 'stored' });
      expect(stored.length).toBe(STREAM_HEADER_SIZE + ((Math.ceil(count / 2) + 3) & ~3));
      if (count >= 2) expect(stored[STREAM_HEADER_SIZE]).toBe(symbols[0]! | (symbols[1]! << 4));
      if (count > 0) roundTrip(symbols, { symbolBits: 4, mode: 'rans', chunkLog2: 12 });
    }
    const rans = encodeStream(skewed(10_000, 1, 1, 15), { symbolBits: 4, mode: 'rans' });
    expect(parseRansLayout(rans).frequencies.length).toBe(16);
    expect(() => encodeStream(Uint8Array.of(1, 16), { symbolBits: 4 })).toThrow(/InvalidValue/);
  });

  it('decodes into a caller array and reports the stream length when more bytes follow', () => {
    const symbols = skewed(50_000, 2, 4);
    const stream = encodeStream(symbols);
    const followed = new Uint8Array(stream.length + 12);
    followed.set(stream);
    const into = new Uint8Array(60_000);
    const decoded = decodeStream(followed, into);
    expect(decoded.byteLength).toBe(stream.length);
    expect(decoded.symbols.buffer).toBe(into.buffer);
    expect(firstDifference(decoded.symbols, symbols)).toBe(-1);
  });

  it('chooses a chunk size by the data: low entropy gets longer chunks', () => {
    const low = parseStreamHeader(encodeStream(skewed(1 << 22, 0.15, 1)));
    const high = parseStreamHeader(encodeStream(skewed(1 << 22, 5, 2)));
    expect(low.chunkLog2).toBeGreaterThan(high.chunkLog2);
    expect(high.chunkLog2).toBeGreaterThanOrEqual(16);
  });

  it('reuses the WASM memory: a repeated call of the same size does not grow it', () => {
    const symbols = skewed(1 << 21, 2, 8);
    const stream = encodeStream(symbols);
    decodeStream(stream);
    const grown = memoryPages();
    for (let i = 0; i < 3; i++) {
      encodeStream(symbols);
      decodeStream(stream);
    }
    expect(memoryPages()).toBe(grown);
  });
});

function memoryPages(): number {
  return codecRuntime().wasm.memory.buffer.byteLength;
}
