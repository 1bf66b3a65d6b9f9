/**
 * Loads the eqz WASM codec (assembly/ → build/eqz.wasm, embedded as base64 by scripts/embed-wasm.mjs) and
 * manages its linear memory: one instance per thread, one growable memory reused by every call.
 *
 * Memory below `heapBase` holds the codec's fixed tables; above it a bump arena serves each call's regions
 * (symbols, states, words) and is rewound when the call returns, so repeated calls of similar sizes never grow
 * the memory again. Nothing here uses Node APIs.
 */
import { EqzError } from '../errors.js';
import { EQZ_WASM_BASE64 } from './wasm-binary.js';

/** The functions assembly/index.ts exports (pointers and sizes are byte addresses/counts in linear memory). */
interface CodecExports {
  memory: WebAssembly.Memory;
  _initialize(): void;
  heapBase(): number;
  decodeTables(): number;
  frequencies(): number;
  WORD_SLACK_BYTES: WebAssembly.Global;
  buildDecodeTable(table: number, frequencies: number, alphabetSize: number): void;
  decodeChunks(
    table: number, states: number, wordCounts: number, words: number, out: number,
    chunkCount: number, chunkSymbols: number, lastChunkSymbols: number,
  ): number;
  buildEncodeTable(frequencies: number, alphabetSize: number): void;
  encodeChunks(symbols: number, count: number, chunkLog2: number, states: number, wordCounts: number, wordsEnd: number): number;
  histogram(symbols: number, count: number, counts: number): void;
  extractPlane(elements: number, count: number, width: number, plane: number, out: number): void;
  mergePlanes(planes: number, count: number, width: number, out: number): void;
  xxh32Stripes(data: number, length: number, state: number): void;
}

const PAGE_BYTES = 65536;
/** Decode tables the WASM module reserves (one per byte plane of a 4-byte dtype). */
export const DECODE_TABLE_SLOTS = 4;
const DECODE_TABLE_BYTES = 4096 * 4;

/** The WASM codec of this thread: its exports plus the arena over its memory. */
export class CodecRuntime {
  readonly wasm: CodecExports;
  /** Which decoder's table each decode-table slot holds (see stream-decode.ts). */
  readonly decodeTableOwners: unknown[] = new Array(DECODE_TABLE_SLOTS).fill(undefined);
  /** Bytes after a batch's words that the decoder may read (and then reject) on corrupt input. */
  readonly wordSlackBytes: number;
  private top: number;
  private view: Uint8Array;

  constructor(wasm: CodecExports) {
    this.wasm = wasm;
    wasm._initialize();
    this.wordSlackBytes = wasm.WORD_SLACK_BYTES.value as number;
    this.top = align(wasm.heapBase(), 64);
    this.view = new Uint8Array(wasm.memory.buffer);
  }

  /** The whole linear memory as bytes (a fresh view after growth; do not keep it across allocations). */
  get bytes(): Uint8Array {
    if (this.view.buffer !== this.wasm.memory.buffer) this.view = new Uint8Array(this.wasm.memory.buffer);
    return this.view;
  }

  /** Address of decode table `slot` (0..3). */
  decodeTable(slot: number): number {
    return this.wasm.decodeTables() + slot * DECODE_TABLE_BYTES;
  }

  /** Reserves `size` bytes (16-byte aligned) above everything reserved in the enclosing {@link scoped} calls. */
  alloc(size: number): number {
    const start = align(this.top, 16);
    const end = start + size;
    const memory = this.wasm.memory;
    if (end > memory.buffer.byteLength) {
      try {
        memory.grow(Math.ceil((end - memory.buffer.byteLength) / PAGE_BYTES));
      } catch {
        throw new EqzError('LimitExceeded', `the codec could not grow its WASM memory to ${end} bytes`);
      }
    }
    this.top = end;
    return start;
  }

  /** u32 array view of `count` values at `address` (4-byte aligned). */
  u32(address: number, count: number): Uint32Array {
    return new Uint32Array(this.wasm.memory.buffer, address, count);
  }

  /** Runs `work` with the arena rewound afterwards, whatever happens. */
  scoped<T>(work: () => T): T {
    const mark = this.top;
    try {
      return work();
    } finally {
      this.top = mark;
    }
  }
}

let moduleBytes: Uint8Array<ArrayBuffer> | undefined;
let compiling: Promise<WebAssembly.Module> | undefined;
let active: CodecRuntime | undefined;

function wasmBytes(): Uint8Array<ArrayBuffer> {
  moduleBytes ??= Uint8Array.from(atob(EQZ_WASM_BASE64), (c) => c.charCodeAt(0));
  return moduleBytes;
}

/**
 * Compiles and instantiates the WASM codec for this thread (once; later calls return at once).
 * Every other codec function is synchronous and requires this to have completed.
 */
export async function initCodec(): Promise<void> {
  if (active) return;
  compiling ??= WebAssembly.compile(wasmBytes());
  const module = await compiling;
  if (active) return;
  const instance = await WebAssembly.instantiate(module, {
    env: {
      abort(): never {
        throw new Error('eqz WASM codec aborted');
      },
    },
  });
  active = new CodecRuntime(instance.exports as unknown as CodecExports);
}

/** The initialized codec of this thread. */
export function codecRuntime(): CodecRuntime {
  if (!active) throw new Error('eqz codec is not initialized: call `await initCodec()` first');
  return active;
}

/** Whether {@link initCodec} has completed in this thread. */
export function codecReady(): boolean {
  return active !== undefined;
}

function align(value: number, to: number): number {
  return Math.ceil(value / to) * to;
}
