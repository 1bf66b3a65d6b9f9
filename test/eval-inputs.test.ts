import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EqzError } from '../src/errors.js';
import { evaluate } from '../src/eval/evaluate.js';
import { parseLlamaConfig } from '../src/eval/llama-config.js';
import { weightSourceFromModelFolder, type ClosableWeightSource } from '../src/eval/weight-sources.js';
import { readTokenFile } from '../src/eval/tokens.js';
import { llamaTensorNames, type WeightSource } from '../src/eval/weights.js';
import { SHARED_DATA, tempDir } from './helpers.js';

let stories: ClosableWeightSource;

beforeAll(async () => {
  stories = await weightSourceFromModelFolder(`${SHARED_DATA}models/stories260K`);
});

afterAll(() => stories.close());

/** `source` with config.json fields replaced. */
const withConfig = (source: WeightSource, changes: Record<string, unknown>): WeightSource => ({
  config: { ...source.config, ...changes },
  names: () => source.names(),
  shape: (name) => source.shape(name),
  loadF32: (name) => source.loadF32(name),
});

/** The EqzError `promise` rejects with (fails the test when it resolves or throws something else). */
async function eqzError(promise: Promise<unknown>): Promise<EqzError> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(EqzError);
  return error as EqzError;
}

const someTokens = Uint16Array.of(1, 400, 35, 7, 9);

describe('eval inputs', () => {
  it('reads a model folder: config, tensor shapes and F32 values', async () => {
    expect(stories.config.model_type).toBe('llama');
    expect(stories.shape('model.layers.0.mlp.gate_proj.weight')).toEqual([172, 64]);
    const norm = await stories.loadF32('model.norm.weight');
    expect(norm).toBeInstanceOf(Float32Array);
    expect(norm.length).toBe(64);
    expect(await eqzError(stories.loadF32('lm_head.weight'))).toMatchObject({ code: 'Malformed', tensor: 'lm_head.weight' });
  });

  it('ties lm_head to embed_tokens when the config says so or lm_head.weight is absent', () => {
    const config = parseLlamaConfig(stories.config);
    expect(llamaTensorNames(config, stories).lmHead).toBe('model.embed_tokens.weight');
    const withHead: WeightSource = {
      ...stories,
      names: () => [...stories.names(), 'lm_head.weight'],
      shape: (name) => stories.shape(name === 'lm_head.weight' ? 'model.embed_tokens.weight' : name),
    };
    expect(llamaTensorNames(config, withHead).lmHead).toBe('model.embed_tokens.weight');
    const untied = parseLlamaConfig({ ...stories.config, tie_word_embeddings: false });
    expect(llamaTensorNames(untied, withHead).lmHead).toBe('lm_head.weight');
    expect(llamaTensorNames(untied, stories).lmHead).toBe('model.embed_tokens.weight');
  });

  it('takes head_dim, rope_theta and num_key_value_heads from the config, with transformers\' defaults', () => {
    const base = parseLlamaConfig(stories.config);
    expect(base).toMatchObject({ headDim: 8, kvHeads: 4, ropeTheta: 10000, rmsNormEps: 1e-5, tiedEmbeddings: true });
    const { num_key_value_heads: _kv, rope_theta: _theta, ...bare } = stories.config;
    expect(parseLlamaConfig({ ...bare, head_dim: 16 })).toMatchObject({ headDim: 16, kvHeads: 8, ropeTheta: 10000 });
    expect(parseLlamaConfig({ ...stories.config, rope_theta: 500000 }).ropeTheta).toBe(500000);
  });

  it('rejects architectures and options it would compute differently from transformers', async () => {
    const mistral = await eqzError(evaluate(withConfig(stories, { model_type: 'mistral' }), someTokens, { backend: 'cpu' }));
    expect(mistral.message).toMatch(/model_type "mistral" is not supported \(eqz eval supports llama\)/);
    expect(() => parseLlamaConfig({ ...stories.config, rope_scaling: { type: 'linear', factor: 2 } })).toThrow(/rope_scaling/);
    expect(() => parseLlamaConfig({ ...stories.config, attention_bias: true })).toThrow(/attention_bias/);
    expect(() => parseLlamaConfig({ ...stories.config, hidden_act: 'gelu' })).toThrow(/hidden_act "gelu"/);
    expect(() => parseLlamaConfig({ ...stories.config, num_key_value_heads: 3 })).toThrow(/not a multiple/);
    expect(() => parseLlamaConfig({ ...stories.config, hidden_size: -64 })).toThrow(/hidden_size/);
  });

  it('rejects a tensor whose shape disagrees with the config, naming it', async () => {
    const error = await eqzError(evaluate(withConfig(stories, { intermediate_size: 180 }), someTokens, { backend: 'cpu' }));
    expect(error).toMatchObject({ code: 'Malformed', tensor: 'model.layers.0.mlp.gate_proj.weight' });
    expect(error.message).toMatch(/\[172, 64\].*expected \[180, 64\]/);
  });

  it('rejects a token id at or above the vocabulary size, with its byte offset', async () => {
    const tokens = Uint16Array.of(1, 5, 511, 512, 3);
    const error = await eqzError(evaluate(stories, tokens, { backend: 'cpu' }));
    expect(error).toMatchObject({ code: 'OutOfBounds', offset: 6 });
    expect(error.message).toMatch(/token id 512 at index 3 .* vocabulary size 512/);
  });

  it('rejects a ctx above max_position_embeddings', async () => {
    const error = await eqzError(evaluate(stories, someTokens, { backend: 'cpu', ctx: 513 }));
    expect(error).toMatchObject({ code: 'LimitExceeded' });
    expect(error.message).toMatch(/ctx 513 exceeds .* max_position_embeddings 512/);
  });

  it('rejects a reference model with another vocabulary', async () => {
    const other = await weightSourceFromModelFolder(`${SHARED_DATA}models/babyllama-tok105`);
    try {
      const error = await eqzError(evaluate(stories, someTokens, { backend: 'cpu', ref: other }));
      expect(error.message).toMatch(/reference model's vocab_size 105 differs from the model's 512/);
    } finally {
      await other.close();
    }
  });

  it('forms windows as the token file describes: N tokens, N − 1 predictions in ⌈(N − 1) / ctx⌉ windows', async () => {
    const tokens = (await readTokenFile(`${SHARED_DATA}text/tinystories-sample.stories260K.tokens.u16`)).tokens.subarray(0, 21);
    const whole = await evaluate(stories, tokens, { backend: 'cpu', ctx: 8 });
    expect(whole).toMatchObject({ tokens: 20, windows: 3 });
    // The third window feeds tokens 16..19 and predicts 17..20: the same as evaluating those five tokens alone.
    const last = await evaluate(stories, tokens.subarray(16), { backend: 'cpu', ctx: 8 });
    expect(last).toMatchObject({ tokens: 4, windows: 1 });
    expect(last.windowNll[0]).toBe(whole.windowNll[2]);
    expect(whole.meanNll).toBeCloseTo((8 * whole.windowNll[0] + 8 * whole.windowNll[1] + 4 * whole.windowNll[2]) / 20, 12);
    const progress: number[] = [];
    const first = await evaluate(stories, tokens, { backend: 'cpu', ctx: 8, maxWindows: 2, onProgress: (done) => progress.push(done) });
    expect(first).toMatchObject({ tokens: 16, windows: 2 });
    expect(progress).toEqual([1, 2]);
  });
});

