import { beforeAll, describe, expect, it } from 'vitest';
import { initCodec } from '../src/codec/index.js';
import { acquireGpu, type GpuContext, type SoftwareAdapter } from '../src/gpu/device.js';
import { absMax, absmaxGlobalScale, quantizeNvfp4, Nvfp4SearchSession, type Nvfp4SearchSettings } from '../src/nvfp4/index.js';
import { SeededRandom, syntheticWeights } from '../src/tensor/synthetic.js';

/** Rows of 64 weights (4 blocks) that a search must survive, then ordinary heavy-tailed ones. */
function awkwardMatrix(): { weights: Float32Array; rows: number; cols: number } {
  const cols = 64;
  const random = new SeededRandom(23);
  const special = 8;
  const ordinary = 40;
  const rows = special + ordinary;
  const weights = new Float32Array(rows * cols);
  weights.set(syntheticWeights(ordinary, cols, { seed: 8, outlierRows: 0.1 }), special * cols);
  const row = (r: number) => weights.subarray(r * cols, (r + 1) * cols);
  row(0).fill(-0, 0, 20); // zeros and −0
  row(1).forEach((_, i, a) => { a[i] = 1e-30 * random.normal(); }); // tiny, next to tensor-sized scales
  row(2).forEach((_, i, a) => { a[i] = (i % 2 ? 1 : -1) * 2 ** -140 * (1 + i); }); // subnormals
  row(3).forEach((_, i, a) => { a[i] = 40 * random.normal(); }); // beyond what the global scale covers: clipping
  row(4).forEach((_, i, a) => { a[i] = i % 16 === 0 ? 0.5 : 0; }); // one weight per block
  row(5).forEach((_, i, a) => { a[i] = random.normal() * (i % 5 === 0 ? 1e-3 : 0.02); });
  row(6).forEach((_, i, a) => { a[i] = (i % 2 ? -1 : 1) * (i + 1) * 2 ** -10; }); // with global scale 1: midpoints, ties
  row(7).forEach((_, i, a) => { a[i] = -Math.abs(random.studentT(3)) * 0.01; });
  return { weights, rows, cols };
}

/** Runs a search; the default global scale is 4× the absmax rule's, so row 3 clips. */
async function runSearch(
  weights: Float32Array, rows: number, cols: number, gpu: GpuContext | null,
  settings: Omit<Nvfp4SearchSettings, 'globalScale'> & { globalScale?: number },
  options: { bindingLimit?: number; sampleBlocks?: number } = {},
) {
  const session = await Nvfp4SearchSession.open(weights, rows, cols, gpu, options);
  try {
    return await session.run({ globalScale: Math.fround(absmaxGlobalScale(absMax(weights)) * 4), ...settings });
  } finally {
    session.release();
  }
}

beforeAll(async () => {
  await initCodec();
});

for (const adapter of ['gles', 'swiftshader'] as SoftwareAdapter[]) {
  describe(`NVFP4 rd-search on the ${adapter} software adapter`, () => {
    let gpu: GpuContext;
    beforeAll(async () => {
      gpu = await acquireGpu('cpu', adapter, { boundsChecks: false });
    });

    it('chooses the CPU path\'s block scales and codes bit for bit', async () => {
      const { weights, rows, cols } = awkwardMatrix();
      for (const settings of [
        { lambda: 0, passes: 1 }, { lambda: 0.01, passes: 3 }, { lambda: 0.3, passes: 4 }, { lambda: 0.05, rdo: false, passes: 2 },
        // m = 1: decoded values are exact products, so row 6 sits on midpoints (ties go to the lower value).
        { lambda: 0, passes: 1, globalScale: 1 }, { lambda: 0, rdo: false, passes: 1, globalScale: 1 },
      ]) {
        const cpu = await runSearch(weights, rows, cols, null, settings);
        // Small dispatches: four chunks of blocks.
        const onGpu = await runSearch(weights, rows, cols, gpu, settings, { bindingLimit: 48 * 64 });
        expect(Buffer.from(onGpu.blockScales).equals(Buffer.from(cpu.blockScales)), JSON.stringify(settings)).toBe(true);
        expect(Buffer.from(onGpu.packed).equals(Buffer.from(cpu.packed)), JSON.stringify(settings)).toBe(true);
        expect(Array.from(onGpu.counts)).toEqual(Array.from(cpu.counts));
        expect(onGpu.fullPasses).toBe(cpu.fullPasses);
      }
    });

    it.each([[96, 128, 64], [1024, 256, 2048]])('agrees with the CPU when the tables come from a row sample (%i×%i, %i sample blocks)', async (rows, cols, sampleBlocks) => {
      const weights = syntheticWeights(rows, cols, { seed: 31 });
      const settings = { lambda: 0.02 };
      // The sample's passes and table updates run chained on the GPU, on the host for the CPU path.
      const cpu = await runSearch(weights, rows, cols, null, settings, { sampleBlocks });
      const onGpu = await runSearch(weights, rows, cols, gpu, settings, { sampleBlocks });
      expect(cpu.samplePasses).toBeGreaterThan(1);
      expect(cpu.fullPasses).toBeLessThanOrEqual(2);
      expect(Buffer.from(onGpu.blockScales).equals(Buffer.from(cpu.blockScales))).toBe(true);
      expect(Buffer.from(onGpu.packed).equals(Buffer.from(cpu.packed))).toBe(true);
      expect([onGpu.samplePasses, onGpu.fullPasses]).toEqual([cpu.samplePasses, cpu.fullPasses]);
    });

    it('runs the reference optimizer\'s evaluations on the GPU close to the CPU\'s', async () => {
      const rows = 64;
      const cols = 256;
      const weights = syntheticWeights(rows, cols, { seed: 12 });
      const options = { optimizer: 'reference' as const, lambda: 0.05, maxIterations: 20, blockChunk: 256 };
      const cpu = await quantizeNvfp4(weights, rows, cols, options);
      const onGpu = await quantizeNvfp4(weights, rows, cols, { ...options, gpu });
      // f32 sums on the GPU, f64 on the CPU: L-BFGS paths may part slightly, the outcome may not.
      expect(Math.abs(onGpu.bitsPerParam - cpu.bitsPerParam)).toBeLessThan(0.05);
      expect(Math.abs(onGpu.relL1 - cpu.relL1)).toBeLessThan(0.01);
    });
  });
}

describe('NVFP4 rd-search choices', () => {
  it('never uses a NaN scale, decodes zeros as +0 codes, and is deterministic', async () => {
    const { weights, rows, cols } = awkwardMatrix();
    const first = await runSearch(weights, rows, cols, null, { lambda: 0.01 });
    const again = await runSearch(weights, rows, cols, null, { lambda: 0.01 });
    expect(Buffer.from(again.packed).equals(Buffer.from(first.packed))).toBe(true);
    expect(first.blockScales.every((s) => s <= 126)).toBe(true);
    // Row 0's first 16 weights are ±0: their block's codes are all +0.
    expect(Array.from(first.packed.subarray(0, 8))).toEqual(new Array(8).fill(0));
    // No −0 codes anywhere (code 8 in either nibble).
    expect(Array.from(first.packed).some((b) => (b & 15) === 8 || b >> 4 === 8)).toBe(false);
  });
});
