/**
 * What a window of logits costs: the negative log-likelihood of each next token and, against a reference model's
 * logits, KL(reference ‖ model). Computed in float64 from binary32 logits (the CPU backend's reduction).
 */

function logSumExp(logits: Float32Array, base: number, vocab: number): number {
  let max = -Infinity;
  for (let v = 0; v < vocab; v++) if (logits[base + v] > max) max = logits[base + v];
  let sum = 0;
  for (let v = 0; v < vocab; v++) sum += Math.exp(logits[base + v] - max);
  return max + Math.log(sum);
}

/**
 * For each row t of `logits` ([targets.length × vocab]): `nll[t] = −log softmax(logits[t])[targets[t]]`, and when
 * `reference` is given `kl[t] = Σ_v p_ref(v) (log p_ref(v) − log p_model(v))` with p_ref = softmax(reference[t]).
 */
export function scoreLogits(
  logits: Float32Array, targets: Uint16Array, vocab: number, nll: Float64Array,
  reference?: { logits: Float32Array; kl: Float64Array },
): void {
  for (let t = 0; t < targets.length; t++) {
    const base = t * vocab;
    const logNormalizer = logSumExp(logits, base, vocab);
    nll[t] = logNormalizer - logits[base + targets[t]];
    if (!reference) continue;
    const referenceLogNormalizer = logSumExp(reference.logits, base, vocab);
    let divergence = 0;
    for (let v = 0; v < vocab; v++) {
      const referenceLogProbability = reference.logits[base + v] - referenceLogNormalizer;
      divergence += Math.exp(referenceLogProbability) * (referenceLogProbability - (logits[base + v] - logNormalizer));
    }
    reference.kl[t] = divergence;
  }
}
