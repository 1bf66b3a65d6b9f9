/**
 * Data-free detection of "super weights" (Yu et al., 2024): a handful of scalar weights, typically in an MLP
 * down-projection, far larger than anything else in their row, which the model cannot afford to lose.
 * EntQuant protects the layers holding them by quantizing those layers with plain absmax FP8 (which keeps
 * each row's largest weight to 1/16 relative precision) instead of a rate-optimised scale.
 *
 * Without activations we look at the weights alone, row by row (outlier rows, whose weights are all large,
 * are ordinary; a super weight stands out within its own row): z = |w − row mean| / σ_row with σ_row a robust
 * scale, √(π/2)·mean|w − row mean| (the standard deviation for normal data, barely moved by one huge weight).
 * Rows shorter than {@link MIN_ROW} are pooled into one.
 *
 * Measured: the shared LMs' linears stay below 6; Student-t (ν = 5) synthetic 4096×4096 reaches 33 (its max
 * grows like N^(1/5), so about 55 at 8192×28672); super weights of LLMs sit in the hundreds.
 */

/** A tensor is flagged when some weight lies more than this many robust standard deviations from its row. */
export const SUPER_WEIGHT_Z = 100;
/** Rows shorter than this give no stable scale; such matrices are measured as one pool. */
const MIN_ROW = 32;

/** Result of {@link detectSuperWeights}. */
export interface SuperWeightReport {
  /** Whether the tensor holds an extreme outlier (max |z| > {@link SUPER_WEIGHT_Z}). */
  outlier: boolean;
  /** Largest |z| over the tensor (0 when every row is constant). */
  maxAbsZ: number;
  /** Flat index of that weight (row = index / cols). */
  index: number;
}

/** Largest |z| of a [rows, cols] weight matrix (see above), and whether it marks a super-weight layer. */
export function detectSuperWeights(weights: Float32Array, rows: number, cols: number): SuperWeightReport {
  const poolLength = cols >= MIN_ROW ? cols : rows * cols;
  let maxAbsZ = 0;
  let index = 0;
  for (let start = 0; start < rows * cols; start += poolLength) {
    let sum = 0;
    for (let i = start; i < start + poolLength; i++) sum += weights[i]!;
    const mean = sum / poolLength;
    let absoluteDeviation = 0;
    let largest = 0;
    let largestAt = start;
    for (let i = start; i < start + poolLength; i++) {
      const deviation = Math.abs(weights[i]! - mean);
      absoluteDeviation += deviation;
      if (deviation > largest) {
        largest = deviation;
        largestAt = i;
      }
    }
    const sigma = Math.sqrt(Math.PI / 2) * (absoluteDeviation / poolLength);
    if (sigma > 0 && largest / sigma > maxAbsZ) {
      maxAbsZ = largest / sigma;
      index = largestAt;
    }
  }
  return { outlier: maxAbsZ > SUPER_WEIGHT_Z, maxAbsZ, index };
}
