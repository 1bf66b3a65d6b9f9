/**
 * The Llama forward pass in plain TypeScript: the reference the WebGPU path is tested against. Activations are
 * binary32 (Float32Array) between operations as in transformers' fp32 run; dot products and sums accumulate in
 * float64, which only makes them closer to exact.
 */
import type { LlamaConfig } from './llama-config.js';
import { ropeTable } from './rope.js';
import type { LlamaLayer, LlamaTensors } from './weights.js';

/**
 * `y[t, o] = Σ_i x[t, i] · w[o, i]` for t < rows, o < outDim (w is [outDim × inDim], as nn.Linear stores it);
 * with `accumulate` the product is added to y (the residual connection).
 * Two tokens × four outputs per pass: each weight and activation loaded is used four or two times.
 */
function matmulTransposed(
  x: Float32Array, rows: number, inDim: number, w: Float32Array, outDim: number, y: Float32Array, accumulate: boolean,
): void {
  let t = 0;
  for (; t + 2 <= rows; t += 2) {
    const xa = t * inDim;
    const xb = xa + inDim;
    const ya = t * outDim;
    const yb = ya + outDim;
    let o = 0;
    for (; o + 4 <= outDim; o += 4) {
      const w0 = o * inDim;
      const w1 = w0 + inDim;
      const w2 = w1 + inDim;
      const w3 = w2 + inDim;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
      for (let i = 0; i < inDim; i++) {
        const xav = x[xa + i];
        const xbv = x[xb + i];
        const v0 = w[w0 + i];
        const v1 = w[w1 + i];
        const v2 = w[w2 + i];
        const v3 = w[w3 + i];
        a0 += xav * v0; a1 += xav * v1; a2 += xav * v2; a3 += xav * v3;
        b0 += xbv * v0; b1 += xbv * v1; b2 += xbv * v2; b3 += xbv * v3;
      }
      if (accumulate) {
        y[ya + o] += a0; y[ya + o + 1] += a1; y[ya + o + 2] += a2; y[ya + o + 3] += a3;
        y[yb + o] += b0; y[yb + o + 1] += b1; y[yb + o + 2] += b2; y[yb + o + 3] += b3;
      } else {
        y[ya + o] = a0; y[ya + o + 1] = a1; y[ya + o + 2] = a2; y[ya + o + 3] = a3;
        y[yb + o] = b0; y[yb + o + 1] = b1; y[yb + o + 2] = b2; y[yb + o + 3] = b3;
      }
    }
    for (; o < outDim; o++) {
      const wo = o * inDim;
      let a = 0, b = 0;
      for (let i = 0; i < inDim; i++) {
        a += x[xa + i] * w[wo + i];
        b += x[xb + i] * w[wo + i];
      }
      y[ya + o] = accumulate ? y[ya + o] + a : a;
      y[yb + o] = accumulate ? y[yb + o] + b : b;
    }
  }
  for (; t < rows; t++) {
    const xa = t * inDim;
    const ya = t * outDim;
    for (let o = 0; o < outDim; o++) {
      const wo = o * inDim;
      let a = 0;
      for (let i = 0; i < inDim; i++) a += x[xa + i] * w[wo + i];
      y[ya + o] = accumulate ? y[ya + o] + a : a;
    }
  }
}

/** `y[t] = weight ⊙ x[t] / sqrt(mean(x[t]²) + eps)` for each of `rows` rows of `width`, rounded as torch does. */
function rmsNorm(x: Float32Array, rows: number, width: number, weight: Float32Array, eps: number, y: Float32Array): void {
  for (let t = 0; t < rows; t++) {
    const base = t * width;
    let sumOfSquares = 0;
    for (let i = 0; i < width; i++) sumOfSquares += x[base + i] * x[base + i];
    const inverseRms = Math.fround(1 / Math.sqrt(Math.fround(Math.fround(sumOfSquares / width) + eps)));
    for (let i = 0; i < width; i++) y[base + i] = weight[i] * Math.fround(x[base + i] * inverseRms);
  }
}

