/**
 * Perplexity of a Llama model over a token stream, and KL(reference ‖ model) per token: what quantization cost.
 *
 * Windows follow the token files' description (and transformers' usual evaluation): non-overlapping windows of
 * `ctx` tokens, each a fresh context at position 0. Window k feeds tokens[k·ctx .. k·ctx + ctx − 1] and scores
 * every next token, tokens[k·ctx + 1 .. (k + 1)·ctx]; the last window is shorter. N tokens give N − 1 predictions
 * in ⌈(N − 1) / ctx⌉ windows.
 */
import { EqzError } from '../errors.js';
import type { GpuContext } from '../gpu/device.js';
import { parseLlamaConfig, type LlamaConfig } from './llama-config.js';
import { LlamaCpuModel } from './llama-cpu.js';
import { createGpuScorer } from './llama-gpu.js';
import { scoreLogits } from './scoring.js';
import { llamaTensorNames, loadLlamaTensors, type LlamaTensors, type WeightSource } from './weights.js';

/** How {@link evaluate} runs. */
export interface EvaluateOptions {
  /** Window length in tokens; default the model's max_position_embeddings. */
  ctx?: number;
  /** Reference model (e.g. the original of a quantized model): adds the mean KL(ref ‖ model). */
  ref?: WeightSource;
  /** Plain TypeScript, or WebGPU on this device. Both compute the same quantities. */
  backend: 'cpu' | GpuContext;
  /** Called after each window with windows done and windows in all. */
  onProgress?: (done: number, total: number) => void;
  /** Evaluate only the first this many windows. */
  maxWindows?: number;
  /**
   * WebGPU only: bytes one storage buffer may hold, when lower than the adapter's own limit. Larger weights are
   * split into row chunks, attention and lm_head run in smaller passes (and a ctx whose activations do not fit is
   * refused), which also lowers the largest single allocation.
   */
  gpuBindingLimit?: number;
}

/** What {@link evaluate} measured. */
export interface EvaluationResult {
  /** exp(meanNll). */
  perplexity: number;
  /** Mean negative log-likelihood per predicted token, nats. */
  meanNll: number;
  /** Number of predicted tokens. */
  tokens: number;
  windows: number;
  /** Mean negative log-likelihood of the predicted tokens of each window, nats. */
  windowNll: Float64Array;
  /** Mean KL(ref ‖ model) per predicted token, nats (only with a reference). */
  klMean?: number;
  /** Which backend ran: "cpu" or the WebGPU adapter's description. */
  backend: string;
}

/** Scores windows of tokens; one per backend, holding its weights and buffers across windows. */
export interface WindowScorer {
  /**
   * Feeds `window[0 .. T − 1]` (T = window.length − 1) and writes `nll[t]` for predicting `window[t + 1]`, and with a
   * reference `kl[t]` = KL(ref ‖ model) at that position.
   */
  score(window: Uint16Array, nll: Float64Array, kl: Float64Array | undefined): Promise<void>;
  destroy(): void;
}

/** A model to run: its validated config and the names of the tensors it reads. */
export interface LlamaModelSource {
  config: LlamaConfig;
  names: LlamaTensors<string>;
  source: WeightSource;
}

function describeModel(source: WeightSource): LlamaModelSource {
  const config = parseLlamaConfig(source.config);
  return { config, names: llamaTensorNames(config, source), source };
}

async function createCpuScorer(model: LlamaModelSource, ref: LlamaModelSource | undefined, ctx: number): Promise<WindowScorer> {
  const vocab = model.config.vocabSize;
  const load = async (m: LlamaModelSource) => new LlamaCpuModel(m.config, await loadLlamaTensors(m.source, m.names), ctx);
  const modelCpu = await load(model);
  const refCpu = ref && (await load(ref));
  const logits = new Float32Array(ctx * vocab);
  const refLogits = refCpu ? new Float32Array(ctx * vocab) : undefined;
  return {
    async score(window, nll, kl) {
      const inputs = window.subarray(0, window.length - 1);
      modelCpu.logits(inputs, logits);
      if (refCpu && refLogits && kl) refCpu.logits(inputs, refLogits);
      scoreLogits(logits, window.subarray(1), vocab, nll, refLogits && kl ? { logits: refLogits, kl } : undefined);
    },
    destroy() {},
  };
}

