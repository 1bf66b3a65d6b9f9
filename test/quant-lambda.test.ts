import { beforeAll, describe, expect, it } from 'vitest';
import { entropyBitsPerSymbol } from '../src/codec/frequencies.js';
import {
  detectSuperWeights, findLambdaForBits, lambdaForTotalBits, measureRateCurve, quantizeTensor, REFERENCE_PRESETS,
  SEARCH_PRESETS, type PresetBits, type QuantizeOptions,
} from '../src/quant/index.js';
import { histogram } from '../src/quant/rate.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { toFloat32 } from '../src/tensor/dtype.js';
import { syntheticWeights } from '../src/tensor/synthetic.js';
import { SHARED_DATA } from './helpers.js';

interface Matrix {
  name: string;
  rows: number;
  cols: number;
  weights: Float32Array;
}

/** The *_proj linears of stories260K. */
async function storiesLinears(): Promise<Matrix[]> {
  const file = await SafetensorsFile.open(`${SHARED_DATA}models/stories260K/model.safetensors`);
  try {
    const linears: Matrix[] = [];
    for (const entry of file.tensors) {
      if (!/_proj\.weight$/.test(entry.name)) continue;
      linears.push({ name: entry.name, rows: entry.shape[0]!, cols: entry.shape[1]!, weights: toFloat32(await file.read(entry), entry.dtype) });
    }
    return linears;
  } finally {
    await file.close();
  }
}

/** Order-0 entropy of the codes over all `linears`, per parameter (how the presets are stated). */
async function codeEntropy(linears: Matrix[], options: QuantizeOptions): Promise<number> {
  let bits = 0;
  let params = 0;
  for (const { rows, cols, weights, name } of linears) {
    const result = await quantizeTensor(weights, rows, cols, { ...options, name });
    bits += entropyBitsPerSymbol(histogram(result.codes)) * weights.length;
    params += weights.length;
  }
  return bits / params;
}

describe('rates on stories260K', () => {
  let linears: Matrix[];
  beforeAll(async () => {
    linears = await storiesLinears();
  });

  for (const nominal of [4, 3, 2] as PresetBits[]) {
    it(`reach ${nominal} bits/param of codes within ±0.3 with either optimizer's ${nominal}-bit λ preset`, async () => {
      const { lambda, lr } = REFERENCE_PRESETS[nominal];
      const reference = await codeEntropy(linears, { format: 'fp8-e4m3', optimizer: 'reference', lambda, lr, scaleDtype: 'BF16' });
      expect(Math.abs(reference - nominal)).toBeLessThanOrEqual(0.3);
      const search = await codeEntropy(linears, { format: 'int8', optimizer: 'rd-search', lambda: SEARCH_PRESETS[nominal], scaleDtype: 'BF16' });
      expect(Math.abs(search - nominal)).toBeLessThanOrEqual(0.3);
    });
  }

  it('hit a --bits target within ±0.1 per tensor (stored bits)', async () => {
    for (const name of ['model.layers.1.mlp.up_proj.weight', 'model.layers.3.self_attn.q_proj.weight']) {
      const { rows, cols, weights } = linears.find((linear) => linear.name === name)!;
      for (const target of [2, 3, 4]) {
        const found = await findLambdaForBits(weights, rows, cols, target, { format: 'fp8-e4m3', optimizer: 'rd-search', scaleDtype: 'BF16' });
        expect(Math.abs(found.result.bitsPerParam - target)).toBeLessThanOrEqual(0.1);
      }
    }
  });

  it('hit a model-wide --bits target within ±0.1 with one λ from the tensors\' rate curves', async () => {
    const options: QuantizeOptions = { format: 'int8', optimizer: 'rd-search', scaleDtype: 'BF16' };
    const subset = linears.slice(0, 14);
    const curves = [];
    for (const { rows, cols, weights } of subset) curves.push(await measureRateCurve(weights, rows, cols, options));
    const lambda = lambdaForTotalBits(curves, 3);
    let bits = 0;
    let params = 0;
    for (const { rows, cols, weights } of subset) {
      const result = await quantizeTensor(weights, rows, cols, { ...options, lambda });
      bits += result.bitsPerParam * weights.length;
      params += weights.length;
    }
    expect(Math.abs(bits / params - 3)).toBeLessThanOrEqual(0.1);
  });
});

describe('super-weight detection', () => {
  it('flags a matrix with one weight hundreds of deviations out, not heavy-tailed or outlier-row matrices', () => {
    const rows = 256;
    const cols = 1024;
    const weights = syntheticWeights(rows, cols, { seed: 40, outlierRows: 0.05 });
    const plain = detectSuperWeights(weights, rows, cols);
    expect(plain.outlier).toBe(false);
    expect(plain.maxAbsZ).toBeGreaterThan(5);
    weights[77 * cols + 501] = -300 * 0.02;
    const flagged = detectSuperWeights(weights, rows, cols);
    expect(flagged.outlier).toBe(true);
    expect(flagged.index).toBe(77 * cols + 501);
  });

  it('finds none in the shared LMs', async () => {
    for (const { rows, cols, weights } of await storiesLinears()) expect(detectSuperWeights(weights, rows, cols).outlier).toBe(false);
  });
});
