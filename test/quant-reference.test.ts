import { beforeAll, describe, expect, it } from 'vitest';
import { acquireGpu, type GpuContext, type SoftwareAdapter } from '../src/gpu/device.js';
import { minimizeLbfgs } from '../src/quant/lbfgs.js';
import { quantizeReference, referenceObjective } from '../src/quant/reference.js';
import { syntheticWeights } from '../src/tensor/synthetic.js';


describe('L-BFGS with strong-Wolfe line search', () => {
  it('minimises the Rosenbrock function from the textbook start', async () => {
    const rosenbrock = async (x: Float64Array) => {
      const [a, b] = [x[0]!, x[1]!];
      return {
        value: (1 - a) ** 2 + 100 * (b - a * a) ** 2,
        gradient: Float64Array.of(-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)),
      };
    };
    const run = await minimizeLbfgs(rosenbrock, Float64Array.of(-1.2, 1), { lr: 1, maxIterations: 200, historySize: 100 });
    expect(run.x[0]).toBeCloseTo(1, 3);
    expect(run.x[1]).toBeCloseTo(1, 3);
    expect(run.iterations).toBeLessThan(60);
  });

  it('stops at the iteration limit and spends at most 1.25 evaluations per iteration', async () => {
    let evaluations = 0;
    const bowl = async (x: Float64Array) => {
      evaluations++;
      return { value: x.reduce((s, v, i) => s + (i + 1) * v * v, 0), gradient: x.map((v, i) => 2 * (i + 1) * v) };
    };
    const run = await minimizeLbfgs(bowl, Float64Array.from({ length: 50 }, (_, i) => Math.cos(i)), { lr: 1, maxIterations: 4, historySize: 100 });
    expect(run.iterations).toBeLessThanOrEqual(4);
    expect(evaluations).toBe(run.evaluations);
    expect(run.evaluations).toBeLessThanOrEqual(6);
  });
});

/** θ = log2(absmax / maxValue) per row, shifted by `shift` octaves. */
function thetaFromAbsmax(weights: Float32Array, rows: number, cols: number, maxValue: number, shift: number): Float64Array {
  const theta = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const absMax = weights.subarray(r * cols, (r + 1) * cols).reduce((m, w) => Math.max(m, Math.abs(w)), 0);
    theta[r] = Math.log2(absMax / maxValue) + shift;
  }
  return theta;
}

for (const adapter of ['gles', 'swiftshader'] as SoftwareAdapter[]) {
  describe(`reference loss and gradient on the ${adapter} software adapter`, () => {
    let gpu: GpuContext;
    beforeAll(async () => {
      gpu = await acquireGpu('cpu', adapter, { boundsChecks: false });
    });

    it('match the CPU path within float rounding', async () => {
      const rows = 24;
      const cols = 300;
      const weights = syntheticWeights(rows, cols, { seed: 21, outlierRows: 0.1 });
      for (const format of ['fp8-e4m3', 'int8'] as const) {
        const options = { format, lambda: 14.5, scaleDtype: 'BF16' as const };
        const cpu = await referenceObjective(weights, rows, cols, { ...options, gpu: null });
        const device = await referenceObjective(weights, rows, cols, { ...options, gpu });
        for (const shift of [0, 1.3, 4.1]) {
          const theta = thetaFromAbsmax(weights, rows, cols, format === 'int8' ? 127 : 448, shift);
          const expected = await cpu.evaluate(theta);
          const actual = await device.evaluate(theta);
          expect(Math.abs(actual.value / expected.value - 1)).toBeLessThan(1e-4);
          let difference = 0;
          let norm = 0;
          expected.gradient.forEach((g, r) => {
            difference += (actual.gradient[r]! - g) ** 2;
            norm += g * g;
          });
          expect(Math.sqrt(difference / norm)).toBeLessThan(1e-3);
        }
        device.release();
      }
    });

    it('lead to the CPU path\'s rate and error', async () => {
      const rows = 16;
      const cols = 256;
      const weights = syntheticWeights(rows, cols, { seed: 5 });
      const options = { format: 'fp8-e4m3' as const, lambda: 14.5, scaleDtype: 'BF16' as const };
      const cpu = await quantizeReference(weights, rows, cols, { ...options, gpu: null });
      const device = await quantizeReference(weights, rows, cols, { ...options, gpu });
      expect(Math.abs(device.bitsPerParam - cpu.bitsPerParam)).toBeLessThan(0.05);
      expect(Math.abs(device.relL2 / cpu.relL2 - 1)).toBeLessThan(0.02);
    });
  });
}