/** Rotates every head of `x` ([rows × heads × headDim]) in place: element i pairs with i + headDim / 2. */
function applyRope(x: Float32Array, rows: number, heads: number, headDim: number, table: Float32Array): void {
  const half = headDim / 2;
  for (let t = 0; t < rows; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const cos = table[2 * (t * half + i)];
        const sin = table[2 * (t * half + i) + 1];
        const first = x[base + i];
        const second = x[base + i + half];
        x[base + i] = Math.fround(first * cos) - Math.fround(second * sin);
        x[base + i + half] = Math.fround(second * cos) + Math.fround(first * sin);
      }
    }
  }
}

/** A Llama model held in memory, evaluating one window of tokens at a time into reusable buffers. */
export class LlamaCpuModel {
  private readonly config: LlamaConfig;
  private readonly weights: LlamaTensors<Float32Array>;
  private readonly rope: Float32Array;
  private readonly maxTokens: number;
  private readonly hidden: Float32Array;
  private readonly normed: Float32Array;
  private readonly queries: Float32Array;
  private readonly keys: Float32Array;
  private readonly values: Float32Array;
  private readonly attended: Float32Array;
  private readonly gate: Float32Array;
  private readonly up: Float32Array;
  private readonly scores: Float64Array;
  /** One head's attention-weighted sum of values, before dividing by the softmax denominator. */
  private readonly mixed: Float64Array;

  /** A model over `weights` that evaluates windows of up to `maxTokens` tokens. */
  constructor(config: LlamaConfig, weights: LlamaTensors<Float32Array>, maxTokens: number) {
    this.config = config;
    this.weights = weights;
    this.maxTokens = maxTokens;
    this.rope = ropeTable(config, maxTokens);
    const { hiddenSize, intermediateSize, heads, kvHeads, headDim } = config;
    this.hidden = new Float32Array(maxTokens * hiddenSize);
    this.normed = new Float32Array(maxTokens * hiddenSize);
    this.queries = new Float32Array(maxTokens * heads * headDim);
    this.keys = new Float32Array(maxTokens * kvHeads * headDim);
    this.values = new Float32Array(maxTokens * kvHeads * headDim);
    this.attended = new Float32Array(maxTokens * heads * headDim);
    this.gate = new Float32Array(maxTokens * intermediateSize);
    this.up = new Float32Array(maxTokens * intermediateSize);
    this.scores = new Float64Array(maxTokens);
    this.mixed = new Float64Array(headDim);
  }

  /** Next-token logits ([inputs.length × vocab]) for `inputs`, a fresh context starting at position 0. */
  logits(inputs: Uint16Array, out: Float32Array): void {
    const { hiddenSize, vocabSize, rmsNormEps } = this.config;
    const rows = inputs.length;
    if (rows > this.maxTokens || out.length < rows * vocabSize) throw new RangeError('window larger than the model was sized for');
    const embed = this.weights.embed;
    for (let t = 0; t < rows; t++) {
      const from = inputs[t] * hiddenSize;
      for (let i = 0; i < hiddenSize; i++) this.hidden[t * hiddenSize + i] = embed[from + i];
    }
    for (const layer of this.weights.layers) this.decoderLayer(layer, rows);
    rmsNorm(this.hidden, rows, hiddenSize, this.weights.finalNorm, rmsNormEps, this.normed);
    matmulTransposed(this.normed, rows, hiddenSize, this.weights.lmHead, vocabSize, out, false);
  }

