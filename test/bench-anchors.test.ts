import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  fitHqq, hqq, HQQ_DEFAULT_SOLVER, NF4_LEVELS, nearestNf4Code, nf4, nvfp4Absmax, roundToNearest,
} from '../bench/anchors.js';
import { initCodec } from '../src/codec/index.js';
import { evaluate, referenceEvaluator } from '../src/eval/evaluate.js';
import { readTokenFile } from '../src/eval/tokens.js';
import { weightSourceFromModelFolder, type ClosableWeightSource } from '../src/eval/weight-sources.js';
import type { WeightSource } from '../src/eval/weights.js';
import { SeededRandom, syntheticWeights } from '../src/tensor/synthetic.js';
import { SHARED_DATA } from './helpers.js';

beforeAll(() => initCodec());

function studentT(count: number, seed: number): Float32Array {
  const random = new SeededRandom(seed);
  return Float32Array.from({ length: count }, () => 0.02 * random.studentT(5));
}

function meanAbsoluteError(weights: Float32Array, decoded: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < weights.length; i++) sum += Math.abs(decoded[i]! - weights[i]!);
  return sum / weights.length;
}

describe('NF4', () => {
  it('builds the NormalFloat levels QLoRA publishes (appendix E)', () => {
    const published = [
      -1, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
      -0.09105003625154495, 0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
      0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1,
    ];
    expect(NF4_LEVELS.length).toBe(16);
    NF4_LEVELS.forEach((level, code) => expect(level).toBeCloseTo(published[code]!, 6));
  });

  it('stores levels × absmax exactly, one F32 absmax per block of 64', () => {
    const random = new SeededRandom(3);
    const absMaxes = [0.5, 0.03125, 2];
    const codes = Uint8Array.from({ length: 3 * 64 }, (_, i) => (i % 64 === 0 ? 15 : Math.floor(random.next() * 16)));
    const weights = Float32Array.from(codes, (code, i) => NF4_LEVELS[code]! * absMaxes[Math.floor(i / 64)]!);
    const result = nf4(weights);
    expect(result.codes).toEqual(codes);
    expect(result.decoded).toEqual(weights);
    expect(result.parameterBits).toBe(3 * 32);
  });

  it('casts every weight to the nearest level of its block, and a block of zeros to code 7', () => {
    const weights = studentT(1000, 11);
    weights.fill(0, 128, 192);
    const result = nf4(weights);
    for (let i = 0; i < weights.length; i++) {
      const block = Math.floor(i / 64) * 64;
      const absMax = weights.subarray(block, Math.min(block + 64, weights.length)).reduce((m, w) => Math.max(m, Math.abs(w)), 0);
      const error = Math.abs(result.decoded[i]! - weights[i]!);
      for (const level of NF4_LEVELS) expect(error).toBeLessThanOrEqual(Math.abs(Math.fround(level * absMax) - weights[i]!) + 1e-9);
    }
    expect([...result.codes.subarray(128, 192)].every((code) => code === 7)).toBe(true);
    expect(result.parameterBits).toBe(32 * Math.ceil(1000 / 64));
    expect(nearestNf4Code(-1)).toBe(0);
    expect(nearestNf4Code(0.99)).toBe(15);
  });
});

describe('HQQ', () => {
  const weights = studentT(64 * 96, 5);

  it('its proximal solver lowers the mean absolute error below its min–max start', () => {
    for (const bits of [4, 3]) {
      const fit = fitHqq(weights, bits, 64);
      expect(fit.error).toBeLessThan(fit.startError * 0.97);
      const start = fitHqq(weights, bits, 64, { ...HQQ_DEFAULT_SOLVER, iterations: 0 });
      expect(start.error).toBe(fit.startError);
    }
  });

  it('keeps that gain after rounding scale and zero to FP16, with levels in [0, 2^bits − 1]', () => {
    for (const bits of [4, 3]) {
      const optimized = hqq(weights, bits);
      const minMax = hqq(weights, bits, 64, { ...HQQ_DEFAULT_SOLVER, iterations: 0 });
      expect(meanAbsoluteError(weights, optimized.decoded)).toBeLessThan(meanAbsoluteError(weights, minMax.decoded));
      expect(Math.max(...optimized.codes)).toBeLessThanOrEqual(2 ** bits - 1);
      expect(new Set(optimized.codes).size).toBeGreaterThan(2 ** bits - 3);
      expect(optimized.parameterBits).toBe(96 * 32);
    }
  });

  it('groups runs of 64 consecutive weights, a shorter last group included', () => {
    const ragged = studentT(100, 9);
    const result = hqq(ragged, 4);
    expect(result.parameterBits).toBe(2 * 32);
    // A group's min and max land on (or, through FP16 rounding, next to) its end levels.
    expect(Math.min(...result.codes.subarray(64))).toBeLessThanOrEqual(1);
    expect(Math.max(...result.codes.subarray(64))).toBeGreaterThanOrEqual(14);
  });
});

