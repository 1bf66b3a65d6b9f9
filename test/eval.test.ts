import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evaluate, type EvaluationResult } from '../src/eval/evaluate.js';
import { parseLlamaConfig } from '../src/eval/llama-config.js';
import { LlamaCpuModel } from '../src/eval/llama-cpu.js';
import { weightSourceFromModelFolder, type ClosableWeightSource } from '../src/eval/weight-sources.js';
import { readTokenFile, type TokenFile } from '../src/eval/tokens.js';
import { llamaTensorNames, loadLlamaTensors, type WeightSource } from '../src/eval/weights.js';
import { acquireGpu, type SoftwareAdapter } from '../src/gpu/device.js';
import { SeededRandom } from '../src/tensor/synthetic.js';
import { SHARED_DATA } from './helpers.js';

const MODELS = ['stories260K', 'babyllama-tok105'] as const;
type ModelName = (typeof MODELS)[number];

const sources = new Map<ModelName, ClosableWeightSource>();
const tokenFiles = new Map<ModelName, TokenFile>();
const cpuResults = new Map<ModelName, Promise<EvaluationResult>>();

beforeAll(async () => {
  for (const name of MODELS) {
    sources.set(name, await weightSourceFromModelFolder(`${SHARED_DATA}models/${name}`));
    tokenFiles.set(name, await readTokenFile(`${SHARED_DATA}text/tinystories-sample.${name}.tokens.u16`));
  }
});

afterAll(async () => {
  for (const source of sources.values()) await source.close();
});

/** The CPU evaluation of a model's whole token file, computed once and shared by the tests that compare with it. */
function cpuResult(name: ModelName): Promise<EvaluationResult> {
  let result = cpuResults.get(name);
  if (!result) {
    result = evaluate(sources.get(name)!, tokenFiles.get(name)!.tokens, { ctx: tokenFiles.get(name)!.ctx, backend: 'cpu' });
    cpuResults.set(name, result);
  }
  return result;
}

/** Relative difference of `actual` from `expected`. */
const relative = (actual: number, expected: number) => Math.abs(actual - expected) / Math.abs(expected);

/**
 * A copy of `source` whose projection weights carry seeded uniform noise of `amount` times each tensor's RMS:
 * a stand-in for a quantized model.
 */
function perturbed(source: WeightSource, seed: number, amount: number): WeightSource {
  return {
    config: source.config,
    names: () => source.names(),
    shape: (name) => source.shape(name),
    async loadF32(name) {
      const values = await source.loadF32(name);
      if (!name.endsWith('_proj.weight')) return values;
      const random = new SeededRandom([...name].reduce((hash, c) => (Math.imul(hash, 31) + c.charCodeAt(0)) | 0, seed));
      const rms = Math.sqrt(values.reduce((sum, v) => sum + v * v, 0) / values.length);
      return values.map((v) => v + amount * rms * (2 * random.next() - 1));
    },
  };
}

/** Mean KL(ref ‖ model) over the first `windows` windows, from CPU logits, in float64 log-probabilities. */
async function float64Kl(model: WeightSource, ref: WeightSource, tokens: Uint16Array, ctx: number, windows: number): Promise<number> {
  const config = parseLlamaConfig(model.config);
  const load = async (source: WeightSource) =>
    new LlamaCpuModel(config, await loadLlamaTensors(source, llamaTensorNames(config, source)), ctx);
  const [modelCpu, refCpu] = [await load(model), await load(ref)];
  const vocab = config.vocabSize;
  const logits = new Float32Array(ctx * vocab);
  const refLogits = new Float32Array(ctx * vocab);
  const logProbabilities = (row: Float32Array) => {
    const values = Array.from(row, Number);
    const max = Math.max(...values);
    const normalizer = max + Math.log(values.reduce((sum, v) => sum + Math.exp(v - max), 0));
    return values.map((v) => v - normalizer);
  };
  let total = 0;
  let positions = 0;
  for (let k = 0; k < windows; k++) {
    const inputs = tokens.subarray(k * ctx, Math.min((k + 1) * ctx, tokens.length - 1));
    modelCpu.logits(inputs, logits);
    refCpu.logits(inputs, refLogits);
    for (let t = 0; t < inputs.length; t++) {
      const p = logProbabilities(logits.subarray(t * vocab, (t + 1) * vocab));
      const q = logProbabilities(refLogits.subarray(t * vocab, (t + 1) * vocab));
      total += q.reduce((sum, logQ, v) => sum + Math.exp(logQ) * (logQ - p[v]), 0);
      positions++;
    }
  }
  return total / positions;
}

describe('eval on the CPU backend', () => {
  for (const name of MODELS) {
    it(`reproduces transformers' perplexity of ${name} on its whole token file`, async () => {
      const tokenFile = tokenFiles.get(name)!;
      const description = JSON.parse(await readFile(`${SHARED_DATA}text/tinystories-sample.${name}.tokens.json`, 'utf8'));
      const result = await cpuResult(name);
      expect(result.backend).toBe('cpu');
      expect(result.tokens).toBe(description.eval.predicted_tokens);
      expect(result.windows).toBe(Math.ceil((tokenFile.tokens.length - 1) / tokenFile.ctx!));
      expect(result.perplexity.toPrecision(5)).toBe(tokenFile.referencePerplexity!.toPrecision(5));
      expect(relative(result.meanNll, description.eval.nll_per_token)).toBeLessThan(1e-5);
    }, 300_000);
  }
});

