/**
 * A pool of worker threads (Node only), each with its own WASM codec, that encodes and decodes the chunks of one
 * big stream, or many independent streams, on all cores. Not imported by the decode path (index.ts).
 *
 * Inputs and outputs travel through SharedArrayBuffers: a stream is copied into one once (unless it already
 * lives in one) and every worker reads its chunk range from it and writes its symbols straight into a shared
 * output, so adding threads adds no copies.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Dtype } from '../container/format.js';
import { EqzError, type EqzErrorCode } from '../errors.js';
import { preparePlanes, type LosslessPayload } from './planes.js';
import { checkExpectations, decodeStream, type DecodedStream, type DecodeStreamOptions } from './stream-decode.js';
import {
  arraySource, encodeStoredStream, finishRansStream, planStream, type EncodeStreamOptions, type StreamPlan,
} from './stream-encode.js';
import { parseRansLayout, parseStreamHeader, type EncodedChunks } from './stream-format.js';
import { initCodec } from './wasm.js';

/** Requests a worker understands (pool-worker.ts). Ranges are chunk indices; arrays may be shared. */
export type PoolRequest = { id: number } & (
  | { op: 'count'; symbols: Uint8Array; begin: number; end: number }
  | { op: 'encodeChunks'; symbols: Uint8Array; plan: StreamPlan; chunkBegin: number; chunkEnd: number }
  | { op: 'decodeChunks'; stream: Uint8Array; chunkBegin: number; chunkEnd: number; out: Uint8Array }
  | { op: 'encodeStream'; symbols: Uint8Array; options: EncodeStreamOptions }
  | { op: 'decodeStream'; stream: Uint8Array; maxSymbols?: number }
  | { op: 'decodePlanesRange'; payload: Uint8Array; dtype: Dtype; numel: number; begin: number; end: number; out: Uint8Array }
  | { op: 'encodeLossless'; bytes: Uint8Array; dtype: Dtype }
);

/** A worker's answer: the value, or the error it threw (EqzErrors keep their code; `message` is then their detail). */
export interface PoolReply {
  id: number;
  value?: unknown;
  error?: { code?: EqzErrorCode; message: string; tensor?: string; offset?: number };
}

/** Request fields other than id and op, by op. */
type RequestBody<Op extends PoolRequest['op']> = Omit<Extract<PoolRequest, { op: Op }>, 'id' | 'op'>;

/** What the pool needs of a worker thread (node:worker_threads' Worker has it; tests may pass others). */
export interface PoolWorker {
  postMessage(request: PoolRequest): void;
  on(event: 'message', listener: (reply: PoolReply) => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  terminate(): Promise<unknown>;
}

/** Starts one worker; the pool waits for its first reply (id −1) before using it. */
export type PoolWorkerFactory = () => PoolWorker;

/** A worker thread running pool-worker.js (compiled: the pool runs from built JavaScript). */
export const threadWorker: PoolWorkerFactory = () => new Worker(new URL('./pool-worker.js', import.meta.url)) as unknown as PoolWorker;

interface Job {
  request: PoolRequest;
  resolve(value: unknown): void;
  reject(error: Error): void;
}

/** `bytes` in a SharedArrayBuffer (itself when it already is one). */
function shared(bytes: Uint8Array): Uint8Array {
  if (bytes.buffer instanceof SharedArrayBuffer) return bytes;
  const copy = new Uint8Array(new SharedArrayBuffer(bytes.length));
  copy.set(bytes);
  return copy;
}

/** Splits [0, count) into at most `parts` contiguous ranges of nearly equal length. */
export function splitRange(count: number, parts: number): Array<[number, number]> {
  const n = Math.max(1, Math.min(parts, count));
  return Array.from({ length: n }, (_, i) => [Math.floor((i * count) / n), Math.floor(((i + 1) * count) / n)] as [number, number])
    .filter(([begin, end]) => end > begin);
}

/**
 * Worker threads with a codec each. Create with {@link CodecPool.create}, close with {@link CodecPool.close}.
 * Every method validates on this thread what it hands out, and its results equal the single-thread functions'.
 */
export class CodecPool {
  private readonly workers: PoolWorker[];
  private readonly idle: PoolWorker[];
  private readonly queue: Job[] = [];
  private readonly pending = new Map<number, Job>();
  private nextId = 0;

  private constructor(workers: PoolWorker[]) {
    this.workers = workers;
    this.idle = [...workers];
    for (const worker of workers) {
      worker.on('message', (reply: PoolReply) => { if (reply.id >= 0) this.settle(worker, reply); });
      worker.on('error', (error: Error) => {
        for (const job of this.pending.values()) job.reject(error);
        this.pending.clear();
      });
    }
  }

  /** Starts `threads` workers (default: one per core) and the codec of this thread. */
  static async create(threads = availableParallelism(), spawn: PoolWorkerFactory = threadWorker): Promise<CodecPool> {
    await initCodec();
    const workers = await Promise.all(Array.from({ length: Math.max(1, threads) }, () => new Promise<PoolWorker>((resolve, reject) => {
      const worker = spawn();
      let ready = false;
      worker.on('message', () => {
        if (!ready) resolve(worker);
        ready = true;
      });
      worker.on('error', reject);
    })));
    return new CodecPool(workers);
  }

  /** Number of worker threads. */
  get size(): number {
    return this.workers.length;
  }

  private run<Op extends PoolRequest['op']>(op: Op, body: RequestBody<Op>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.queue.push({ request: { id: this.nextId++, op, ...body } as unknown as PoolRequest, resolve, reject });
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const job = this.queue.shift()!;
      const worker = this.idle.pop()!;
      this.pending.set(job.request.id, job);
      worker.postMessage(job.request);
    }
  }

