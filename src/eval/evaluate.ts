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

async function loadCpuModel(model: LlamaModelSource, ctx: number): Promise<LlamaCpuModel> {
  return new LlamaCpuModel(model.config, await loadLlamaTensors(model.source, model.names), ctx);
}

async function createCpuScorer(model: LlamaModelSource, ref: LlamaModelSource | undefined, ctx: number): Promise<WindowScorer> {
  const vocab = model.config.vocabSize;
  const modelCpu = await loadCpuModel(model, ctx);
  const refCpu = ref && (await loadCpuModel(ref, ctx));
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

function checkSameVocabulary(model: LlamaModelSource, ref: LlamaModelSource): void {
  if (ref.config.vocabSize !== model.config.vocabSize) {
    throw new EqzError('InvalidValue', `the reference model's vocab_size ${ref.config.vocabSize} differs from the model's ${model.config.vocabSize}`);
  }
}

/** Which windows an evaluation scores: their length and how many of them. */
interface WindowPlan {
  ctx: number;
  windows: number;
}

/**
 * The windows over `tokens` for `model` (and `ref`), after checking ctx against both configs, every token id
 * against the vocabulary and `maxWindows`.
 */
function planWindows(
  model: LlamaModelSource, ref: LlamaModelSource | undefined, tokens: Uint16Array, ctxOption: number | undefined, maxWindows: number | undefined,
): WindowPlan {
  const ctx = ctxOption ?? model.config.maxPositions;
  checkContext(ctx, model.config, 'model');
  if (ref) checkContext(ctx, ref.config, 'reference model');
  checkTokens(tokens, model.config.vocabSize);
  const allWindows = Math.ceil((tokens.length - 1) / ctx);
  const windows = Math.min(allWindows, maxWindows ?? allWindows);
  if (!Number.isInteger(windows) || windows < 1) throw new EqzError('InvalidValue', `maxWindows must be a positive integer, got ${maxWindows}`);
  return { ctx, windows };
}

/** Feeds the planned windows of `tokens` to `scorer` in order (destroying it at the end) and sums up. */
async function scoreWindows(
  scorer: WindowScorer, tokens: Uint16Array, plan: WindowPlan, withKl: boolean, backend: string,
  onProgress: ((done: number, total: number) => void) | undefined,
): Promise<EvaluationResult> {
  const { ctx, windows } = plan;
  const nll = new Float64Array(ctx);
  const kl = withKl ? new Float64Array(ctx) : undefined;
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
      onProgress?.(k + 1, windows);
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
    backend,
  };
}

/**
 * Perplexity of `model` on `tokens` (and mean KL(ref ‖ model) with `options.ref`), in the windows described in
 * this module's header. Throws EqzError for a model that is not Llama, a token id ≥ vocab_size (offset = its byte
 * offset in a token file), ctx above max_position_embeddings, or a reference with another vocabulary.
 */
export async function evaluate(model: WeightSource, tokens: Uint16Array, options: EvaluateOptions): Promise<EvaluationResult> {
  const opened = describeModel(model);
  const ref = options.ref && describeModel(options.ref);
  if (ref) checkSameVocabulary(opened, ref);
  const plan = planWindows(opened, ref, tokens, options.ctx, options.maxWindows);
  const backend = options.backend;
  const scorer = backend === 'cpu' ? await createCpuScorer(opened, ref, plan.ctx) : await createGpuScorer(backend, opened, ref, plan.ctx, options.gpuBindingLimit);
  return scoreWindows(scorer, tokens, plan, ref !== undefined, backend === 'cpu' ? 'cpu' : backend.description, options.onProgress);
}

/** A reference model's logits over every window, computed once, and the scoring of other models against them. */
export interface ReferenceEvaluator {
  /** The reference model's own perplexity over the windows (no KL). */
  reference: EvaluationResult;
  /**
   * `model` over the same windows with mean KL(reference ‖ model) taken from the kept logits: what
   * `evaluate(model, tokens, { ref, backend: 'cpu', ctx, maxWindows })` computes, without running the reference
   * again. Throws as {@link evaluate} does.
   */
  evaluate(model: WeightSource, onProgress?: (done: number, total: number) => void): Promise<EvaluationResult>;
}

/**
 * Runs `ref` over `tokens` once on the CPU backend (windows as in {@link evaluate}) and keeps its logits, so that
 * many models (the quantizations of one original) can be scored against it at the cost of their own forward pass
 * only. The logits take windows × ctx × vocab_size × 4 bytes. Throws as {@link evaluate} does.
 */
export async function referenceEvaluator(
  ref: WeightSource, tokens: Uint16Array, options: { ctx?: number; maxWindows?: number; onProgress?: (done: number, total: number) => void } = {},
): Promise<ReferenceEvaluator> {
  const reference = describeModel(ref);
  const plan = planWindows(reference, undefined, tokens, options.ctx, options.maxWindows);
  const vocab = reference.config.vocabSize;
  const referenceCpu = await loadCpuModel(reference, plan.ctx);
  const keptLogits: Float32Array[] = [];
  const referenceResult = await scoreWindows({
    async score(window, nll) {
      const logits = new Float32Array((window.length - 1) * vocab);
      referenceCpu.logits(window.subarray(0, window.length - 1), logits);
      keptLogits.push(logits);
      scoreLogits(logits, window.subarray(1), vocab, nll);
    },
    destroy() {},
  }, tokens, plan, false, 'cpu', options.onProgress);

  return {
    reference: referenceResult,
    async evaluate(model, onProgress) {
      const opened = describeModel(model);
      checkSameVocabulary(opened, reference);
      checkContext(plan.ctx, opened.config, 'model');
      const modelCpu = await loadCpuModel(opened, plan.ctx);
      const logits = new Float32Array(plan.ctx * vocab);
      let windowIndex = 0;
      return scoreWindows({
        async score(window, nll, kl) {
          // scoreWindows feeds the windows in order, the order their reference logits were kept in.
          const referenceLogits = keptLogits[windowIndex++]!;
          modelCpu.logits(window.subarray(0, window.length - 1), logits);
          scoreLogits(logits, window.subarray(1), vocab, nll, { logits: referenceLogits, kl: kl! });
        },
        destroy() {},
      }, tokens, plan, true, 'cpu', onProgress);
    },
  };
}
