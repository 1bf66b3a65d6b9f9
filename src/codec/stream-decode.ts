/**
 * Decoding coded streams on this thread. rANS chunks reach the WASM decoder in batches through the thread's
 * reused linear memory (wasm.ts), so a stream of any length decodes in bounded memory; every length comes from
 * a parsed, checked layout (stream-format.ts).
 */
import { LANES, PROB_SCALE, STATE_LOW, STREAM_HEADER_SIZE } from './constants.js';
import {
  allocateOutput, checkStoredBody, dataView, parseRansLayout, parseStreamHeader, STATE_BYTES, streamError,
  type RansLayout, type StreamContext, type StreamHeader,
} from './stream-format.js';
import { codecRuntime } from './wasm.js';

/** Symbols per batch through linear memory (rounded up to whole chunks). */
export const BATCH_SYMBOLS = 1 << 22;

/** Chunks per batch through linear memory for chunks of `chunkSymbols`. */
export function chunksPerBatch(chunkSymbols: number): number {
  return Math.max(1, Math.floor(BATCH_SYMBOLS / chunkSymbols));
}

/** What decodeStream expects of a stream and where it writes (the context only names places in errors). */
export interface DecodeStreamOptions extends StreamContext {
  /** Decode into this array (it must hold symbol_count bytes, else LimitExceeded); a subarray of it is returned. */
  into?: Uint8Array;
  /** The symbol_count the encoding requires (spec §6.1); any other is Malformed. */
  expectedSymbols?: number;
  /** The symbol_bits the encoding requires; any other is Malformed. */
  expectedSymbolBits?: 8 | 4;
  /** Refuse (LimitExceeded) a stream of more symbols than this, before allocating its output. */
  maxSymbols?: number;
}

/** A decoded stream. */
export interface DecodedStream {
  /** One byte per symbol (nibble streams too). */
  symbols: Uint8Array;
  /** Bytes of input the stream occupied: 24 + body_length. */
  byteLength: number;
}

/** An rANS stream made ready to decode chunk ranges on this thread. */
export interface RansDecoder {
  layout: RansLayout;
  /** The symbol of a one-symbol stream (frequency 4096: states never change, no words), else −1. */
  onlySymbol: number;
  /** Decode-table slot (0..3) in linear memory; rebuilt if another stream took it meanwhile. */
  slot: number;
}

/**
 * Makes `layout` ready to decode with table slot `slot` (0..3: planes decoded together use different slots).
 * A one-symbol stream is checked instead: every state must be 2^16 (the only valid one) and it has no words.
 */
export function prepareRansDecoder(
  bytes: Uint8Array, layout: RansLayout, slot = 0, context: StreamContext = {},
): RansDecoder {
  const onlySymbol = layout.frequencies.indexOf(PROB_SCALE);
  if (onlySymbol >= 0) {
    const view = dataView(bytes);
    for (let i = 0; i < layout.chunkCount * LANES; i++) {
      if (view.getUint32(layout.statesOffset + 4 * i, true) !== STATE_LOW) {
        throw streamError('CorruptStream', 'one-symbol stream with a state other than 2^16', layout.statesOffset + 4 * i, context);
      }
    }
    if (layout.wordStarts[layout.chunkCount] !== 0) {
      throw streamError('CorruptStream', 'one-symbol stream with words', layout.wordCountsOffset, context);
    }
  }
  const decoder = { layout, onlySymbol, slot };
  if (onlySymbol < 0) decodeTableOf(decoder);
  return decoder;
}

/** The address of `decoder`'s table, building it first unless its slot still holds it. */
function decodeTableOf(decoder: RansDecoder): number {
  const rt = codecRuntime();
  const table = rt.decodeTable(decoder.slot);
  if (rt.decodeTableOwners[decoder.slot] !== decoder) {
    const { frequencies } = decoder.layout;
    rt.u32(rt.wasm.frequencies(), frequencies.length).set(frequencies);
    rt.wasm.buildDecodeTable(table, rt.wasm.frequencies(), frequencies.length);
    rt.decodeTableOwners[decoder.slot] = decoder;
  }
  return table;
}

const DECODE_FAILURES = [
  '', 'a lane state is below 2^16', 'the chunk needs more words than it has', 'words left over or a final state is not 2^16',
];

/** Decodes chunks [chunkBegin, chunkEnd) into linear memory at `target` (their symbols, one byte each). */
export function decodeRansChunks(
  bytes: Uint8Array, decoder: RansDecoder, chunkBegin: number, chunkEnd: number, target: number,
  context: StreamContext = {},
): void {
  const rt = codecRuntime();
  const { layout } = decoder;
  const first = chunkBegin * layout.chunkSymbols;
  const last = chunkEnd === layout.chunkCount ? layout.header.symbolCount : chunkEnd * layout.chunkSymbols;
  if (decoder.onlySymbol >= 0) {
    rt.bytes.fill(decoder.onlySymbol, target, target + last - first);
    return;
  }
  rt.scoped(() => {
    const chunks = chunkEnd - chunkBegin;
    const states = rt.alloc(chunks * STATE_BYTES);
    const wordCounts = rt.alloc(chunks * 4);
    const wordBytes = 2 * (layout.wordStarts[chunkEnd]! - layout.wordStarts[chunkBegin]!);
    const words = rt.alloc(wordBytes + rt.wordSlackBytes);
    const memory = rt.bytes;
    const statesAt = layout.statesOffset + chunkBegin * STATE_BYTES;
    memory.set(bytes.subarray(statesAt, statesAt + chunks * STATE_BYTES), states);
    rt.u32(wordCounts, chunks).set(layout.wordCounts.subarray(chunkBegin, chunkEnd));
    const wordsAt = layout.wordsOffset + 2 * layout.wordStarts[chunkBegin]!;
    memory.set(bytes.subarray(wordsAt, wordsAt + wordBytes), words);
    const lastChunkSymbols = last - (chunkEnd - 1) * layout.chunkSymbols;
    const failure = rt.wasm.decodeChunks(
      decodeTableOf(decoder), states, wordCounts, words, target, chunks, layout.chunkSymbols, lastChunkSymbols);
    if (failure >= 0) {
      const chunk = chunkBegin + (failure >> 2);
      throw streamError('CorruptStream', `chunk ${chunk}: ${DECODE_FAILURES[failure & 3]}`, layout.statesOffset + chunk * STATE_BYTES, context);
    }
  });
}