  private settle(worker: PoolWorker, reply: PoolReply): void {
    const job = this.pending.get(reply.id);
    if (!job) return;
    this.pending.delete(reply.id);
    this.idle.push(worker);
    if (reply.error) {
      const { code, message, tensor, offset } = reply.error;
      job.reject(code ? new EqzError(code, message, { tensor, offset }) : new Error(message));
    } else {
      job.resolve(reply.value);
    }
    this.dispatch();
  }

  /**
   * Decodes one coded stream with its chunks spread over the workers (stored streams and one-chunk streams on
   * this thread). The stream is fully validated here first; options and errors as in decodeStream. The symbols
   * are in a SharedArrayBuffer unless `into` is given.
   */
  async decodeStream(bytes: Uint8Array, options: DecodeStreamOptions = {}): Promise<DecodedStream> {
    const header = parseStreamHeader(bytes, options);
    checkExpectations(header, options);
    if (header.mode === 'stored') return decodeStream(bytes, options);
    const layout = parseRansLayout(bytes, header, options);
    if (layout.chunkCount === 1) return decodeStream(bytes, options);
    const stream = shared(bytes.subarray(0, header.byteLength));
    const out = this.sharedOutput(header.symbolCount, options.into);
    await Promise.all(splitRange(layout.chunkCount, this.size).map(([chunkBegin, chunkEnd]) =>
      this.run('decodeChunks', { stream, chunkBegin, chunkEnd, out })));
    return { symbols: this.deliver(out, options.into), byteLength: header.byteLength };
  }

  /**
   * Decodes a planes payload with its element ranges spread over the workers; checked here first, errors as
   * decodePlanes. The bytes are in a SharedArrayBuffer unless `into` is given.
   */
  async decodePlanes(payload: Uint8Array, dtype: Dtype, numel: number, into?: Uint8Array): Promise<Uint8Array> {
    const planes = preparePlanes(payload, dtype, numel);
    const size = numel * planes.width;
    if (into && into.length < size) throw new EqzError('LimitExceeded', `output holds ${into.length} bytes, tensor needs ${size}`);
    const input = shared(payload);
    const out = this.sharedOutput(size, into);
    const units = Math.ceil(numel / planes.alignment);
    await Promise.all(splitRange(units, this.size).map(([first, last]) => this.run('decodePlanesRange', {
      payload: input, dtype, numel, begin: first * planes.alignment, end: Math.min(numel, last * planes.alignment), out,
    })));
    return this.deliver(out, into);
  }

  /** encodeLossless on a worker (the tensor's bytes are copied to it). */
  encodeLossless(bytes: Uint8Array, dtype: Dtype): Promise<LosslessPayload> {
    return this.run('encodeLossless', { bytes, dtype }) as Promise<LosslessPayload>;
  }

  /** Where workers write `size` output bytes: `into` itself when it is shared, else a new shared array. */
  private sharedOutput(size: number, into?: Uint8Array): Uint8Array {
    return into && into.buffer instanceof SharedArrayBuffer ? into.subarray(0, size) : new Uint8Array(new SharedArrayBuffer(size));
  }

  /** The output the caller asked for: `into` (filled from `out` unless the workers wrote it directly) or `out`. */
  private deliver(out: Uint8Array, into?: Uint8Array): Uint8Array {
    if (!into || out.buffer === into.buffer) return out;
    into.set(out);
    return into.subarray(0, out.length);
  }

  /** Encodes one stream: counting and chunk coding spread over the workers; the same bytes as encodeStream. */
  async encodeStream(symbols: Uint8Array, options: EncodeStreamOptions = {}): Promise<Uint8Array> {
    const input = shared(symbols);
    const counts = new Float64Array(256);
    const partials = await Promise.all(splitRange(input.length, this.size).map(([begin, end]) =>
      this.run('count', { symbols: input, begin, end }) as Promise<Float64Array>));
    for (const partial of partials) for (let s = 0; s < 256; s++) counts[s] += partial[s]!;
    const plan = planStream(counts, input.length, options);
    if (plan.mode === 'stored') return encodeStoredStream(arraySource(input), plan.symbolBits);
    const chunkCount = Math.ceil(plan.count / 2 ** plan.chunkLog2);
    const ranges = await Promise.all(splitRange(chunkCount, this.size).map(([chunkBegin, chunkEnd]) =>
      this.run('encodeChunks', { symbols: input, plan, chunkBegin, chunkEnd }) as Promise<EncodedChunks[]>));
    return finishRansStream(arraySource(input), plan, ranges.flat());
  }

  /** Encodes independent streams, one per worker at a time. */
  encodeStreams(list: Uint8Array[], options: EncodeStreamOptions = {}): Promise<Uint8Array[]> {
    return Promise.all(list.map((symbols) => this.run('encodeStream', { symbols, options }) as Promise<Uint8Array>));
  }

  /** Decodes independent streams, one per worker at a time (each stream's symbols in a new array). */
  decodeStreams(streams: Uint8Array[], options: { maxSymbols?: number } = {}): Promise<Uint8Array[]> {
    return Promise.all(streams.map((stream) =>
      this.run('decodeStream', { stream, maxSymbols: options.maxSymbols }) as Promise<Uint8Array>));
  }

  /** Stops the workers. */
  async close(): Promise<void> {
    await Promise.all(this.workers.map((worker) => worker.terminate()));
  }
}
