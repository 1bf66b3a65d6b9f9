/**
 * Encoding coded streams on this thread: count the symbols, normalize the table, pick the chunk size and the
 * mode, then code the chunks in batches through the thread's reused WASM memory. The steps are exported
 * separately so the worker pool (pool.ts) can run the counting and the chunk coding on several threads.
 */
import { EqzError } from '../errors.js';
import {
  CHUNK_OVERHEAD_BYTES, LANES, MAX_CHUNK_LOG2, MIN_CHUNK_LOG2, MODE_STORED, PROB_SCALE, STATE_LOW,
  STREAM_HEADER_SIZE,
} from './constants.js';
import { chooseChunkLog2, codedSizeBits, entropyBitsPerSymbol, normalizeFrequencies } from './frequencies.js';
import { BATCH_SYMBOLS, chunksPerBatch } from './stream-decode.js';
import {
  assembleRansStream, frequencyTableLength, STATE_BYTES, storedBodyLength, writeHeader,
  type EncodedChunks, type SymbolBits,
} from './stream-format.js';
import { codecRuntime, type CodecRuntime } from './wasm.js';

/** How encodeStream codes a stream. */
export interface EncodeStreamOptions {
  /** 8 (default): symbols are bytes. 4: symbols are nibbles, one per input byte, values 0..15. */
  symbolBits?: SymbolBits;
  /** Symbols per chunk as a power of two, 12..24; default {@link chooseChunkLog2} at the data's entropy. */
  chunkLog2?: number;
  /** 'auto' (default): rANS unless storing is not larger. Empty input is always stored. */
  mode?: 'auto' | 'stored' | 'rans';
}

/**
 * Where a stream's symbols come from: a byte array, or one byte plane of a tensor (planes.ts). `fill` writes
 * symbols [begin, end) to linear memory at `target`, using arena space above it if it needs any.
 */
export interface SymbolSource {
  readonly count: number;
  fill(rt: CodecRuntime, begin: number, end: number, target: number): void;
}

/** The symbols of a byte array. */
export function arraySource(symbols: Uint8Array): SymbolSource {
  return {
    count: symbols.length,
    fill: (rt, begin, end, target) => rt.bytes.set(symbols.subarray(begin, end), target),
  };
}

/** How a stream will be coded, decided from its symbol counts. */
export type StreamPlan =
  | { mode: 'stored'; symbolBits: SymbolBits; count: number }
  | {
    mode: 'rans'; symbolBits: SymbolBits; count: number; frequencies: Uint32Array; chunkLog2: number;
    /** Store instead if the coded stream turns out not smaller (mode 'auto'). */
    storeIfNotSmaller: boolean;
  };

/**
 * Decides how to code `count` symbols with these `counts` (256 entries). Throws EqzError InvalidValue for a
 * nibble stream with a symbol above 15, RangeError for bad options.
 */
export function planStream(counts: Float64Array, count: number, options: EncodeStreamOptions = {}): StreamPlan {
  const symbolBits = options.symbolBits ?? 8;
  if (symbolBits !== 8 && symbolBits !== 4) throw new RangeError(`symbolBits must be 8 or 4, not ${String(symbolBits)}`);
  if (options.chunkLog2 !== undefined
    && !(Number.isInteger(options.chunkLog2) && options.chunkLog2 >= MIN_CHUNK_LOG2 && options.chunkLog2 <= MAX_CHUNK_LOG2)) {
    throw new RangeError(`chunkLog2 must be an integer in ${MIN_CHUNK_LOG2}..${MAX_CHUNK_LOG2}`);
  }
  const alphabetSize = 1 << symbolBits;
  for (let s = alphabetSize; s < counts.length; s++) {
    if (counts[s]! > 0) throw new EqzError('InvalidValue', `symbol ${s} in a ${symbolBits}-bit stream`);
  }
  const mode = options.mode ?? 'auto';
  if (count === 0 || mode === 'stored') return { mode: 'stored', symbolBits, count };

  const alphabetCounts = counts.subarray(0, alphabetSize);
  const storedLength = STREAM_HEADER_SIZE + storedBodyLength(count, symbolBits);
  // No table codes below the entropy, and the table and chunks cost at least this much: small or flat streams
  // are stored without normalizing a table (what tiny tensors would otherwise spend most of their time on).
  if (mode === 'auto') {
    let present = 0;
    for (const c of alphabetCounts) if (c > 0) present++;
    const floor = STREAM_HEADER_SIZE + alphabetSize / 8 + present + (CHUNK_OVERHEAD_BYTES - 64)
      + (entropyBitsPerSymbol(alphabetCounts) * count) / 8;
    if (floor >= storedLength) return { mode: 'stored', symbolBits, count };
  }
  const frequencies = normalizeFrequencies(alphabetCounts);
  const bits = codedSizeBits(alphabetCounts, frequencies);
  const chunkLog2 = options.chunkLog2 ?? chooseChunkLog2(count, bits / count);
  if (mode === 'auto') {
    // Each lane's final state keeps up to 16 bits that never become words (64 bytes per chunk), so this is a
    // lower bound on the coded size: when even it is not below the stored size, store without coding.
    const chunkCount = Math.ceil(count / 2 ** chunkLog2);
    const lowerBound = STREAM_HEADER_SIZE + frequencyTableLength(frequencies)
      + chunkCount * (CHUNK_OVERHEAD_BYTES - 64) + 2 * Math.ceil(bits / 16);
    if (lowerBound >= storedLength) return { mode: 'stored', symbolBits, count };
  }
  return { mode: 'rans', symbolBits, count, frequencies, chunkLog2, storeIfNotSmaller: mode === 'auto' };
}

