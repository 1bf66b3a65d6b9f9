import { describe, expect, it } from 'vitest';
import { Xxh32, xxh32 } from '../src/codec/xxh32.js';

const text = (s: string) => new TextEncoder().encode(s);

describe('xxh32', () => {
  it('matches the published XXH32 values (xxhsum -H32)', () => {
    expect(xxh32(new Uint8Array())).toBe(0x02cc5d05);
    expect(xxh32(text('abc'))).toBe(0x32d153ff);
    expect(xxh32(text('Nobody inspects the spammish repetition'))).toBe(0xe2293b2f);
  });

  it('gives the same digest however the input is split', () => {
    const data = new Uint8Array(1000).map((_, i) => (i * 131 + 7) & 0xff);
    const whole = xxh32(data);
    for (const cut of [1, 3, 15, 16, 17, 500, 999]) {
      expect(new Xxh32().update(data.subarray(0, cut)).update(data.subarray(cut)).digest()).toBe(whole);
    }
  });
});
