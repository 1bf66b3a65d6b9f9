import { beforeAll, describe, expect, it } from 'vitest';
import { decodeStream, encodeStream, initCodec, normalizeFrequencies } from '../src/codec/index.js';
import { SeededRandom } from '../src/tensor/synthetic.js';

// The rANS bitstream checked against spec/eqz.md §6 by code written from the spec's pseudo-code alone, so the
// WASM encoder and decoder cannot agree with each other while both disagreeing with the format.

beforeAll(initCodec);

/** A stream laid out field by field as §6.1–6.5 describe. */
function buildStream(fields: {
  symbolBits: 8 | 4; chunkLog2: number; count: number; freq: number[]; states: number[]; wordCounts: number[]; words: number[];
}): Uint8Array {
  const bytes: number[] = [];
  const u32 = (v: number): void => { bytes.push(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff); };
  const pad = (): void => { while (bytes.length % 4 !== 0) bytes.push(0); };
  const bitmap = new Array<number>((1 << fields.symbolBits) / 8).fill(0);
  fields.freq.forEach((f, s) => { if (f > 0) bitmap[s >> 3]! |= 1 << (s & 7); });
  bytes.push(...bitmap);
  fields.freq.forEach((f) => {
    if (f === 0) return;
    const v = f - 1;
    if (v < 128) bytes.push(v); else bytes.push(0x80 | (v & 0x7f), v >> 7);
  });
  bytes.unshift(...new Array<number>(24).fill(0)); // header placeholder; table padding counts from stream start
  pad();
  fields.states.forEach(u32);
  fields.wordCounts.forEach(u32);
  for (const w of fields.words) bytes.push(w & 0xff, w >> 8);
  pad();
  const out = Uint8Array.from(bytes);
  const view = new DataView(out.buffer);
  out.set([1, fields.symbolBits, 5, fields.chunkLog2]);
  view.setUint32(8, fields.count, true);
  view.setUint32(16, out.length - 24, true);
  return out;
}

/** §6.7 encode_chunk over every chunk, with plain JS numbers (x < 2^32 is exact in a double). */
function referenceEncode(symbols: ArrayLike<number>, freq: number[], chunkLog2: number, symbolBits: 8 | 4): Uint8Array {
  const cum: number[] = [];
  freq.reduce((sum, f, s) => { cum[s] = sum; return sum + f; }, 0);
  const states: number[] = [];
  const wordCounts: number[] = [];
  const words: number[] = [];
  const chunk = 2 ** chunkLog2;
  for (let begin = 0; begin < symbols.length; begin += chunk) {
    const n = Math.min(chunk, symbols.length - begin);
    const x = new Array<number>(32).fill(2 ** 16);
    const stack: number[] = [];
    for (let j = n - 1; j >= 0; j--) {
      const l = j % 32;
      const s = symbols[begin + j]!;
      const f = freq[s]!;
      if (Math.floor(x[l]! / 2 ** 20) >= f) {
        stack.push(x[l]! % 65536);
        x[l] = Math.floor(x[l]! / 65536);
      }
      x[l] = Math.floor(x[l]! / f) * 4096 + (x[l]! % f) + cum[s]!;
    }
    states.push(...x);
    wordCounts.push(stack.length);
    words.push(...stack.reverse());
  }
  return buildStream({ symbolBits, chunkLog2, count: symbols.length, freq, states, wordCounts, words });
}

/** §6.6 decode over every chunk of a stream buildStream's layout describes; throws on any failed check. */
function referenceDecode(stream: Uint8Array): number[] {
  const view = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  const symbolBits = stream[1]!;
  const chunk = 2 ** stream[3]!;
  const count = view.getUint32(8, true);
  const freq: number[] = [];
  let at = 24 + (1 << symbolBits) / 8;
  for (let s = 0; s < 1 << symbolBits; s++) {
    if (((stream[24 + (s >> 3)]! >> (s & 7)) & 1) === 0) { freq.push(0); continue; }
    let v = stream[at++]!;
    if (v & 0x80) v = (v & 0x7f) | (stream[at++]! << 7);
    freq.push(v + 1);
  }
  at = (at + 3) & ~3;
  const chunks = Math.ceil(count / chunk);
  const statesAt = at;
  const countsAt = statesAt + chunks * 128;
  let wordAt = countsAt + chunks * 4;
  const out: number[] = [];
  for (let c = 0; c < chunks; c++) {
    const n = Math.min(chunk, count - c * chunk);
    const x = Array.from({ length: 32 }, (_, l) => view.getUint32(statesAt + (c * 32 + l) * 4, true));
    const words = view.getUint32(countsAt + c * 4, true);
    let p = 0;
    for (let j = 0; j < n; j++) {
      const l = j % 32;
      const slot = x[l]! % 4096;
      let s = 0;
      let cum = 0;
      while (cum + freq[s]! <= slot) cum += freq[s++]!;
      x[l] = freq[s]! * Math.floor(x[l]! / 4096) + slot - cum;
      if (x[l]! < 65536) {
        if (p === words) throw new Error('out of words');
        x[l] = x[l]! * 65536 + view.getUint16(wordAt + 2 * p, true);
        p++;
      }
      out.push(s);
    }
    if (p !== words || x.some((v) => v !== 65536)) throw new Error(`chunk ${c} does not end at the initial state`);
    wordAt += 2 * words;
  }
  return out;
}

