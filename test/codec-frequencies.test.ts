import { describe, expect, it } from 'vitest';
import {
  CHUNK_OVERHEAD_BUDGET, chooseChunkLog2, codedSizeBits, entropyBitsPerSymbol, normalizeFrequencies,
} from '../src/codec/frequencies.js';
import { SeededRandom } from '../src/tensor/synthetic.js';

/** Every way to give `symbols` symbols at least one of `total` slots each: the brute-force optimum. */
function bruteForceBest(counts: number[], total: number): number {
  const present = counts.filter((c) => c > 0);
  let best = Infinity;
  const search = (index: number, left: number, freqs: number[]): void => {
    if (index === present.length - 1) {
      best = Math.min(best, codedSizeBits(present, [...freqs, left]));
      return;
    }
    for (let f = 1; f <= left - (present.length - 1 - index); f++) search(index + 1, left - f, [...freqs, f]);
  };
  search(0, total, []);
  return best;
}

describe('normalizeFrequencies', () => {
  it('matches the brute-force optimum on small alphabets', () => {
    const random = new SeededRandom(3);
    for (let trial = 0; trial < 40; trial++) {
      const symbols = 2 + (trial % 3);
      const counts = Array.from({ length: symbols + 1 }, (_, s) => (s === 1 ? 0 : Math.floor(random.next() ** 3 * 1000)));
      if (counts.filter((c) => c > 0).length < 2) continue;
      const freqs = normalizeFrequencies(counts, 24);
      expect(freqs.reduce((a, b) => a + b, 0)).toBe(24);
      expect(freqs[1]).toBe(0);
      expect(codedSizeBits(counts, freqs)).toBeCloseTo(bruteForceBest(counts, 24), 9);
    }
  });

  it('gives every present symbol a slot, absent ones none, and sums to 4096', () => {
    const counts = new Array<number>(256).fill(0);
    counts[0] = 1e9;
    counts[17] = 1;
    counts[255] = 3;
    const freqs = normalizeFrequencies(counts);
    expect(freqs.reduce((a, b) => a + b, 0)).toBe(4096);
    expect([freqs[17], freqs[255]]).toEqual([1, 1]);
    expect(freqs[0]).toBe(4094);
    expect(freqs.filter((f) => f > 0).length).toBe(3);
    expect(normalizeFrequencies([0, 0]).every((f) => f === 0)).toBe(true);
    expect(normalizeFrequencies([0, 5])).toEqual(Uint32Array.of(0, 4096));
    expect(() => normalizeFrequencies(new Array<number>(10).fill(1), 8)).toThrow(RangeError);
  });

  it('costs less than proportional rounding, and within 0.1 % of the entropy on Gaussian-shaped codes', () => {
    const random = new SeededRandom(8);
    const heavy = new Array<number>(256).fill(0);
    const gaussian = new Array<number>(256).fill(0);
    for (let i = 0; i < 1_000_000; i++) {
      heavy[Math.min(255, Math.floor(Math.abs(random.studentT(4)) * 6))]!++;
      gaussian[128 + Math.round(random.normal() * 3)]!++;
    }
    for (const counts of [heavy, gaussian]) {
      const freqs = normalizeFrequencies(counts);
      const n = counts.reduce((a, b) => a + b, 0);
      const naive = counts.map((c) => (c > 0 ? Math.max(1, Math.round((c * 4096) / n)) : 0));
      // Bring the naive table to 4096 through its largest entry.
      naive[naive.indexOf(Math.max(...naive))]! += 4096 - naive.reduce((a, b) => a + b, 0);
      expect(codedSizeBits(counts, freqs)).toBeLessThan(codedSizeBits(counts, naive));
    }
    const n = 1_000_000;
    expect(codedSizeBits(gaussian, normalizeFrequencies(gaussian)) / (entropyBitsPerSymbol(gaussian) * n)).toBeLessThan(1.001);
  });
});

describe('codedSizeBits and entropyBitsPerSymbol', () => {
  it('compute −Σ c·log2(f/M) and the order-0 entropy', () => {
    expect(codedSizeBits([3, 1], [3072, 1024])).toBeCloseTo(3 * Math.log2(4 / 3) + 2, 12);
    expect(codedSizeBits([1, 1], [4096, 0])).toBe(Infinity);
    expect(entropyBitsPerSymbol([5, 5, 5, 5])).toBe(2);
    expect(entropyBitsPerSymbol([])).toBe(0);
  });
});

describe('chooseChunkLog2', () => {
  it('keeps the 132 bytes per chunk within 0.81 % of the coded size, clamped to 12..24 and to the stream', () => {
    expect(chooseChunkLog2(1e9, 2)).toBe(16);
    expect(chooseChunkLog2(1e9, 3)).toBe(16);
    expect(chooseChunkLog2(1e9, 4)).toBe(15);
    expect(chooseChunkLog2(1e9, 8)).toBe(14);
    expect(chooseChunkLog2(1e9, 0.01)).toBe(24);
    expect(chooseChunkLog2(1e9, 0)).toBe(24);
    expect(chooseChunkLog2(5000, 2)).toBe(13);
    expect(chooseChunkLog2(10, 2)).toBe(12);
    for (const bits of [0.5, 1, 2, 3, 4, 6]) {
      const chunk = 2 ** chooseChunkLog2(1e9, bits);
      expect(132 / ((chunk * bits) / 8)).toBeLessThanOrEqual(CHUNK_OVERHEAD_BUDGET);
      expect(132 / ((chunk / 2) * bits / 8)).toBeGreaterThan(CHUNK_OVERHEAD_BUDGET);
    }
  });
});
