/**
 * Frequency tables: normalizing symbol counts to the coder's 4096 slots so the coded size is minimal, the
 * exact coded size a table gives, and the chunk size rule.
 */
import { CHUNK_OVERHEAD_BYTES, MAX_CHUNK_LOG2, MIN_CHUNK_LOG2, PROB_SCALE } from './constants.js';

/**
 * Slots per symbol, summing to `total`, that minimize the coded size Σ counts[s]·log2(total / f[s]) subject to
 * f[s] ≥ 1 for every symbol that occurs (and 0 for the others).
 *
 * The objective is separable and convex in each f, so a table is optimal exactly when no single slot can
 * move from one symbol to another with a gain; the exchange pass below ends only there. It starts from
 * max(1, ⌊c·(total − k)/N⌋) (k = symbols present), within a few slots of the optimum, plus a greedy fill of
 * the at most k slots left (each to the symbol whose next slot saves the most bits), so it makes few moves.
 * Ties go to the lowest symbol, so the table is deterministic. Throws RangeError if more symbols occur than
 * there are slots.
 */
export function normalizeFrequencies(counts: ArrayLike<number>, total = PROB_SCALE): Uint32Array {
  const frequencies = new Uint32Array(counts.length);
  const symbols: number[] = [];
  let sum = 0;
  for (let s = 0; s < counts.length; s++) {
    if (counts[s]! > 0) {
      symbols.push(s);
      sum += counts[s]!;
    }
  }
  if (symbols.length === 0) return frequencies;
  if (symbols.length > total) throw new RangeError(`${symbols.length} symbols cannot share ${total} slots`);

  const share = (total - symbols.length) / sum;
  let assigned = 0;
  for (const s of symbols) {
    frequencies[s] = Math.max(1, Math.floor(counts[s]! * share));
    assigned += frequencies[s]!;
  }
  // Gains and losses of each present symbol's next and last slot, kept current as slots move.
  const gain = new Float64Array(symbols.length);
  const loss = new Float64Array(symbols.length);
  const refresh = (i: number): void => {
    const count = counts[symbols[i]!]!;
    const f = frequencies[symbols[i]!]!;
    gain[i] = count * Math.log2((f + 1) / f);
    loss[i] = f > 1 ? count * Math.log2(f / (f - 1)) : Infinity;
  };
  for (let i = 0; i < symbols.length; i++) refresh(i);
  for (; assigned < total; assigned++) {
    const grow = argBest(gain, -1, 1);
    frequencies[symbols[grow]!]!++;
    refresh(grow);
  }
  // Exchange pass: move a slot while the best gain beats the cheapest loss (rarely more than a few moves).
  for (;;) {
    const shrink = argBest(loss, -1, -1);
    if (loss[shrink] === Infinity) break;
    const grow = argBest(gain, shrink, 1);
    if (grow < 0 || gain[grow]! <= loss[shrink]! * (1 + 1e-12)) break;
    frequencies[symbols[grow]!]!++;
    frequencies[symbols[shrink]!]!--;
    refresh(grow);
    refresh(shrink);
  }
  return frequencies;
}

/** Index of the largest (sign 1) or smallest (sign −1) value, skipping `except`; the first on ties; −1 if none. */
function argBest(values: Float64Array, except: number, sign: 1 | -1): number {
  let best = -1;
  for (let i = 0; i < values.length; i++) {
    if (i !== except && (best < 0 || sign * (values[i]! - values[best]!) > 0)) best = i;
  }
  return best;
}

/**
 * Exact size in bits of coding symbols with these `counts` under the table `frequencies` (the ideal
 * arithmetic-coding cost; rANS with 32-bit states is within a few bits per chunk of it). Infinity when a
 * symbol occurs but has no slot.
 */
export function codedSizeBits(counts: ArrayLike<number>, frequencies: ArrayLike<number>): number {
  let total = 0;
  for (let s = 0; s < frequencies.length; s++) total += frequencies[s]!;
  let bits = 0;
  for (let s = 0; s < counts.length; s++) {
    const count = counts[s]!;
    if (count === 0) continue;
    const f = frequencies[s] ?? 0;
    if (f === 0) return Infinity;
    bits += count * Math.log2(total / f);
  }
  return bits;
}

/** Order-0 Shannon entropy of `counts`, in bits per symbol (0 for no symbols). */
export function entropyBitsPerSymbol(counts: ArrayLike<number>): number {
  let n = 0;
  for (let s = 0; s < counts.length; s++) n += counts[s]!;
  if (n === 0) return 0;
  let bits = 0;
  for (let s = 0; s < counts.length; s++) {
    const count = counts[s]!;
    if (count > 0) bits -= count * Math.log2(count / n);
  }
  return bits / n;
}

/**
 * Largest share of the coded payload the per-chunk states and word counts may take: what keeps a stream under 1 %
 * over its entropy while giving the GPU enough chunks. On an H100 (bench:gpu, 1 GiB of codes), 2 bits/symbol decoded
 * at 683 GB/s in chunks of 2^17 (0.35 % over the entropy in all: 8192 chunks, just under the 8448 warps it holds at
 * once) and at 706 in 2^16 (0.65 %). This budget is the smallest that gives 2 bits 2^16, so that every rate decodes
 * at 700 GB/s or more within 1 %. 3 bits keep 2^16 (706, 0.49 %); 4 bits get 2^15 with it (the same share: 132 bytes
 * of 2^15 · 4 bits), which buys them little (704 GB/s at 0.43 % in 2^16, 706 at 0.74 % in 2^15).
 */
export const CHUNK_OVERHEAD_BUDGET = 0.0081;

/**
 * chunk_log2 the encoder uses for `symbolCount` symbols coded at `bitsPerSymbol`: the smallest chunk whose
 * fixed 132 bytes stay within {@link CHUNK_OVERHEAD_BUDGET} of its coded bytes — small chunks are what gives a
 * big tensor its parallelism (threads on the CPU, workgroups on the GPU) — clamped to 12..24, and no larger
 * than the smallest chunk holding the whole stream (one chunk then, whatever the header says).
 * E.g. 2 or 3 bits/symbol → 16, 4 bits → 15, 0.25 bits → 19.
 */
export function chooseChunkLog2(symbolCount: number, bitsPerSymbol: number): number {
  const minimumSymbols = (CHUNK_OVERHEAD_BYTES * 8) / (CHUNK_OVERHEAD_BUDGET * Math.max(bitsPerSymbol, 2 ** -8));
  let log2 = MIN_CHUNK_LOG2;
  while (log2 < MAX_CHUNK_LOG2 && 2 ** log2 < minimumSymbols) log2++;
  let wholeStream = MIN_CHUNK_LOG2;
  while (wholeStream < MAX_CHUNK_LOG2 && 2 ** wholeStream < symbolCount) wholeStream++;
  return Math.min(log2, wholeStream);
}