describe('rANS bitstream (spec §6)', () => {
  it('decodes the worked example of spec §6.9 (196 bytes, one word)', () => {
    const freq = new Array<number>(256).fill(0);
    freq[0] = 4032;
    freq[1] = 64;
    const stream = buildStream({
      symbolBits: 8, chunkLog2: 12, count: 96, freq,
      states: [266179, ...new Array<number>(31).fill(68608)], wordCounts: [1], words: [0xffc0],
    });
    expect(stream.length).toBe(196);
    // Stream bytes 0x38..0x3F as printed in the spec: varints BF 1F, 3F, padding, then states[0] = 266179.
    expect(Array.from(stream.subarray(0x38, 0x40))).toEqual([0xbf, 0x1f, 0x3f, 0x00, 0xc3, 0x0f, 0x04, 0x00]);
    const expected = Array.from({ length: 96 }, (_, j) => (j % 32 === 0 ? 1 : 0));
    expect(Array.from(decodeStream(stream).symbols)).toEqual(expected);
    expect(referenceDecode(stream)).toEqual(expected);
  });

  it('decodes a hand-computed stream whose last row refills lane 0', () => {
    // freq[0] = 4095, freq[1] = 1 (cum[1] = 4095); 33 symbols: j = 0 and j = 32 are 1 (both lane 0).
    // Encoding lane 0: j = 32: 65536 → 65536·4096 + 4095 = 268439551. j = 0: 268439551 >> 20 = 256 ≥ 1, so push
    // 268439551 & 0xFFFF = 4095 and x = 4096, then x = 4096·4096 + 4095 = 16781311.
    // Lanes 1..31 code one 0: 65536 → (16 << 12) + (65536 mod 4095 = 16) = 65552.
    // Decoding row 0, lane 0: slot 4095 → 1, x = 1·4096 + 0 < 2^16, read 4095: x = 4096·65536 + 4095; row 1:
    // slot 4095 → 1, x = 65536. Lanes 1..31: slot 16 → 0, x = 4095·16 + 16 = 65536.
    const freq = new Array<number>(256).fill(0);
    freq[0] = 4095;
    freq[1] = 1;
    const stream = buildStream({
      symbolBits: 8, chunkLog2: 12, count: 33, freq,
      states: [16781311, ...new Array<number>(31).fill(65552)], wordCounts: [1], words: [4095],
    });
    const expected = Array.from({ length: 33 }, (_, j) => (j === 0 || j === 32 ? 1 : 0));
    expect(Array.from(decodeStream(stream).symbols)).toEqual(expected);
    expect(referenceEncode(expected, freq, 12, 8)).toEqual(stream);
  });

  it('encodes byte for byte as the spec pseudo-code does, and decodes what the pseudo-code encodes', () => {
    const random = new SeededRandom(11);
    for (const [count, chunkLog2, spread, symbolBits] of [
      [2, 12, 1, 8], [31, 12, 2, 8], [4097, 12, 3, 8], [3 * 4096 + 33, 12, 0.5, 8], [20000, 13, 6, 8], [5001, 12, 1, 4],
    ] as const) {
      const symbols = new Uint8Array(count);
      for (let i = 0; i < count; i++) symbols[i] = Math.min((1 << symbolBits) - 1, Math.floor(-Math.log(1 - random.next()) * spread));
      const counts = new Array<number>(1 << symbolBits).fill(0);
      for (const s of symbols) counts[s]!++;
      const freq = Array.from(normalizeFrequencies(counts));
      expect(freq.filter((f) => f > 0).length).toBeGreaterThan(1);
      const reference = referenceEncode(symbols, freq, chunkLog2, symbolBits);
      expect(Array.from(decodeStream(reference).symbols)).toEqual(Array.from(symbols));
      const coded = encodeStream(symbols, { mode: 'rans', chunkLog2, symbolBits });
      expect(coded).toEqual(reference);
      expect(referenceDecode(coded)).toEqual(Array.from(symbols));
    }
  });

  it('divides exactly for every frequency 1..4095 (the encoder replaces x div f by a multiply and shifts)', () => {
    // 4096 symbols with f ones: the optimal table is freq[1] = f exactly. Every lane codes 128 symbols, so
    // states sweep the whole range the division sees.
    const random = new SeededRandom(5);
    for (let f = 1; f < 4096; f++) {
      const symbols = new Uint8Array(4096);
      let placed = 0;
      while (placed < f) {
        const at = random.nextU32() % 4096;
        if (symbols[at] === 0) { symbols[at] = 1; placed++; }
      }
      const freq = new Array<number>(256).fill(0);
      freq[0] = 4096 - f;
      freq[1] = f;
      const coded = encodeStream(symbols, { mode: 'rans', chunkLog2: 12 });
      const reference = referenceEncode(symbols, freq, 12, 8);
      if (coded.length !== reference.length || coded.some((b, i) => b !== reference[i])) {
        expect.fail(`frequency ${f}: the coded stream differs from the spec's`);
      }
    }
  });
});
