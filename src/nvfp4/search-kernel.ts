/**
 * The per-block work of eqz's NVFP4 optimizer on the CPU — the definition that wgsl/nvfp4_search.wgsl mirrors
 * operation for operation, so both choose the same block scales and codes (test/nvfp4-search.test.ts checks
 * it on both software adapters).
 *
 * Given the global scale (m = RNE_f32(1/global_scale)), a block of 16 weights can only take 127 block scales
 * that matter: E4M3 codes 0 (the zero scale: everything decodes to 0) to 126 (448). Every one is tried. For a
 * scale code k each weight goes to the nearest decoded value d[k][i] = RNE_f32(e2m1(i) × e4m3(k) × m) below or
 * above it — with rate–distortion optimised rounding, whichever costs less squared error + μ·code length — and
 * the block costs D + μ·L, D its squared error and L the code lengths of its 16 codes plus that of the scale
 * under the tensor's frequency tables. The cheapest k wins, the lowest k on a tie.
 *
 * Why the choices cannot depend on the device: the decoded values d come from the host (a table), so the only
 * float operations are correctly rounded f32 subtractions and products (never a sum of products a compiler could
 * fuse):
 * - errors are capped at 2^(E+1) and scaled by 2^-E (E = exponent of the block's absmax: exact), squared and
 *   truncated to integers in units of 2^-24 of 2^(2E), and summed as integers (a block's sum stays ≤ 2^30);
 * - a cost comparison D_a + μ'·L_a < D_b + μ'·L_b is made as the integer D_a − D_b against ceil(μ'·(L_b − L_a)),
 *   one correctly rounded f32 product; μ' = μ·2^(24 − 2E) is an exact power-of-two rescaling (clamped);
 * - subnormal weights are flushed to zero explicitly (a GPU may flush them); a subnormal scaled error or square
 *   can only give 0 units, flushed or not.
 */
import { ldexpClamped } from '../quant/search-kernel.js';
import { NVFP4_BLOCK } from './e2m1.js';

/** Block-scale codes tried: E4M3 0 (zero) to 126 (448, the largest finite). */
export const SCALE_CANDIDATES = 127;
/**
 * Squared errors are integers in units of 2^-24 of the block's binade squared; with errors capped at twice the
 * binade one element gives at most 2^26 and a block at most 2^30.
 */
const ERROR_UNITS = 2 ** 24;
/** μ'·ΔL is clamped into the i32 range before it is compared with an error difference (|difference| ≤ 2^30). */
const PRODUCT_CLAMP = 2147483520;

/** Everything one pass of the search needs besides the weights. */
export interface BlockSearchParams {
  /** Decoded magnitudes d[k·8 + i] = RNE_f32(e2m1(i) × e4m3(k) × m), k < 127 (f32 values). */
  decoded: Float32Array;
  /** Code length of each of the 16 codes, in integer units (quant/rate.ts codeLengths). */
  codeLengths: Uint32Array;
  /** Code length of each scale code 0..126, same units. */
  scaleLengths: Uint32Array;
  /** μ: absolute squared error per length unit (an f32; 0 = distortion only). */
  lambdaPerLength: number;
  /** Rate–distortion optimised rounding (else: nearest decoded value, ties down). */
  rdo: boolean;
}

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

function fromBits(bits: number): number {
  scratchBits[0] = bits >>> 0;
  return scratch[0]!;
}

/**
 * Integer squared error of `error` (f32, ≥ 0) scaled by `toUnit` (2^-E); errors beyond `cap` (2^(E+1)) count as
 * `cap`, which keeps the scaled value finite (a huge candidate scale next to a tiny block would overflow it).
 * A subnormal scaled error or square gives 0 units whether or not a device flushes it.
 */
function errorUnits(error: number, toUnit: number, cap: number): number {
  const scaled = Math.fround((error < cap ? error : cap) * toUnit);
  // ≤ 2^26: truncating to an i32 is the floor.
  return (Math.fround(scaled * scaled) * ERROR_UNITS) | 0;
}

/** μ'·Δ (one correctly rounded f32 product) clamped into the i32 range. */
function clampedProduct(mu: number, delta: number): number {
  return Math.min(Math.max(Math.fround(mu * delta), -PRODUCT_CLAMP), PRODUCT_CLAMP);
}

/** Per-block state of the search (reused across blocks: no allocation per block). */
export class BlockSearcher {
  private readonly magnitudes = new Float32Array(NVFP4_BLOCK);
  private readonly signs = new Uint8Array(NVFP4_BLOCK);
  /**
   * Rounding up from magnitude index i (sign s) wins iff the error units drop by more than upThreshold[s·8 + i]
   * = floor(μ'·(len(up) − len(down))): the block's 14 possible rate differences, computed once per block.
   */
  private readonly upThreshold = new Int32Array(16);
  /** Codes of the candidate being evaluated. */
  readonly codes = new Uint8Array(NVFP4_BLOCK);
  private toUnit = 1;
  private cap = 2;
  private mu = 0;
  // The pass's parameters, held as fields of this one class (the hot loop reads them per candidate).
  private readonly decoded: Float32Array;
  private readonly codeLengths: Uint32Array;
  private readonly scaleLengths: Uint32Array;
  private readonly lambdaPerLength: number;
  private readonly rdo: boolean;

  constructor(params: BlockSearchParams) {
    this.decoded = params.decoded;
    this.codeLengths = params.codeLengths;
    this.scaleLengths = params.scaleLengths;
    this.lambdaPerLength = params.lambdaPerLength;
    this.rdo = params.rdo;
  }