/**
 * Decodes chunks [chunkBegin, chunkEnd) into `symbols`, the whole stream's output (each chunk's symbols land
 * at their position in the stream), batch by batch.
 */
export function decodeRansRange(
  bytes: Uint8Array, decoder: RansDecoder, chunkBegin: number, chunkEnd: number, symbols: Uint8Array,
  context: StreamContext = {},
): void {
  const rt = codecRuntime();
  const { layout } = decoder;
  const batch = chunksPerBatch(layout.chunkSymbols);
  for (let chunk = chunkBegin; chunk < chunkEnd; chunk += batch) {
    const batchEnd = Math.min(chunkEnd, chunk + batch);
    const first = chunk * layout.chunkSymbols;
    const count = Math.min(layout.header.symbolCount, batchEnd * layout.chunkSymbols) - first;
    rt.scoped(() => {
      const target = rt.alloc(count);
      decodeRansChunks(bytes, decoder, chunk, batchEnd, target, context);
      symbols.set(rt.bytes.subarray(target, target + count), first);
    });
  }
}

/**
 * Checks a stream's header against what the caller expects: Malformed for another symbol_bits or
 * symbol_count, LimitExceeded for more symbols than `maxSymbols` or than `into` holds.
 */
export function checkExpectations(header: StreamHeader, options: DecodeStreamOptions): void {
  const context = options;
  if (options.expectedSymbolBits !== undefined && header.symbolBits !== options.expectedSymbolBits) {
    throw streamError('Malformed', `symbol_bits ${header.symbolBits}, expected ${options.expectedSymbolBits}`, 1, context);
  }
  if (options.expectedSymbols !== undefined && header.symbolCount !== options.expectedSymbols) {
    throw streamError('Malformed', `symbol_count ${header.symbolCount}, expected ${options.expectedSymbols}`, 8, context);
  }
  const limit = Math.min(options.maxSymbols ?? Infinity, options.into?.length ?? Infinity);
  if (header.symbolCount > limit) {
    throw streamError('LimitExceeded', `stream of ${header.symbolCount} symbols, at most ${limit} allowed`, 8, context);
  }
}

/**
 * Decodes the coded stream at the start of `bytes` (which may run on past its end: the stream's length is
 * returned), checking everything spec/eqz.md §6 requires. Errors are EqzError: Malformed (structure: header,
 * table, sizes, padding, unexpected symbol_bits or symbol_count), CorruptStream (the rANS data does not decode
 * exactly), LimitExceeded (more symbols than `maxSymbols` or `into` allow). Passing a Uint8Array as the second
 * argument means `{ into }`. Every allocation is bounded by the input: a rANS stream has at most 2^24 symbols per
 * 132 body bytes, a stored one at most 2 per byte.
 */
export function decodeStream(bytes: Uint8Array, options: DecodeStreamOptions | Uint8Array = {}): DecodedStream {
  const settings: DecodeStreamOptions = options instanceof Uint8Array ? { into: options } : options;
  const context: StreamContext = { streamOffset: settings.streamOffset, tensor: settings.tensor };
  const header = parseStreamHeader(bytes, context);
  checkExpectations(header, settings);
  const into = settings.into;
  if (header.mode === 'stored') {
    checkStoredBody(bytes, header, context);
    const symbols = into ? into.subarray(0, header.symbolCount) : allocateOutput(header.symbolCount, context);
    unpackStored(bytes, header, symbols);
    return { symbols, byteLength: header.byteLength };
  }
  const layout = parseRansLayout(bytes, header, context);
  const symbols = into ? into.subarray(0, header.symbolCount) : allocateOutput(header.symbolCount, context);
  const decoder = prepareRansDecoder(bytes, layout, 0, context);
  decodeRansRange(bytes, decoder, 0, layout.chunkCount, symbols, context);
  return { symbols, byteLength: header.byteLength };
}

/** Unpacks a checked stored body into `symbols` (nibbles: low nibble first). */
function unpackStored(bytes: Uint8Array, header: StreamHeader, symbols: Uint8Array): void {
  const count = header.symbolCount;
  const body = bytes.subarray(STREAM_HEADER_SIZE, header.byteLength);
  if (header.symbolBits === 8) {
    symbols.set(body.subarray(0, count));
    return;
  }
  for (let i = 0; i + 1 < count; i += 2) {
    const pair = body[i >> 1]!;
    symbols[i] = pair & 15;
    symbols[i + 1] = pair >> 4;
  }
  if (count % 2 === 1) symbols[count - 1] = body[count >> 1]! & 15;
}
