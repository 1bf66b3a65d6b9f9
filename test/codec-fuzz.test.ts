import { describe, expect, it } from 'vitest';
import * as codec from '../src/codec/index.js';
import { EqzError } from '../src/errors.js';
// @ts-expect-error: plain ESM script without type declarations
import { runFuzz } from '../scripts/fuzz-codec.mjs';

await codec.initCodec();

describe('decoder fuzzing (scripts/fuzz-codec.mjs, a share of its 100k cases)', () => {
  it('answers 2000 mutated streams and planes payloads with EqzError or a bounded decode', () => {
    const result = runFuzz({ ...codec, EqzError }, { cases: 2000, seed: 7 });
    expect(result.failures).toEqual([]);
    const total = Object.values(result.outcomes as Record<string, { rejected: number; decoded: number }>);
    // Most mutations must be caught by the format's checks, not slip through as other symbols.
    const rejected = total.reduce((sum, o) => sum + o.rejected, 0);
    expect(rejected).toBeGreaterThan(1500);
  });
});