  /**
   * Loads the block of 16 weights (f32 bit patterns) at `bits[start]`: magnitudes (subnormals flushed), signs,
   * the binade 2^E of the absmax (E clamped to ±126 so 2^-E is a normal f32), μ' = μ·2^(24 − 2E) and the
   * rounding thresholds.
   */
  load(bits: Uint32Array, start: number): void {
    let maxBits = 0;
    for (let j = 0; j < NVFP4_BLOCK; j++) {
      const wordBits = bits[start + j]!;
      const magnitudeBits = wordBits & 0x7fffffff;
      const normal = magnitudeBits >= 0x00800000;
      this.magnitudes[j] = normal ? fromBits(magnitudeBits) : 0;
      this.signs[j] = normal && wordBits >>> 31 === 1 ? 8 : 0;
      if (normal && magnitudeBits > maxBits) maxBits = magnitudeBits;
    }
    const exponent = maxBits === 0 ? 0 : Math.min(Math.max((maxBits >>> 23) - 127, -126), 126);
    this.toUnit = fromBits((127 - exponent) << 23);
    this.cap = fromBits((128 + exponent) << 23);
    this.mu = ldexpClamped(this.lambdaPerLength, 24 - 2 * exponent);
    const lengths = this.codeLengths;
    for (let sign = 0; sign <= 8; sign += 8) {
      for (let index = 0; index < 7; index++) {
        const down = index === 0 ? 0 : sign | index;
        this.upThreshold[sign | index] = Math.floor(clampedProduct(this.mu, lengths[sign | (index + 1)]! - lengths[down]!));
      }
    }
  }

  /**
   * Quantizes the loaded block at scale code k into {@link codes}; writes its integer squared error D to
   * out[0] and its code length L (the 16 codes plus the scale) to out[1].
   */
  evaluate(k: number, out: Int32Array): void {
    const { decoded, codeLengths, rdo, magnitudes, signs, upThreshold, codes, toUnit, cap } = this;
    let distortion = 0;
    let length = this.scaleLengths[k]!;
    const base = k * 8;
    if (k === 0) {
      for (let j = 0; j < NVFP4_BLOCK; j++) {
        codes[j] = 0;
        distortion += errorUnits(magnitudes[j]!, toUnit, cap);
      }
      out[0] = distortion;
      out[1] = length + NVFP4_BLOCK * codeLengths[0]!;
      return;
    }
    const d4 = decoded[base + 4]!;
    for (let j = 0; j < NVFP4_BLOCK; j++) {
      const a = magnitudes[j]!;
      // Largest i with d[i] ≤ a (d[0] = 0 ≤ a): three exact comparisons.
      let index = a >= d4 ? 4 : 0;
      if (a >= decoded[base + index + 2]!) index += 2;
      if (a >= decoded[base + index + 1]!) index += 1;
      const low = Math.fround(a - decoded[base + index]!);
      let units = errorUnits(low, toUnit, cap);
      let code = index === 0 ? 0 : signs[j]! | index;
      if (index < 7) {
        const high = Math.fround(decoded[base + index + 1]! - a);
        const highUnits = errorUnits(high, toUnit, cap);
        if (rdo ? units - highUnits > upThreshold[signs[j]! | index]! : high < low) {
          units = highUnits;
          code = signs[j]! | (index + 1);
        }
      }
      codes[j] = code;
      distortion += units;
      length += codeLengths[code]!;
    }
    out[0] = distortion;
    out[1] = length;
  }

  /** Whether cost (distortion, length) beats (bestDistortion, bestLength): D − D* < ceil(μ'·(L* − L)). */
  better(distortion: number, length: number, bestDistortion: number, bestLength: number): boolean {
    return distortion - bestDistortion < Math.ceil(clampedProduct(this.mu, bestLength - length));
  }
}

/**
 * One pass over blocks [firstBlock, endBlock) of `bits` (f32 weights, 16 per block): each block's best scale
 * code into `scales`, its codes packed two per byte into `packed` (when given), the code and scale histograms
 * added to `codeCounts` (16) and `scaleCounts` (127).
 */
export function searchBlocksCpu(
  bits: Uint32Array, firstBlock: number, endBlock: number, params: BlockSearchParams,
  scales: Uint8Array, packed: Uint8Array | null, codeCounts: Float64Array, scaleCounts: Float64Array,
): void {
  const searcher = new BlockSearcher(params);
  const cost = new Int32Array(2);
  for (let block = firstBlock; block < endBlock; block++) {
    searcher.load(bits, block * NVFP4_BLOCK);
    let best = 0;
    searcher.evaluate(0, cost);
    let bestDistortion = cost[0]!;
    let bestLength = cost[1]!;
    for (let k = 1; k < SCALE_CANDIDATES; k++) {
      searcher.evaluate(k, cost);
      if (searcher.better(cost[0]!, cost[1]!, bestDistortion, bestLength)) {
        best = k;
        bestDistortion = cost[0]!;
        bestLength = cost[1]!;
      }
    }
    searcher.evaluate(best, cost);
    scales[block] = best;
    scaleCounts[best]!++;
    const codes = searcher.codes;
    for (let j = 0; j < NVFP4_BLOCK; j++) codeCounts[codes[j]!]!++;
    if (packed) {
      const at = block * (NVFP4_BLOCK / 2);
      for (let j = 0; j < NVFP4_BLOCK / 2; j++) packed[at + j] = codes[2 * j]! | (codes[2 * j + 1]! << 4);
    }
  }
}
