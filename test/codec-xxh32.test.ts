import { describe, expect, it } from 'vitest';
import { codecReady, initCodec, Xxh32, xxh32 } from '../src/codec/index.js';
import { SeededRandom } from '../src/tensor/synthetic.js';

describe('xxh32 in WASM', () => {
  it('gives the TypeScript digest for long inputs, however they are split', async () => {
    const random = new SeededRandom(1);
    const data = Uint8Array.from({ length: (3 << 20) + 13 }, () => random.nextU32() & 0xff);
    expect(codecReady()).toBe(false); // this file's process has not loaded the codec yet: TypeScript loop
    const expected = [xxh32(data), xxh32(data.subarray(5000)), xxh32(data, 7)];
    await initCodec();
    expect([xxh32(data), xxh32(data.subarray(5000)), xxh32(data, 7)]).toEqual(expected);
    for (const cut of [1, 4095, 4096, 70_001, (1 << 20) + 3]) {
      expect(new Xxh32().update(data.subarray(0, cut)).update(data.subarray(cut)).digest()).toBe(expected[0]);
    }
  });
});