/**
 * Symbol counts (256 entries) of symbols [begin, end) of `source`, read from linear memory at `resident` when
 * the caller already put the whole source there.
 */
export function countSymbols(source: SymbolSource, begin = 0, end = source.count, resident = -1): Float64Array {
  const rt = codecRuntime();
  const counts = new Float64Array(256);
  rt.scoped(() => {
    const partial = rt.alloc(256 * 4);
    const batch = resident >= 0 ? -1 : rt.alloc(Math.min(BATCH_SYMBOLS, end - begin));
    for (let from = begin; from < end; from += BATCH_SYMBOLS) {
      const to = Math.min(end, from + BATCH_SYMBOLS);
      const at = resident >= 0 ? resident + from : batch;
      if (resident < 0) source.fill(rt, from, to, at);
      rt.bytes.fill(0, partial, partial + 256 * 4);
      rt.wasm.histogram(at, to - from, partial);
      const batchCounts = rt.u32(partial, 256);
      for (let s = 0; s < 256; s++) counts[s] += batchCounts[s]!;
    }
  });
  return counts;
}

/**
 * Codes chunks [chunkBegin, chunkEnd) of a rANS plan; returns their states, word counts and words, in chunk
 * order (one part per batch). `resident` as in {@link countSymbols}.
 */
export function encodeRansRange(
  source: SymbolSource, plan: Extract<StreamPlan, { mode: 'rans' }>, chunkBegin: number, chunkEnd: number,
  resident = -1,
): EncodedChunks[] {
  const rt = codecRuntime();
  const chunkSymbols = 2 ** plan.chunkLog2;
  if (plan.frequencies.includes(PROB_SCALE)) {
    // One symbol: C(s, x) = x, so every state stays 2^16 and no word is ever pushed.
    const chunks = chunkEnd - chunkBegin;
    const states = new Uint32Array(chunks * LANES).fill(STATE_LOW);
    return [{ states: new Uint8Array(states.buffer), wordCounts: new Uint8Array(chunks * 4), words: new Uint8Array(0) }];
  }
  buildEncodeTable(rt, plan.frequencies);
  const parts: EncodedChunks[] = [];
  const batch = chunksPerBatch(chunkSymbols);
  for (let chunk = chunkBegin; chunk < chunkEnd; chunk += batch) {
    const batchEnd = Math.min(chunkEnd, chunk + batch);
    const begin = chunk * chunkSymbols;
    const end = Math.min(plan.count, batchEnd * chunkSymbols);
    parts.push(rt.scoped(() => {
      let symbols = resident + begin;
      if (resident < 0) {
        symbols = rt.alloc(end - begin);
        source.fill(rt, begin, end, symbols);
      }
      return encodeResidentChunks(rt, symbols, end - begin, plan.chunkLog2);
    }));
  }
  return parts;
}

/** Loads `frequencies` into the WASM encode table. */
function buildEncodeTable(rt: CodecRuntime, frequencies: Uint32Array): void {
  rt.u32(rt.wasm.frequencies(), frequencies.length).set(frequencies);
  rt.wasm.buildEncodeTable(rt.wasm.frequencies(), frequencies.length);
}

/**
 * Codes `count` symbols at `symbols` in linear memory as chunks of 2^chunkLog2 with the built encode table.
 * `copy` false: the parts are views into linear memory, valid only until the arena is next used.
 */
