import { beforeAll, describe, expect, it } from 'vitest';
import { EqzError } from '../src/errors.js';
import { acquireGpu, type GpuContext, type SoftwareAdapter } from '../src/gpu/device.js';
import { castWithScales } from '../src/quant/result.js';
import { codeValue, indexAtOrBelow, roundScale, scaleOfIndex } from '../src/quant/grid.js';
import { dequantize, quantizeTensor, searchSettings, type QuantizeOptions, type QuantizedTensor } from '../src/quant/index.js';
import { findLambdaForBits } from '../src/quant/lambda.js';
import { bitsPerParam, histogram } from '../src/quant/rate.js';
import { SearchSession, type SearchSettings } from '../src/quant/search.js';
import { SeededRandom, syntheticWeights } from '../src/tensor/synthetic.js';


const base: QuantizeOptions = { format: 'int8', optimizer: 'rd-search', scaleDtype: 'BF16', gpu: null };

/** A matrix with the awkward rows a search must survive, and ordinary heavy-tailed ones. */
function awkwardMatrix(cols: number): { weights: Float32Array; rows: number } {
  const random = new SeededRandom(17);
  const ordinary = 9;
  const rows = ordinary + 7;
  const weights = new Float32Array(rows * cols);
  weights.set(syntheticWeights(ordinary, cols, { seed: 4, outlierRows: 0.2 }));
  const row = (r: number) => weights.subarray(r * cols, (r + 1) * cols);
  // ordinary + 0: all zeros (−0 included).
  row(ordinary).fill(-0, 0, 3);
  row(ordinary + 1).forEach((_, i, a) => { a[i] = 1e-30 * random.normal(); });
  row(ordinary + 2).forEach((_, i, a) => { a[i] = 1e25 * random.normal(); });
  row(ordinary + 3).forEach((_, i, a) => { a[i] = (i % 2 ? 1 : -1) * 2 ** -140 * (1 + i); });
  row(ordinary + 4)[cols >> 1] = -0.75;
  row(ordinary + 5).forEach((_, i, a) => { a[i] = random.normal() * (i % 7 === 0 ? 1e-3 : 1); });
  row(ordinary + 6).forEach((_, i, a) => { a[i] = 2 ** -60 * random.studentT(3); });
  return { weights, rows };
}

/** rd-search's settings as quantizeTensor fills them in (λ 0.01 unless given). */
function settingsOf(options: Partial<QuantizeOptions>): SearchSettings {
  return searchSettings({ ...base, lambda: 0.01, ...options }, options.format === 'fp8-e4m3' ? 'fp8-e4m3' : 'int8');
}

/** Runs the search on `gpu` (split by `bindingLimit` when given) and on the CPU and expects identical results. */
async function expectSameOnBoth(
  weights: Float32Array, rows: number, cols: number, settings: SearchSettings, gpu: GpuContext, bindingLimit?: number,
): Promise<void> {
  const device = await SearchSession.open(weights, rows, cols, gpu, bindingLimit);
  const onDevice = await device.run(settings, true);
  device.release();
  const onCpu = await (await SearchSession.open(weights, rows, cols, null)).run(settings, true);
  expect(Array.from(onDevice.indices)).toEqual(Array.from(onCpu.indices));
  expect(Buffer.from(onDevice.codes!).equals(Buffer.from(onCpu.codes!))).toBe(true);
  expect(Array.from(onDevice.counts)).toEqual(Array.from(onCpu.counts));
}

for (const adapter of ['gles', 'swiftshader'] as SoftwareAdapter[]) {
  describe(`rd-search on the ${adapter} software adapter`, () => {
    let gpu: GpuContext;
    beforeAll(async () => {
      gpu = await acquireGpu('cpu', adapter, { boundsChecks: false });
    });

    it('gives the CPU path\'s codes and scales bit for bit', async () => {
      const { weights, rows } = awkwardMatrix(333);
      const settings: Partial<QuantizeOptions>[] = [
        { format: 'int8', lambda: 0.003 }, { format: 'int8', lambda: 0.2, rdo: false },
        { format: 'fp8-e4m3', lambda: 0 }, { format: 'fp8-e4m3', lambda: 0.03 }, { format: 'fp8-e4m3', lambda: 0.5, scaleDtype: 'F16' },
      ];
      for (const setting of settings) await expectSameOnBoth(weights, rows, 333, settingsOf(setting), gpu);
    });

    it('agrees on a single-column matrix and across row chunks split by the binding limit', async () => {
      const column = syntheticWeights(50, 1, { seed: 8 });
      for (const format of ['int8', 'fp8-e4m3'] as const) await expectSameOnBoth(column, 50, 1, settingsOf({ format }), gpu);
      const weights = syntheticWeights(40, 130, { seed: 12 });
      await expectSameOnBoth(weights, 40, 130, settingsOf({ format: 'fp8-e4m3', lambda: 0.02 }), gpu, 7 * 130 * 4);
    });

    it('names the tensor when a weight is NaN or infinite', async () => {
      const weights = syntheticWeights(4, 8, { seed: 1 });
      for (const bad of [NaN, Infinity, -Infinity]) {
        weights[13] = bad;
        const attempt = quantizeTensor(weights, 4, 8, { ...base, gpu, name: 'blk.0.ffn_down' });
        await expect(attempt).rejects.toThrow(EqzError);
        await expect(attempt).rejects.toMatchObject({ code: 'InvalidValue', tensor: 'blk.0.ffn_down' });
      }
    });
  });
}