describe('token files', () => {
  it('reads the shared token file and its description', async () => {
    const file = await readTokenFile(`${SHARED_DATA}text/tinystories-sample.stories260K.tokens.u16`);
    expect(file.tokens.length).toBe(40000);
    expect(file.ctx).toBe(256);
    expect(file.referencePerplexity).toBeCloseTo(6.2011, 4);
  });

  it('rejects an odd byte length and a file shorter than its description says', async () => {
    const dir = await tempDir();
    const odd = join(dir, 'odd.tokens.u16');
    await writeFile(odd, Uint8Array.of(1, 0, 5, 0, 7));
    expect(await eqzError(readTokenFile(odd))).toMatchObject({ code: 'Truncated', offset: 4, file: odd });

    const short = join(dir, 'short.tokens.u16');
    await writeFile(short, Uint8Array.of(1, 0, 5, 0, 7, 0));
    await writeFile(join(dir, 'short.tokens.json'), JSON.stringify({ tokens: 4, eval: { n_ctx: 2 } }));
    const error = await eqzError(readTokenFile(short));
    expect(error).toMatchObject({ code: 'Truncated', file: short });
    expect(error.message).toMatch(/holds 3 tokens, its description says 4/);

    await writeFile(join(dir, 'short.tokens.json'), JSON.stringify({ tokens: 3, eval: { n_ctx: 2 } }));
    expect(await readTokenFile(short)).toMatchObject({ tokens: Uint16Array.of(1, 5, 7), ctx: 2 });
  });
});