let perturbedStoriesResult: Promise<{ noisy: WeightSource; expected: number }> | undefined;

/** A perturbed stories260K and its float64 KL from the original over the first window, computed once. */
function perturbedStories(): Promise<{ noisy: WeightSource; expected: number }> {
  perturbedStoriesResult ??= (async () => {
    const source = sources.get('stories260K')!;
    const { tokens, ctx } = tokenFiles.get('stories260K')!;
    const noisy = perturbed(source, 7, 0.3);
    const expected = await float64Kl(noisy, source, tokens, ctx!, 1);
    expect(expected).toBeGreaterThan(1e-3);
    return { noisy, expected };
  })();
  return perturbedStoriesResult;
}

/** Windows each software adapter evaluates (the last ones, so the short final window is included). */
const GPU_WINDOWS: Record<SoftwareAdapter, Record<ModelName, number>> = {
  gles: { stories260K: 16, 'babyllama-tok105': 8 },
  swiftshader: { stories260K: 4, 'babyllama-tok105': 2 },
};

for (const adapter of ['gles', 'swiftshader'] as const) {
  describe(`eval on WebGPU (${adapter} software adapter)`, () => {
    for (const name of MODELS) {
      it(`matches the CPU backend window by window on ${name}`, async () => {
        const { tokens, ctx } = tokenFiles.get(name)!;
        const cpu = await cpuResult(name);
        const first = cpu.windows - GPU_WINDOWS[adapter][name];
        const gpu = await evaluate(sources.get(name)!, tokens.subarray(first * ctx!), { ctx, backend: await acquireGpu('cpu', adapter) });
        expect(gpu.backend).toMatch(/software/);
        expect(gpu.windows).toBe(cpu.windows - first);
        gpu.windowNll.forEach((nll, k) => expect(relative(nll, cpu.windowNll[first + k])).toBeLessThan(1e-5));
      }, 300_000);
    }

    it('splits weights, attention heads and logits to fit a small binding limit, with the same results', async () => {
      const name = 'stories260K';
      const source = sources.get(name)!;
      const { tokens } = tokenFiles.get(name)!;
      // 48 KiB at ctx 64: embed/lm_head in 3 row chunks, attention in passes of 3 heads, logits in blocks of 24 rows.
      const options = { ctx: 64, maxWindows: 3 };
      const cpu = await evaluate(source, tokens, { ...options, backend: 'cpu' });
      const gpu = await evaluate(source, tokens, { ...options, backend: await acquireGpu('cpu', adapter), gpuBindingLimit: 48 * 1024 });
      gpu.windowNll.forEach((nll, k) => expect(relative(nll, cpu.windowNll[k])).toBeLessThan(1e-5));
    }, 300_000);

    it('measures KL(ref ‖ model): zero against itself, the float64 value against a perturbed copy', async () => {
      const name = 'stories260K';
      const source = sources.get(name)!;
      const { tokens, ctx } = tokenFiles.get(name)!;
      const backend = await acquireGpu('cpu', adapter);
      const itself = await evaluate(source, tokens, { ctx, backend, maxWindows: 1, ref: source });
      expect(itself.klMean).toBeGreaterThanOrEqual(0);
      expect(itself.klMean).toBeLessThan(1e-6);

      const { noisy, expected } = await perturbedStories();
      const gpu = await evaluate(noisy, tokens, { ctx, backend, maxWindows: 1, ref: source });
      expect(relative(gpu.klMean!, expected)).toBeLessThan(1e-4);
      const alone = await evaluate(noisy, tokens, { ctx, backend, maxWindows: 1 });
      expect(gpu.meanNll).toBe(alone.meanNll);
      expect(alone.klMean).toBeUndefined();
    }, 300_000);
  });
}

describe('KL on the CPU backend', () => {
  it('is zero against the model itself and the float64 value against a perturbed copy', async () => {
    const name = 'babyllama-tok105';
    const source = sources.get(name)!;
    const { tokens, ctx } = tokenFiles.get(name)!;
    const itself = await evaluate(source, tokens, { ctx, backend: 'cpu', maxWindows: 2, ref: source });
    expect(itself.klMean).toBe(0);

    const noisy = perturbed(source, 11, 0.3);
    const expected = await float64Kl(noisy, source, tokens, ctx!, 2);
    expect(expected).toBeGreaterThan(1e-3);
    const result = await evaluate(noisy, tokens, { ctx, backend: 'cpu', maxWindows: 2, ref: source });
    expect(relative(result.klMean!, expected)).toBeLessThan(1e-9);
    // KL is not symmetric: swapping the roles measures another quantity.
    const swapped = await evaluate(source, tokens, { ctx, backend: 'cpu', maxWindows: 2, ref: noisy });
    expect(relative(swapped.klMean!, expected)).toBeGreaterThan(1e-3);
  }, 300_000);
});