describe('rd-search', () => {
  it('gives an all-zero row scale 1 and zero codes, and an all-zero tensor zero error', async () => {
    const { weights, rows } = awkwardMatrix(64);
    const result = await quantizeTensor(weights, rows, 64, { ...base, lambda: 0.01 });
    expect(result.scales[9]).toBe(1);
    expect(result.codes.subarray(9 * 64, 10 * 64).every((code) => code === 0)).toBe(true);
    const zeros = await quantizeTensor(new Float32Array(3 * 5), 3, 5, { ...base, format: 'fp8-e4m3' });
    expect(Array.from(zeros.scales)).toEqual([1, 1, 1]);
    expect(zeros.codes.every((code) => code === 0)).toBe(true);
    expect(zeros.relL2).toBe(0);
  });

  it('stores scales exactly representable in the scale dtype and inside [2^-64, 2^64]', async () => {
    const { weights, rows } = awkwardMatrix(100);
    for (const scaleDtype of ['BF16', 'F16', 'F32'] as const) {
      const result = await quantizeTensor(weights, rows, 100, { ...base, format: 'fp8-e4m3', scaleDtype, lambda: 0.02 });
      for (const scale of result.scales) {
        expect(roundScale(scale, scaleDtype)).toBe(scale);
        expect(scale).toBeGreaterThanOrEqual(2 ** -64);
        expect(scale).toBeLessThanOrEqual(2 ** 64);
      }
    }
  });

  it('rounds to the nearest grid point (ties to even) when λ is 0, whatever scale it picked', async () => {
    const weights = syntheticWeights(20, 257, { seed: 31 });
    for (const format of ['int8', 'fp8-e4m3'] as const) {
      const result = await quantizeTensor(weights, 20, 257, { ...base, format, lambda: 0 });
      expect(Buffer.from(result.codes).equals(Buffer.from(castWithScales(weights, 20, 257, result.scales, format)))).toBe(true);
    }
  });

  it('finds, at λ = 0, scales close to the best BF16 scale of each row (brute force over two octaves)', async () => {
    const rows = 12;
    const cols = 512;
    const weights = syntheticWeights(rows, cols, { seed: 2 });
    for (const format of ['int8', 'fp8-e4m3'] as const) {
      const maxValue = format === 'int8' ? 127 : 448;
      const result = await quantizeTensor(weights, rows, cols, { ...base, format, lambda: 0 });
      let ratioSum = 0;
      for (let r = 0; r < rows; r++) {
        const row = weights.subarray(r * cols, (r + 1) * cols);
        const squaredError = (scale: number) => {
          const codes = castWithScales(row, 1, cols, Float32Array.of(scale), format);
          return row.reduce((sum, w, i) => sum + (codeValue(format, codes[i]!) * scale - w) ** 2, 0);
        };
        const absMax = row.reduce((m, w) => Math.max(m, Math.abs(w)), 0);
        const first = indexAtOrBelow(absMax / maxValue);
        let best = Infinity;
        for (let k = first; k <= first + 256; k++) {
          if (scaleOfIndex(k) * maxValue >= absMax) best = Math.min(best, squaredError(scaleOfIndex(k)));
        }
        const ratio = squaredError(result.scales[r]!) / best;
        expect(ratio).toBeGreaterThanOrEqual(1);
        if (format === 'int8') expect(ratio).toBeLessThan(1.01);
        ratioSum += ratio;
      }
      // E4M3's error is rugged in the scale at high rates; the coarse-to-fine search stays within a few percent.
      expect(ratioSum / rows).toBeLessThan(1.1);
    }
  });

  it('trades error for bits as λ grows, and beats round-to-nearest INT4 per channel at equal bits', async () => {
    const rows = 64;
    const cols = 512;
    const weights = syntheticWeights(rows, cols, { seed: 77 });
    let previous: QuantizedTensor | undefined;
    for (const lambda of [0.002, 0.01, 0.05, 0.25]) {
      const result = await quantizeTensor(weights, rows, cols, { ...base, lambda });
      if (previous) {
        expect(result.bitsPerParam).toBeLessThan(previous.bitsPerParam);
        expect(result.relL2).toBeGreaterThan(previous.relL2);
      }
      previous = result;
    }
    // RTN INT4 (codes −7..7 at absmax/7), stored in the same int8 encoding, versus rd-search at its rate.
    const scales = new Float32Array(rows);
    for (let r = 0; r < rows; r++) {
      const absMax = weights.subarray(r * cols, (r + 1) * cols).reduce((m, w) => Math.max(m, Math.abs(w)), 0);
      scales[r] = roundScale(absMax / 7, 'BF16');
    }
    const rtnCodes = castWithScales(weights, rows, cols, scales, 'int8');
    const decoded = dequantize(rtnCodes, scales, rows, cols, 'int8');
    let error = 0;
    let norm = 0;
    weights.forEach((w, i) => { error += (decoded[i]! - w) ** 2; norm += w * w; });
    const rtnBits = bitsPerParam(histogram(rtnCodes), rows, cols, 'BF16');
    const matched = await findLambdaForBits(weights, rows, cols, rtnBits, base);
    expect(Math.abs(matched.result.bitsPerParam - rtnBits)).toBeLessThan(0.05);
    expect(matched.result.relL2).toBeLessThan(0.9 * Math.sqrt(error / norm));
  });
});