describe('round to nearest and NVFP4 absmax', () => {
  it('round to nearest has one BF16 scale per group of a row, per channel when the group covers the row', () => {
    const weights = syntheticWeights(8, 300, { seed: 2 });
    expect(roundToNearest(weights, 8, 300, 4, Infinity).parameterBits).toBe(8 * 16);
    expect(roundToNearest(weights, 8, 300, 4, 128).parameterBits).toBe(8 * 3 * 16);
    const perGroup = roundToNearest(weights, 8, 300, 3, 128);
    expect(Math.max(...perGroup.codes.map((code) => Math.abs((code << 24) >> 24)))).toBe(3);
  });

  it('NVFP4 pads a row to whole blocks of 16 without changing how its own weights are coded', () => {
    const rows = 6;
    const weights = syntheticWeights(rows, 40, { seed: 8 });
    const padded = new Float32Array(rows * 48);
    for (let r = 0; r < rows; r++) padded.set(weights.subarray(r * 40, (r + 1) * 40), r * 48);
    const ragged = nvfp4Absmax(weights, rows, 40);
    const whole = nvfp4Absmax(padded, rows, 48);
    for (let r = 0; r < rows; r++) {
      expect(ragged.decoded.subarray(r * 40, (r + 1) * 40)).toEqual(whole.decoded.subarray(r * 48, r * 48 + 40));
      expect(ragged.codes.subarray(r * 40, (r + 1) * 40)).toEqual(whole.codes.subarray(r * 48, r * 48 + 40));
    }
    expect(ragged.storedBits).toBe(whole.storedBits);
    expect(ragged.parameterBits).toBe(rows * 3 * 8 + 32);
    expect(meanAbsoluteError(weights, ragged.decoded)).toBeGreaterThan(0);
  });
});

describe('referenceEvaluator', () => {
  let original: ClosableWeightSource;
  afterAll(() => original?.close());

  it('scores a model against kept reference logits exactly as evaluate with --ref does', async () => {
    original = await weightSourceFromModelFolder(`${SHARED_DATA}models/stories260K`);
    const { tokens, ctx } = await readTokenFile(`${SHARED_DATA}text/tinystories-sample.stories260K.tokens.u16`);
    const quantized: WeightSource = {
      ...original,
      names: () => original.names(),
      shape: (name) => original.shape(name),
      async loadF32(name) {
        const values = await original.loadF32(name);
        return name.endsWith('_proj.weight') ? nf4(values).decoded : values;
      },
    };
    const evaluator = await referenceEvaluator(original, tokens, { ctx, maxWindows: 3 });
    const kept = await evaluator.evaluate(quantized);
    const direct = await evaluate(quantized, tokens, { ctx, ref: original, backend: 'cpu', maxWindows: 3 });
    const alone = await evaluate(original, tokens, { ctx, backend: 'cpu', maxWindows: 3 });
    expect(kept.klMean).toBeGreaterThan(0);
    expect(kept.klMean).toBe(direct.klMean);
    expect(kept.perplexity).toBe(direct.perplexity);
    expect(kept.tokens).toBe(3 * 256);
    expect(evaluator.reference.perplexity).toBe(alone.perplexity);
    expect(evaluator.reference.klMean).toBeUndefined();
  });
});
