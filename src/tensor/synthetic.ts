/**
 * Deterministic synthetic weights that look like trained LLM linears, for benchmarks, tests and the bundled
 * example: Student-t entries (heavy tails, ν = 5 by default), a log-normal spread of row scales, and a few outlier
 * rows. The same seed gives the same values on every platform (integer PRNG, f64 math rounded once to f32).
 */

/** xoshiro128** — a small, fast, well-distributed 32-bit generator; `next()` is uniform in [0, 1). */
export class SeededRandom {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spareNormal: number | undefined;

  constructor(seed: number) {
    // splitmix32 spreads one seed over the four state words (never all zero).
    let s = seed >>> 0;
    const mix = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = mix(); this.b = mix(); this.c = mix(); this.d = mix() | 1;
  }

  nextU32(): number {
    const result = Math.imul(((Math.imul(this.b, 5) << 7) | (Math.imul(this.b, 5) >>> 25)), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a; this.d ^= this.b; this.b ^= this.c; this.a ^= this.d;
    this.c ^= t;
    this.d = (this.d << 11) | (this.d >>> 21);
    return result;
  }

  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** Standard normal (Box–Muller, both values used). */
  normal(): number {
    if (this.spareNormal !== undefined) {
      const spare = this.spareNormal;
      this.spareNormal = undefined;
      return spare;
    }
    const u = 1 - this.next();
    const v = this.next();
    const radius = Math.sqrt(-2 * Math.log(u));
    this.spareNormal = radius * Math.sin(2 * Math.PI * v);
    return radius * Math.cos(2 * Math.PI * v);
  }

  /** Student-t with integer ν degrees of freedom: Z / sqrt(χ²_ν / ν). */
  studentT(nu: number): number {
    let chi = 0;
    for (let i = 0; i < nu; i++) chi += this.normal() ** 2;
    return this.normal() / Math.sqrt(chi / nu);
  }
}

export interface SyntheticOptions {
  seed: number;
  /** Typical magnitude of the entries (standard deviation before the row spread). */
  scale?: number;
  /** Degrees of freedom of the Student-t entries. */
  nu?: number;
  /** Standard deviation of log(row scale). */
  rowSpread?: number;
  /** Fraction of rows multiplied by `outlierGain`. */
  outlierRows?: number;
  outlierGain?: number;
}

/** A [rows, cols] row-major f32 matrix of LLM-like weights. */
export function syntheticWeights(rows: number, cols: number, options: SyntheticOptions): Float32Array {
  const { seed, scale = 0.02, nu = 5, rowSpread = 0.3, outlierRows = 0.002, outlierGain = 8 } = options;
  const random = new SeededRandom(seed);
  const out = new Float32Array(rows * cols);
  // Student-t(ν) has variance ν/(ν−2); divide it out so `scale` is the typical standard deviation.
  const unit = scale / Math.sqrt(nu / (nu - 2));
  for (let r = 0; r < rows; r++) {
    let rowScale = unit * Math.exp(rowSpread * random.normal());
    if (random.next() < outlierRows) rowScale *= outlierGain;
    for (let c = 0; c < cols; c++) out[r * cols + c] = rowScale * random.studentT(nu);
  }
  return out;
}
