/**
 * Where eqz eval gets a model's weights: any {@link WeightSource} (a Hugging Face folder, a decoded .eqz), and
 * which of its tensors a Llama forward pass reads, with every shape checked against config.json before a byte
 * is loaded.
 */
import { EqzError } from '../errors.js';
import type { LlamaConfig } from './llama-config.js';

/** A model's config.json and its tensors by name, each loadable as F32. */
export interface WeightSource {
  /** The parsed config.json. */
  config: Record<string, unknown>;
  names(): string[];
  /** Dimensions of tensor `name`, outermost first. */
  shape(name: string): number[];
  /** Tensor `name` as F32 values in row-major order. */
  loadF32(name: string): Promise<Float32Array>;
}

/** The tensors of one decoder layer, as names or as loaded values. */
export interface LlamaLayer<T> {
  inputNorm: T;
  q: T;
  k: T;
  v: T;
  o: T;
  postNorm: T;
  gate: T;
  up: T;
  down: T;
}

/** Every tensor a Llama forward pass reads; `lmHead` may be the same tensor as `embed` (tied embeddings). */
export interface LlamaTensors<T> {
  embed: T;
  layers: LlamaLayer<T>[];
  finalNorm: T;
  lmHead: T;
}

function layerShapes(config: LlamaConfig): Record<keyof LlamaLayer<unknown>, [string, number[]]> {
  const { hiddenSize: d, intermediateSize: f, heads, kvHeads, headDim } = config;
  return {
    inputNorm: ['input_layernorm.weight', [d]],
    q: ['self_attn.q_proj.weight', [heads * headDim, d]],
    k: ['self_attn.k_proj.weight', [kvHeads * headDim, d]],
    v: ['self_attn.v_proj.weight', [kvHeads * headDim, d]],
    o: ['self_attn.o_proj.weight', [d, heads * headDim]],
    postNorm: ['post_attention_layernorm.weight', [d]],
    gate: ['mlp.gate_proj.weight', [f, d]],
    up: ['mlp.up_proj.weight', [f, d]],
    down: ['mlp.down_proj.weight', [d, f]],
  };
}

/**
 * The names of the tensors a Llama forward pass reads from `source` (transformers' LlamaForCausalLM names).
 * lm_head is `model.embed_tokens.weight` when the config ties embeddings or `lm_head.weight` is absent.
 * Throws EqzError `Malformed` naming the tensor when one is missing or its shape disagrees with `config`.
 */
export function llamaTensorNames(config: LlamaConfig, source: WeightSource): LlamaTensors<string> {
  const present = new Set(source.names());
  const expect = (name: string, shape: number[]): string => {
    if (!present.has(name)) throw new EqzError('Malformed', `the model has no tensor ${name}`, { tensor: name });
    const actual = source.shape(name);
    if (actual.length !== shape.length || actual.some((size, i) => size !== shape[i])) {
      throw new EqzError('Malformed', `shape [${actual.join(', ')}] does not match config.json, expected [${shape.join(', ')}]`, { tensor: name });
    }
    return name;
  };
  const { hiddenSize, vocabSize } = config;
  const embed = expect('model.embed_tokens.weight', [vocabSize, hiddenSize]);
  const layers: LlamaLayer<string>[] = [];
  for (let layer = 0; layer < config.layers; layer++) {
    const names = {} as LlamaLayer<string>;
    for (const [key, [suffix, shape]] of Object.entries(layerShapes(config))) {
      names[key as keyof LlamaLayer<string>] = expect(`model.layers.${layer}.${suffix}`, shape);
    }
    layers.push(names);
  }
  const untied = !config.tiedEmbeddings && present.has('lm_head.weight');
  return {
    embed,
    layers,
    finalNorm: expect('model.norm.weight', [hiddenSize]),
    lmHead: untied ? expect('lm_head.weight', [vocabSize, hiddenSize]) : embed,
  };
}

/**
 * Tensor `name` from `source`, checked to hold as many values as its shape says (a WeightSource that decodes
 * wrongly must not make the forward pass read past a tensor).
 */
export async function loadCheckedF32(source: WeightSource, name: string): Promise<Float32Array> {
  const values = await source.loadF32(name);
  const expected = source.shape(name).reduce((product, size) => product * size, 1);
  if (values.length !== expected) {
    throw new EqzError('Malformed', `loaded ${values.length} values, its shape holds ${expected}`, { tensor: name });
  }
  return values;
}

/** Every tensor in `names` loaded from `source` as F32 (a tied lm_head is the same array as embed). */
export async function loadLlamaTensors(source: WeightSource, names: LlamaTensors<string>): Promise<LlamaTensors<Float32Array>> {
  const embed = await loadCheckedF32(source, names.embed);
  const layers: LlamaLayer<Float32Array>[] = [];
  for (const layerNames of names.layers) {
    const layer = {} as LlamaLayer<Float32Array>;
    for (const [key, name] of Object.entries(layerNames)) layer[key as keyof LlamaLayer<string>] = await loadCheckedF32(source, name);
    layers.push(layer);
  }
  return {
    embed,
    layers,
    finalNorm: await loadCheckedF32(source, names.finalNorm),
    lmHead: names.lmHead === names.embed ? embed : await loadCheckedF32(source, names.lmHead),
  };
}
