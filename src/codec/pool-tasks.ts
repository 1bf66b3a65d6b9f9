/**
 * What a codec pool worker does with each request (pool.ts describes the protocol): the thread-independent part
 * of pool-worker.ts, so the pool's logic can also run on one thread.
 */
import { EqzError } from '../errors.js';
import { decodePlanesRange, encodeLossless, preparePlanes } from './planes.js';
import type { PoolReply, PoolRequest } from './pool.js';
import { decodeRansRange, decodeStream, prepareRansDecoder } from './stream-decode.js';
import { arraySource, countSymbols, encodeRansRange, encodeStream, type StreamPlan } from './stream-encode.js';
import { parseRansLayout, type EncodedChunks } from './stream-format.js';

function handle(request: PoolRequest): { value: unknown; transfer: ArrayBuffer[] } {
  switch (request.op) {
    case 'count':
      return { value: countSymbols(arraySource(request.symbols), request.begin, request.end), transfer: [] };
    case 'encodeChunks': {
      const parts: EncodedChunks[] = encodeRansRange(
        arraySource(request.symbols), request.plan as Extract<StreamPlan, { mode: 'rans' }>, request.chunkBegin, request.chunkEnd);
      return { value: parts, transfer: parts.flatMap((p) => [p.states.buffer, p.wordCounts.buffer, p.words.buffer] as ArrayBuffer[]) };
    }
    case 'decodeChunks': {
      const layout = parseRansLayout(request.stream);
      const decoder = prepareRansDecoder(request.stream, layout);
      decodeRansRange(request.stream, decoder, request.chunkBegin, request.chunkEnd, request.out);
      return { value: null, transfer: [] };
    }
    case 'encodeStream': {
      const stream = encodeStream(request.symbols, request.options);
      return { value: stream, transfer: [stream.buffer as ArrayBuffer] };
    }
    case 'decodePlanesRange': {
      decodePlanesRange(preparePlanes(request.payload, request.dtype, request.numel), request.begin, request.end, request.out);
      return { value: null, transfer: [] };
    }
    case 'encodeLossless': {
      const result = encodeLossless(request.bytes, request.dtype);
      return { value: result, transfer: result.encoding === 'planes' ? [result.payload.buffer as ArrayBuffer] : [] };
    }
    case 'decodeStream': {
      const { symbols } = decodeStream(request.stream, { maxSymbols: request.maxSymbols });
      return { value: symbols, transfer: [symbols.buffer as ArrayBuffer] };
    }
  }
}

/** Runs `request` on this thread's codec; the reply, and the buffers it can hand over without copying. */
export function answer(request: PoolRequest): { reply: PoolReply; transfer: ArrayBuffer[] } {
  try {
    const { value, transfer } = handle(request);
    return { reply: { id: request.id, value }, transfer };
  } catch (error) {
    const reply: PoolReply = error instanceof EqzError
      ? { id: request.id, error: { code: error.code, message: error.detail, tensor: error.tensor, offset: error.offset } }
      : { id: request.id, error: { message: error instanceof Error ? error.message : String(error) } };
    return { reply, transfer: [] };
  }
}
