/**
 * XXH32 (xxHash, 32-bit), the checksum of every .eqz header, table and payload (spec/eqz.md §5).
 * Streaming: {@link Xxh32.update} any number of times, then {@link Xxh32.digest}. {@link xxh32} hashes one buffer.
 * Once this thread's WASM codec is initialized (initCodec), long inputs run their stripe loop there with SIMD;
 * before that, or for short inputs, in TypeScript. Both give the same digest.
 */
import { codecReady, codecRuntime } from './wasm.js';

/** Inputs at least this long go to the WASM stripe loop (below it, copying in costs more than it saves). */
const WASM_STRIPES_MIN = 4096;
/** Bytes copied into linear memory per WASM call. */
const WASM_BATCH = 1 << 20;

const PRIME1 = 0x9e3779b1;
const PRIME2 = 0x85ebca77;
const PRIME3 = 0xc2b2ae3d;
const PRIME4 = 0x27d4eb2f;
const PRIME5 = 0x165667b1;

const rotl = (x: number, r: number): number => (x << r) | (x >>> (32 - r));
const round = (acc: number, lane: number): number => Math.imul(rotl((acc + Math.imul(lane, PRIME2)) | 0, 13), PRIME1);

/** A streaming XXH32 state. */
export class Xxh32 {
  private v1: number;
  private v2: number;
  private v3: number;
  private v4: number;
  private readonly seed: number;
  private totalLength = 0;
  /** Bytes not yet consumed as a whole 16-byte stripe. */
  private readonly pending = new Uint8Array(16);
  private pendingLength = 0;

  constructor(seed = 0) {
    this.seed = seed | 0;
    this.v1 = (this.seed + PRIME1 + PRIME2) | 0;
    this.v2 = (this.seed + PRIME2) | 0;
    this.v3 = this.seed;
    this.v4 = (this.seed - PRIME1) | 0;
  }

  /** Adds `data` to the hashed input; returns this. */
  update(data: Uint8Array): this {
    this.totalLength += data.length;
    let i = 0;
    if (this.pendingLength > 0) {
      const take = Math.min(16 - this.pendingLength, data.length);
      this.pending.set(data.subarray(0, take), this.pendingLength);
      this.pendingLength += take;
      i = take;
      if (this.pendingLength < 16) return this;
      this.stripes(this.pending, 0, 16);
      this.pendingLength = 0;
    }
    const whole = i + ((data.length - i) & ~15);
    this.stripes(data, i, whole);
    this.pending.set(data.subarray(whole), 0);
    this.pendingLength = data.length - whole;
    return this;
  }

  private stripes(data: Uint8Array, start: number, end: number): void {
    if (end - start >= WASM_STRIPES_MIN && codecReady()) {
      this.wasmStripes(data, start, end);
      return;
    }
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    let { v1, v2, v3, v4 } = this;
    for (let p = start; p < end; p += 16) {
      v1 = round(v1, view.getUint32(p, true));
      v2 = round(v2, view.getUint32(p + 4, true));
      v3 = round(v3, view.getUint32(p + 8, true));
      v4 = round(v4, view.getUint32(p + 12, true));
    }
    this.v1 = v1; this.v2 = v2; this.v3 = v3; this.v4 = v4;
  }

  private wasmStripes(data: Uint8Array, start: number, end: number): void {
    const rt = codecRuntime();
    rt.scoped(() => {
      const state = rt.alloc(16);
      const buffer = rt.alloc(Math.min(WASM_BATCH, end - start));
      rt.u32(state, 4).set([this.v1 >>> 0, this.v2 >>> 0, this.v3 >>> 0, this.v4 >>> 0]);
      for (let at = start; at < end; at += WASM_BATCH) {
        const length = Math.min(WASM_BATCH, end - at);
        rt.bytes.set(data.subarray(at, at + length), buffer);
        rt.wasm.xxh32Stripes(buffer, length, state);
      }
      const accumulators = rt.u32(state, 4);
      this.v1 = accumulators[0]! | 0;
      this.v2 = accumulators[1]! | 0;
      this.v3 = accumulators[2]! | 0;
      this.v4 = accumulators[3]! | 0;
    });
  }

  /** The XXH32 of everything added so far, as an unsigned 32-bit number. */
  digest(): number {
    let h = this.totalLength >= 16
      ? (rotl(this.v1, 1) + rotl(this.v2, 7) + rotl(this.v3, 12) + rotl(this.v4, 18)) | 0
      : (this.seed + PRIME5) | 0;
    h = (h + this.totalLength) | 0; // the length enters modulo 2^32, as the xxHash specification says
    const tail = this.pending;
    const view = new DataView(tail.buffer, tail.byteOffset, this.pendingLength);
    let p = 0;
    for (; p + 4 <= this.pendingLength; p += 4) {
      h = Math.imul(rotl((h + Math.imul(view.getUint32(p, true), PRIME3)) | 0, 17), PRIME4);
    }
    for (; p < this.pendingLength; p++) {
      h = Math.imul(rotl((h + Math.imul(tail[p]!, PRIME5)) | 0, 11), PRIME1);
    }
    h ^= h >>> 15;
    h = Math.imul(h, PRIME2);
    h ^= h >>> 13;
    h = Math.imul(h, PRIME3);
    h ^= h >>> 16;
    return h >>> 0;
  }
}

/** XXH32 of `data` with `seed` (0 everywhere in .eqz). */
export function xxh32(data: Uint8Array, seed = 0): number {
  return new Xxh32(seed).update(data).digest();
}