function checkTokens(tokens: Uint16Array, vocab: number): void {
  if (tokens.length < 2) throw new EqzError('InvalidValue', `need at least 2 tokens to predict one, got ${tokens.length}`);
  for (let i = 0; i < tokens.length; i++) {
    if (tokens[i] >= vocab) {
      throw new EqzError('OutOfBounds', `token id ${tokens[i]} at index ${i} is not below the vocabulary size ${vocab}`, { offset: 2 * i });
    }
  }
}

function checkContext(ctx: number, config: LlamaConfig, which: string): void {
  if (!Number.isInteger(ctx) || ctx < 1) throw new EqzError('InvalidValue', `ctx must be a positive integer, got ${ctx}`);
  if (ctx > config.maxPositions) {
    throw new EqzError('LimitExceeded', `ctx ${ctx} exceeds the ${which}'s max_position_embeddings ${config.maxPositions}`);
  }
}

/**
 * Perplexity of `model` on `tokens` (and mean KL(ref ‖ model) with `options.ref`), in the windows described in
 * this module's header. Throws EqzError for a model that is not Llama, a token id ≥ vocab_size (offset = its byte
 * offset in a token file), ctx above max_position_embeddings, or a reference with another vocabulary.
 */
export async function evaluate(model: WeightSource, tokens: Uint16Array, options: EvaluateOptions): Promise<EvaluationResult> {
  const opened = describeModel(model);
  const ref = options.ref && describeModel(options.ref);
  const { config } = opened;
  if (ref && ref.config.vocabSize !== config.vocabSize) {
    throw new EqzError('InvalidValue', `the reference model's vocab_size ${ref.config.vocabSize} differs from the model's ${config.vocabSize}`);
  }
  const ctx = options.ctx ?? config.maxPositions;
  checkContext(ctx, config, 'model');
  if (ref) checkContext(ctx, ref.config, 'reference model');
  checkTokens(tokens, config.vocabSize);
  const allWindows = Math.ceil((tokens.length - 1) / ctx);
  const windows = Math.min(allWindows, options.maxWindows ?? allWindows);
  if (!Number.isInteger(windows) || windows < 1) throw new EqzError('InvalidValue', `maxWindows must be a positive integer, got ${options.maxWindows}`);

  const backend = options.backend;
  const scorer = backend === 'cpu' ? await createCpuScorer(opened, ref, ctx) : await createGpuScorer(backend, opened, ref, ctx, options.gpuBindingLimit);
  const nll = new Float64Array(ctx);
  const kl = ref ? new Float64Array(ctx) : undefined;
  const windowNll = new Float64Array(windows);
  let nllSum = 0;
  let klSum = 0;
  let predicted = 0;
  try {
    for (let k = 0; k < windows; k++) {
      const start = k * ctx;
      const window = tokens.subarray(start, Math.min(start + ctx + 1, tokens.length));
      const count = window.length - 1;
      await scorer.score(window, nll, kl);
      let sum = 0;
      for (let t = 0; t < count; t++) sum += nll[t];
      if (kl) for (let t = 0; t < count; t++) klSum += kl[t];
      windowNll[k] = sum / count;
      nllSum += sum;
      predicted += count;
      options.onProgress?.(k + 1, windows);
    }
  } finally {
    scorer.destroy();
  }
  const meanNll = nllSum / predicted;
  return {
    perplexity: Math.exp(meanNll),
    meanNll,
    tokens: predicted,
    windows,
    windowNll,
    klMean: kl ? klSum / predicted : undefined,
    backend: backend === 'cpu' ? 'cpu' : backend.description,
  };
}