  private decoderLayer(layer: LlamaLayer<Float32Array>, rows: number): void {
    const { hiddenSize, intermediateSize, heads, kvHeads, headDim, rmsNormEps } = this.config;
    rmsNorm(this.hidden, rows, hiddenSize, layer.inputNorm, rmsNormEps, this.normed);
    matmulTransposed(this.normed, rows, hiddenSize, layer.q, heads * headDim, this.queries, false);
    matmulTransposed(this.normed, rows, hiddenSize, layer.k, kvHeads * headDim, this.keys, false);
    matmulTransposed(this.normed, rows, hiddenSize, layer.v, kvHeads * headDim, this.values, false);
    applyRope(this.queries, rows, heads, headDim, this.rope);
    applyRope(this.keys, rows, kvHeads, headDim, this.rope);
    this.attention(rows);
    matmulTransposed(this.attended, rows, heads * headDim, layer.o, hiddenSize, this.hidden, true);

    rmsNorm(this.hidden, rows, hiddenSize, layer.postNorm, rmsNormEps, this.normed);
    matmulTransposed(this.normed, rows, hiddenSize, layer.gate, intermediateSize, this.gate, false);
    matmulTransposed(this.normed, rows, hiddenSize, layer.up, intermediateSize, this.up, false);
    const active = rows * intermediateSize;
    for (let i = 0; i < active; i++) {
      const g = this.gate[i];
      this.gate[i] = Math.fround(g / (1 + Math.exp(-g))) * this.up[i];
    }
    matmulTransposed(this.gate, rows, intermediateSize, layer.down, hiddenSize, this.hidden, true);
  }

  /**
   * Causal grouped-query attention: query head h reads key/value head h / (heads / kvHeads). Keys are taken four
   * at a time, so that each query (or probability) value loaded serves four keys.
   */
  private attention(rows: number): void {
    const { heads, kvHeads, headDim } = this.config;
    const { queries, keys, values, attended, scores, mixed } = this;
    const group = heads / kvHeads;
    const scale = Math.fround(1 / Math.sqrt(headDim));
    const queryStride = heads * headDim;
    const keyStride = kvHeads * headDim;
    for (let h = 0; h < heads; h++) {
      const keyOffset = Math.floor(h / group) * headDim;
      for (let query = 0; query < rows; query++) {
        const q = query * queryStride + h * headDim;
        const keyCount = query + 1;
        let key = 0;
        for (; key + 4 <= keyCount; key += 4) {
          const k0 = key * keyStride + keyOffset;
          const k1 = k0 + keyStride;
          const k2 = k1 + keyStride;
          const k3 = k2 + keyStride;
          let d0 = 0, d1 = 0, d2 = 0, d3 = 0;
          for (let i = 0; i < headDim; i++) {
            const qi = queries[q + i];
            d0 += qi * keys[k0 + i]; d1 += qi * keys[k1 + i]; d2 += qi * keys[k2 + i]; d3 += qi * keys[k3 + i];
          }
          scores[key] = Math.fround(d0); scores[key + 1] = Math.fround(d1);
          scores[key + 2] = Math.fround(d2); scores[key + 3] = Math.fround(d3);
        }
        for (; key < keyCount; key++) {
          const k = key * keyStride + keyOffset;
          let dot = 0;
          for (let i = 0; i < headDim; i++) dot += queries[q + i] * keys[k + i];
          scores[key] = Math.fround(dot);
        }
        let max = -Infinity;
        for (key = 0; key < keyCount; key++) {
          scores[key] = Math.fround(scores[key] * scale);
          if (scores[key] > max) max = scores[key];
        }
        let sum = 0;
        for (key = 0; key < keyCount; key++) {
          scores[key] = Math.exp(scores[key] - max);
          sum += scores[key];
        }
        mixed.fill(0);
        for (key = 0; key + 4 <= keyCount; key += 4) {
          const p0 = scores[key], p1 = scores[key + 1], p2 = scores[key + 2], p3 = scores[key + 3];
          const v0 = key * keyStride + keyOffset;
          const v1 = v0 + keyStride;
          const v2 = v1 + keyStride;
          const v3 = v2 + keyStride;
          for (let i = 0; i < headDim; i++) mixed[i] += p0 * values[v0 + i] + p1 * values[v1 + i] + p2 * values[v2 + i] + p3 * values[v3 + i];
        }
        for (; key < keyCount; key++) {
          const p = scores[key];
          const v = key * keyStride + keyOffset;
          for (let i = 0; i < headDim; i++) mixed[i] += p * values[v + i];
        }
        for (let i = 0; i < headDim; i++) attended[q + i] = mixed[i] / sum;
      }
    }
  }
}