function encodeResidentChunks(rt: CodecRuntime, symbols: number, count: number, chunkLog2: number, copy = true): EncodedChunks {
  const chunks = Math.ceil(count / 2 ** chunkLog2);
  const states = rt.alloc(chunks * STATE_BYTES);
  const wordCounts = rt.alloc(chunks * 4);
  // One word per symbol at most, plus the 8 bytes below the stack that every step stores into speculatively.
  const wordsRegion = rt.alloc(2 * count + 16);
  const wordsEnd = wordsRegion + 2 * count + 16;
  const wordsStart = rt.wasm.encodeChunks(symbols, count, chunkLog2, states, wordCounts, wordsEnd) >>> 0;
  const memory = rt.bytes;
  const part = (from: number, to: number): Uint8Array => (copy ? memory.slice(from, to) : memory.subarray(from, to));
  return {
    states: part(states, states + chunks * STATE_BYTES),
    wordCounts: part(wordCounts, wordCounts + chunks * 4),
    words: part(wordsStart, wordsEnd),
  };
}

/** The stored stream of `source` (nibbles packed two per byte, low nibble first). */
export function encodeStoredStream(source: SymbolSource, symbolBits: SymbolBits, resident = -1): Uint8Array {
  const rt = codecRuntime();
  const count = source.count;
  const bodyLength = storedBodyLength(count, symbolBits);
  const out = new Uint8Array(STREAM_HEADER_SIZE + bodyLength);
  writeHeader(out, MODE_STORED, symbolBits, 0, 0, count, bodyLength);
  rt.scoped(() => {
    const batch = resident >= 0 ? -1 : rt.alloc(Math.min(BATCH_SYMBOLS, count));
    for (let begin = 0; begin < count; begin += BATCH_SYMBOLS) {
      const end = Math.min(count, begin + BATCH_SYMBOLS);
      const at = resident >= 0 ? resident + begin : batch;
      if (resident < 0) source.fill(rt, begin, end, at);
      const symbols = rt.bytes.subarray(at, at + end - begin);
      if (symbolBits === 8) {
        out.set(symbols, STREAM_HEADER_SIZE + begin);
      } else {
        // BATCH_SYMBOLS is even, so no pair straddles two batches.
        const base = STREAM_HEADER_SIZE + begin / 2;
        for (let i = 0; i < symbols.length; i += 2) out[base + (i >> 1)] = symbols[i]! | ((symbols[i + 1] ?? 0) << 4);
      }
    }
  });
  return out;
}

/** The complete stream of a rANS plan from its coded parts, or the stored stream if that is not larger and allowed. */
export function finishRansStream(
  source: SymbolSource, plan: Extract<StreamPlan, { mode: 'rans' }>, parts: EncodedChunks[], resident = -1,
): Uint8Array {
  const coded = assembleRansStream(plan.symbolBits, plan.chunkLog2, plan.count, plan.frequencies, parts);
  const storedLength = STREAM_HEADER_SIZE + storedBodyLength(plan.count, plan.symbolBits);
  return plan.storeIfNotSmaller && coded.length >= storedLength ? encodeStoredStream(source, plan.symbolBits, resident) : coded;
}

/** Encodes `symbols` as a complete coded stream (header and body); see {@link EncodeStreamOptions}. */
export function encodeStream(symbols: Uint8Array, options: EncodeStreamOptions = {}): Uint8Array {
  return encodeSource(arraySource(symbols), options);
}

/** Streams up to this many symbols are copied into linear memory once, for both the counting and the coding. */
export const RESIDENT_SYMBOLS = 1 << 24;

/**
 * {@link encodeStream} for any symbol source. `resident`: the address in linear memory where the caller has
 * already put all the source's symbols (else they are filled in here).
 */
export function encodeSource(source: SymbolSource, options: EncodeStreamOptions = {}, resident = -1): Uint8Array {
  const rt = codecRuntime();
  return rt.scoped(() => {
    if (resident < 0 && source.count <= RESIDENT_SYMBOLS) {
      resident = rt.alloc(source.count);
      source.fill(rt, 0, source.count, resident);
    }
    const plan = planStream(countSymbols(source, 0, source.count, resident), source.count, options);
    if (plan.mode === 'stored') return encodeStoredStream(source, plan.symbolBits, resident);
    const chunkCount = Math.ceil(plan.count / 2 ** plan.chunkLog2);
    if (resident < 0 || plan.frequencies.includes(PROB_SCALE)) {
      return finishRansStream(source, plan, encodeRansRange(source, plan, 0, chunkCount, resident), resident);
    }
    // All symbols in memory: code every chunk in one call and assemble straight from linear memory.
    buildEncodeTable(rt, plan.frequencies);
    const part = encodeResidentChunks(rt, resident, plan.count, plan.chunkLog2, false);
    return finishRansStream(source, plan, [part], resident);
  });
}
