import { describe, expect, it } from 'vitest';
import { EqzError } from '../src/errors.js';
import { decodeStream, encodeStream, initCodec, parseRansLayout, type DecodeStreamOptions } from '../src/codec/index.js';
import { SeededRandom } from '../src/tensor/synthetic.js';

await initCodec();

function skewed(count: number, seed: number): Uint8Array {
  const random = new SeededRandom(seed);
  return Uint8Array.from({ length: count }, () => Math.min(255, Math.floor(-Math.log(1 - random.next()) * 2)));
}

/** The EqzError code (and offset) decodeStream throws for `bytes`. */
function failure(bytes: Uint8Array, options: DecodeStreamOptions = {}): { code: string; offset?: number } {
  try {
    decodeStream(bytes, options);
  } catch (error) {
    if (error instanceof EqzError) return { code: error.code, offset: error.offset };
    throw error;
  }
  throw new Error('decoded without an error');
}

function edited(stream: Uint8Array, edit: (bytes: Uint8Array, view: DataView) => void): Uint8Array {
  const copy = stream.slice();
  edit(copy, new DataView(copy.buffer));
  return copy;
}

describe('stream validation (spec §6 error classes)', () => {
  const symbols = skewed(3 * 4096 + 100, 1);
  const rans = encodeStream(symbols, { mode: 'rans', chunkLog2: 12 });
  const layout = parseRansLayout(rans);
  const stored = encodeStream(Uint8Array.of(1, 2, 3), { mode: 'stored' });
  const nibbles = encodeStream(Uint8Array.of(1, 2, 3), { mode: 'stored', symbolBits: 4 });

  it('rejects header fields as Malformed', () => {
    expect(failure(rans.subarray(0, 23)).code).toBe('Malformed');
    expect(failure(edited(rans, (b) => { b[0] = 2; }))).toEqual({ code: 'Malformed', offset: 0 });
    expect(failure(edited(rans, (b) => { b[1] = 7; })).code).toBe('Malformed');
    expect(failure(edited(rans, (b) => { b[2] = 4; })).code).toBe('Malformed');
    expect(failure(edited(rans, (b) => { b[3] = 11; })).code).toBe('Malformed');
    expect(failure(edited(rans, (b) => { b[3] = 25; })).code).toBe('Malformed');
    expect(failure(edited(stored, (b) => { b[3] = 12; })).code).toBe('Malformed');
    expect(failure(edited(rans, (b, v) => { v.setUint32(4, 1, true); })).code).toBe('Malformed');
    expect(failure(edited(rans, (b, v) => { v.setUint32(16, v.getUint32(16, true) + 2, true); })).code).toBe('Malformed');
    expect(failure(edited(rans, (b, v) => { v.setUint32(20, 1, true); })).code).toBe('Malformed');
    expect(failure(rans.subarray(0, rans.length - 4))).toEqual({ code: 'Malformed', offset: 16 });
    expect(failure(edited(rans, (b, v) => { v.setUint32(8, 0, true); })).code).toBe('Malformed');
  });

  it('checks the expected symbol width and count, and the caller limits', () => {
    expect(failure(rans, { expectedSymbols: symbols.length + 1 })).toEqual({ code: 'Malformed', offset: 8 });
    expect(failure(rans, { expectedSymbolBits: 4 })).toEqual({ code: 'Malformed', offset: 1 });
    expect(failure(rans, { maxSymbols: symbols.length - 1 }).code).toBe('LimitExceeded');
    expect(failure(rans, { into: new Uint8Array(10) }).code).toBe('LimitExceeded');
    expect(failure(edited(rans, (b, v) => { v.setUint32(12, 0x200000, true); }), { maxSymbols: 2 ** 40 }).code).toBe('LimitExceeded');
    // Offsets count from the payload when the caller says where the stream sits in it.
    expect(failure(rans, { expectedSymbols: 1, streamOffset: 1000 }).offset).toBe(1008);
  });

  it('rejects bad frequency tables as Malformed', () => {
    // Table of this stream: bitmap at 24..55, varints from 56.
    expect(failure(edited(rans, (b) => { b[24] ^= 0x80; })).code).toBe('Malformed'); // symbol 7 toggled
    expect(failure(edited(rans, (b) => { b[56] = (b[56]! + 1) & 0x7f; })).code).toBe('Malformed'); // sum ≠ 4096
    // A two-byte varint with second byte 0 is a non-canonical encoding of a value below 128.
    const twoSymbols = encodeStream(Uint8Array.from({ length: 5000 }, (_, i) => (i % 40 === 0 ? 1 : 0)), { mode: 'rans' });
    const nonCanonical = edited(twoSymbols, (b) => { b[57] = 0x80 | (b[57]! & 0x7f); b[58] = 0; });
    expect(failure(nonCanonical).code).toBe('Malformed');
    expect(failure(edited(twoSymbols, (b) => { b[59] = 1; })).code).toBe('Malformed'); // table padding
  });

  it('checks sizes: states must fit, word counts add up, padding is zero', () => {
    const wordCountAt = layout.wordCountsOffset;
    expect(failure(edited(rans, (b, v) => { v.setUint32(wordCountAt, v.getUint32(wordCountAt, true) + 1, true); })).code).toBe('Malformed');
    expect(failure(edited(rans, (b, v) => { v.setUint32(wordCountAt, 5000, true); }))).toEqual({ code: 'CorruptStream', offset: wordCountAt });
    const claimsMoreChunks = edited(rans, (b, v) => { v.setUint32(8, 4096 * 100, true); });
    expect(failure(claimsMoreChunks).code).toBe('Malformed');
    // The first of these streams with an odd number of words ends in two bytes of padding.
    const oddWords = [1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007].map((n) => encodeStream(skewed(n, n), { mode: 'rans' }))
      .find((stream) => { const l = parseRansLayout(stream); return l.wordStarts[l.chunkCount]! % 2 === 1; })!;
    expect(decodeStream(oddWords).byteLength).toBe(oddWords.length);
    expect(failure(edited(oddWords, (b) => { b[b.length - 1] = 1; })).code).toBe('Malformed');
    expect(failure(edited(stored, (b) => { b[27] = 9; })).code).toBe('Malformed');
    expect(failure(edited(nibbles, (b) => { b[25] |= 0x50; })).code).toBe('Malformed'); // high nibble of the odd last pair
    expect(failure(edited(stored, (b, v) => { v.setUint32(16, 8, true); }), {}).code).toBe('Malformed');
  });

  it('reports rANS data that does not decode exactly as CorruptStream', () => {
    const state = (chunk: number, lane: number): number => layout.statesOffset + (chunk * 32 + lane) * 4;
    expect(failure(edited(rans, (b, v) => { v.setUint32(state(1, 3), 0xffff, true); }))).toEqual({ code: 'CorruptStream', offset: layout.statesOffset + 128 });
    expect(failure(edited(rans, (b, v) => { v.setUint32(state(2, 0), v.getUint32(state(2, 0), true) ^ 0x100, true); })).code).toBe('CorruptStream');
    expect(failure(edited(rans, (b) => { b[layout.wordsOffset + 10] ^= 0x40; })).code).toBe('CorruptStream');
    // Moving one word from chunk 0 to chunk 1 keeps every size consistent but not the data.
    const moved = edited(rans, (b, v) => {
      v.setUint32(layout.wordCountsOffset, layout.wordCounts[0]! - 1, true);
      v.setUint32(layout.wordCountsOffset + 4, layout.wordCounts[1]! + 1, true);
    });
    expect(failure(moved).code).toBe('CorruptStream');
    // A one-symbol stream is valid only with every state at 2^16.
    const constant = encodeStream(new Uint8Array(5000).fill(3), { mode: 'rans' });
    const constantLayout = parseRansLayout(constant);
    expect(failure(edited(constant, (b, v) => { v.setUint32(constantLayout.statesOffset + 8, 65537, true); })).code).toBe('CorruptStream');
  });
});
