/**
 * A codec pool worker (Node worker_threads): one WASM codec instance, running the pool's requests one at a time.
 * See pool.ts for the protocol.
 */
import { parentPort } from 'node:worker_threads';
import { EqzError } from '../errors.js';
import { decodePlanesRange, encodeLossless, preparePlanes } from './planes.js';
import { decodeRansRange, decodeStream, prepareRansDecoder } from './stream-decode.js';
import { arraySource, countSymbols, encodeRansRange, encodeStream, type StreamPlan } from './stream-encode.js';
import { parseRansLayout, type EncodedChunks } from './stream-format.js';
import { initCodec } from './wasm.js';
import type { PoolReply, PoolRequest } from './pool.js';

const port = parentPort;
if (!port) throw new Error('pool-worker.js runs only as a worker thread');

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

await initCodec();
port.on('message', (request: PoolRequest) => {
  let reply: PoolReply;
  let transfer: ArrayBuffer[] = [];
  try {
    const result = handle(request);
    reply = { id: request.id, value: result.value };
    transfer = result.transfer;
  } catch (error) {
    reply = error instanceof EqzError
      ? { id: request.id, error: { code: error.code, message: error.message, tensor: error.tensor, offset: error.offset } }
      : { id: request.id, error: { message: error instanceof Error ? error.message : String(error) } };
  }
  port.postMessage(reply, transfer);
});
port.postMessage({ id: -1, value: 'ready' } satisfies PoolReply);
