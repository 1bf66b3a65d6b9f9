/**
 * The subset of a Hugging Face `config.json` that a Llama forward pass needs, validated: anything eqz eval would
 * compute differently from transformers (another architecture, rope scaling, biases) is rejected, not ignored.
 */
import { EqzError } from '../errors.js';

/** Dimensions and constants of a Llama model, from its config.json. */
export interface LlamaConfig {
  hiddenSize: number;
  intermediateSize: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositions: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** lm_head shares embed_tokens' matrix (config `tie_word_embeddings`). */
  tiedEmbeddings: boolean;
}

/** Far above any released model; keeps a hostile config from sizing allocations. */
const MAX_DIMENSION = 1 << 24;

function invalid(message: string): EqzError {
  return new EqzError('InvalidValue', `config.json: ${message}`);
}

function positiveInteger(config: Record<string, unknown>, key: string, fallback?: number): number {
  const value = config[key] ?? fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_DIMENSION) {
    throw invalid(`${key} must be an integer in 1..${MAX_DIMENSION}, got ${JSON.stringify(config[key])}`);
  }
  return value;
}

function positiveNumber(config: Record<string, unknown>, key: string, fallback: number): number {
  const value = config[key] ?? fallback;
  if (typeof value !== 'number' || !(value > 0) || !Number.isFinite(value)) {
    throw invalid(`${key} must be a positive number, got ${JSON.stringify(config[key])}`);
  }
  return value;
}

function requireAbsentOrFalse(config: Record<string, unknown>, key: string): void {
  const value = config[key];
  if (value !== undefined && value !== null && value !== false) {
    throw invalid(`${key} = ${JSON.stringify(value)} is not supported by eqz eval`);
  }
}

/**
 * Validated {@link LlamaConfig} from a parsed config.json. Throws EqzError `InvalidValue` naming the field for a
 * model_type other than `llama`, `rope_scaling`, biases, an activation other than silu, or inconsistent sizes.
 * Defaults follow transformers' LlamaConfig (rope_theta 10000, rms_norm_eps 1e-6, no tying).
 */
export function parseLlamaConfig(config: Record<string, unknown>): LlamaConfig {
  if (config.model_type !== 'llama') {
    throw new EqzError('InvalidValue', `model_type ${JSON.stringify(config.model_type ?? null)} is not supported (eqz eval supports llama)`);
  }
  requireAbsentOrFalse(config, 'rope_scaling');
  requireAbsentOrFalse(config, 'attention_bias');
  requireAbsentOrFalse(config, 'mlp_bias');
  const activation = config.hidden_act ?? 'silu';
  if (activation !== 'silu') throw invalid(`hidden_act ${JSON.stringify(activation)} is not supported (eqz eval supports silu)`);

  const hiddenSize = positiveInteger(config, 'hidden_size');
  const heads = positiveInteger(config, 'num_attention_heads');
  const kvHeads = positiveInteger(config, 'num_key_value_heads', heads);
  if (heads % kvHeads !== 0) throw invalid(`num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  const headDim = positiveInteger(config, 'head_dim', Math.floor(hiddenSize / heads));
  if (headDim % 2 !== 0) throw invalid(`head_dim ${headDim} must be even for rotary embeddings`);
  return {
    hiddenSize,
    intermediateSize: positiveInteger(config, 'intermediate_size'),
    layers: positiveInteger(config, 'num_hidden_layers'),
    heads,
    kvHeads,
    headDim,
    vocabSize: positiveInteger(config, 'vocab_size'),
    maxPositions: positiveInteger(config, 'max_position_embeddings'),
    rmsNormEps: positiveNumber(config, 'rms_norm_eps', 1e-6),
    ropeTheta: positiveNumber(config, 'rope_theta', 10000),
    tiedEmbeddings: config.tie_word_embeddings === true,
  };
}
