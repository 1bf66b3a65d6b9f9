import { beforeAll, describe, expect, it } from 'vitest';
import { encodeStream, initCodec } from '../src/codec/index.js';
import {
  castE4M3, castInt8, codeByte, codeValue, gridOf, indexAtOrBelow, roundScale, scaleOfIndex,
} from '../src/quant/grid.js';
import { codedStreamBytes, codeLengths, histogram } from '../src/quant/rate.js';
import { SeededRandom } from '../src/tensor/synthetic.js';

/** E4M3 from the spec's formula (s eeee mmm, bias 7; e = 0 subnormal; S.1111.111 NaN), written independently. */
function specE4M3(code: number): number {
  const sign = code & 0x80 ? -1 : 1;
  const e = (code >> 3) & 15;
  const m = code & 7;
  if (e === 15 && m === 7) return NaN;
  return e === 0 ? sign * (m / 8) * 2 ** -6 : sign * (1 + m / 8) * 2 ** (e - 7);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** The f32 next to x (x > 0) in direction `step` (±1). */
function nextF32(x: number, step: number): number {
  f32[0] = x;
  u32[0] = u32[0]! + step;
  return f32[0]!;
}

describe('E4M3 codes', () => {
  it('decode every one of the 256 codes as the spec table says', () => {
    for (let code = 0; code < 256; code++) {
      expect(Object.is(codeValue('fp8-e4m3', code), specE4M3(code)) || codeValue('fp8-e4m3', code) === specE4M3(code)).toBe(true);
    }
    expect(codeValue('fp8-e4m3', 0x7e)).toBe(448);
    expect(codeValue('fp8-e4m3', 0x01)).toBe(2 ** -9);
  });

  it('cast every representable value to its own code, negatives to the sign-flipped code, zero to +0', () => {
    for (let code = 0; code < 0x7f; code++) {
      expect(castE4M3(specE4M3(code))).toBe(code);
      expect(castE4M3(-specE4M3(code))).toBe(code === 0 ? 0 : code | 0x80);
    }
    expect(castE4M3(-0)).toBe(0);
  });

  it('round to nearest with ties to the even code between every pair of neighbours', () => {
    for (let code = 0; code < 0x7e; code++) {
      const low = specE4M3(code);
      const high = specE4M3(code + 1);
      const middle = (low + high) / 2;
      expect(Math.fround(middle)).toBe(middle);
      expect(castE4M3(middle)).toBe(code % 2 === 0 ? code : code + 1);
      expect(castE4M3(nextF32(middle, 1))).toBe(code + 1);
      expect(castE4M3(nextF32(middle, -1))).toBe(code);
      expect(castE4M3(-middle)).toBe((code % 2 === 0 ? code : code + 1) | (code === 0 ? 0 : 0x80));
    }
  });

  it('saturate beyond 448 and flush what rounds to zero to +0', () => {
    for (const x of [448, 460, 464, 479.9, 480, 1e6, 3e38]) {
      expect(castE4M3(x)).toBe(0x7e);
      expect(castE4M3(-x)).toBe(0xfe);
    }
    expect(castE4M3(2 ** -10)).toBe(0);
    expect(castE4M3(-(2 ** -10))).toBe(0);
    expect(castE4M3(1e-45)).toBe(0);
    expect(castE4M3(3 * 2 ** -10)).toBe(2);
    expect(castE4M3(2 ** -6 - 2 ** -11)).toBe(0x08);
  });
});

describe('INT8 codes', () => {
  it('round half to even and clamp to [−128, 127]', () => {
    const cases: [number, number][] = [
      [0.5, 0], [1.5, 2], [2.5, 2], [-2.5, -2], [-0.5, 0], [126.5, 126], [127.4, 127], [200, 127], [-128.5, -128], [-300, -128],
    ];
    for (const [x, q] of cases) expect((castInt8(x) << 24) >> 24).toBe(q);
    expect(codeValue('int8', 0x80)).toBe(-128);
    expect(codeValue('int8', codeByte('int8', 5, true))).toBe(-5);
  });
});

describe('magnitude grids', () => {
  it('hold exact midpoints and gaps of the value tables', () => {
    for (const format of ['fp8-e4m3', 'int8'] as const) {
      const grid = gridOf(format);
      for (let i = 0; i < grid.maxIndex; i++) {
        expect(grid.values[i + 1]!).toBeGreaterThan(grid.values[i]!);
        expect(grid.midpoints[i]).toBe((grid.values[i]! + grid.values[i + 1]!) / 2);
        expect(grid.doubledGaps[i]).toBe(2 * (grid.values[i + 1]! - grid.values[i]!));
        expect(codeValue(format, codeByte(format, i, false))).toBe(grid.values[i]);
      }
    }
  });
});

describe('scales', () => {
  it('round to the scale dtype and clamp to [2^-64, 2^64]', () => {
    expect(roundScale(1 + 2 ** -9, 'BF16')).toBe(1);
    expect(roundScale(1 + 3 * 2 ** -9, 'BF16')).toBe(1 + 2 ** -7);
    expect(roundScale(1 + 2 ** -12, 'F16')).toBe(1);
    expect(roundScale(0.1, 'F32')).toBe(Math.fround(0.1));
    expect(roundScale(1e-30, 'BF16')).toBe(2 ** -64);
    expect(roundScale(1e30, 'F32')).toBe(2 ** 64);
    expect(roundScale(1e6, 'F16')).toBe(65504);
  });

  it('index the BF16 grid in order, one step per representable value', () => {
    const k = indexAtOrBelow(0.75);
    expect(scaleOfIndex(k)).toBe(0.75);
    expect(scaleOfIndex(k + 1)).toBe(0.75 + 2 ** -8);
    expect(indexAtOrBelow(0.75 + 2 ** -9)).toBe(k);
  });
});

describe('rates', () => {
  beforeAll(() => initCodec());

  it('estimate the coded stream size of the codec within a few bytes', () => {
    const random = new SeededRandom(3);
    for (const [count, spread] of [[100, 2], [700, 4], [5000, 0.7], [70_000, 3], [300_000, 1.5], [2_000_000, 0.3]] as const) {
      const codes = new Uint8Array(count);
      for (let i = 0; i < count; i++) codes[i] = castInt8(random.normal() * spread);
      const actual = encodeStream(codes).length;
      const estimate = codedStreamBytes(histogram(codes), count);
      expect(Math.abs(estimate - actual)).toBeLessThanOrEqual(8 + actual * 0.001);
    }
  });

  it('give code lengths within 1/32 bit of −log2 of the smoothed probability', () => {
    const counts = new Float64Array(256);
    const random = new SeededRandom(9);
    for (let c = 0; c < 256; c++) counts[c] = c % 3 === 0 ? 0 : Math.floor(random.next() * 1e6);
    const lengths = codeLengths(counts);
    const total = counts.reduce((a, b) => a + b, 0);
    for (let c = 0; c < 256; c++) {
      const ideal = Math.min(24, Math.log2((total + 128) / (counts[c]! + 0.5)));
      expect(Math.abs(lengths[c]! / 32 - ideal)).toBeLessThanOrEqual(1 / 32 + 1e-9);
    }
  });
});
