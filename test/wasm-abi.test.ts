// The standalone WASM decoder through its flat ABI alone (spec §11), as a non-JavaScript host would use it:
// instantiate build/eqz.wasm, copy a coded stream into linear memory, call eqz_decode_stream, read the symbols.
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { decodeStream, encodeStream, initCodec } from '../src/codec/index.js';

interface Abi {
  memory: WebAssembly.Memory;
  _initialize(): void;
  heapBase(): number;
  eqz_decode_stream(stream: number, length: number, out: number, capacity: number): bigint;
  EQZ_MALFORMED: WebAssembly.Global;
  EQZ_CORRUPT_STREAM: WebAssembly.Global;
  EQZ_LIMIT_EXCEEDED: WebAssembly.Global;
  WORD_SLACK_BYTES: WebAssembly.Global;
}

const wasm = await readFile(new URL('../build/eqz.wasm', import.meta.url));
const { instance } = await WebAssembly.instantiate(wasm, { env: { abort: () => { throw new Error('abort'); } } });
const abi = instance.exports as unknown as Abi;
abi._initialize();

/** Host side of the ABI: stream at heapBase, slack after it, output after that; memory grown as needed. */
function hostDecode(stream: Uint8Array, capacity: number): { result: bigint; symbols: Uint8Array } {
  const streamAt = Math.ceil(abi.heapBase() / 16) * 16;
  const outAt = streamAt + Math.ceil((stream.length + Number(abi.WORD_SLACK_BYTES.value)) / 16) * 16;
  const needed = outAt + capacity;
  if (needed > abi.memory.buffer.byteLength) abi.memory.grow(Math.ceil((needed - abi.memory.buffer.byteLength) / 65536));
  new Uint8Array(abi.memory.buffer).set(stream, streamAt);
  const result = abi.eqz_decode_stream(streamAt, stream.length, outAt, capacity);
  return { result, symbols: new Uint8Array(abi.memory.buffer, outAt, result > 0n ? Number(result) : 0).slice() };
}

function skewed(length: number, seed: number, alphabet: number): Uint8Array {
  let state = seed;
  return Uint8Array.from({ length }, () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    const u = state / 2 ** 32;
    return Math.min(alphabet - 1, Math.floor(-Math.log(1 - u) * 2));
  });
}

describe('flat WASM ABI: eqz_decode_stream', () => {
  it('decodes rANS and stored streams, bytes and nibbles, exactly as the library does', async () => {
    await initCodec();
    for (const [length, bits, mode, chunkLog2] of [
      [1, 8, 'rans', 12], [31, 8, 'rans', 12], [5000, 8, 'rans', 12], [100_003, 8, 'rans', 14], [77, 4, 'rans', 12],
      [4097, 4, 'rans', 12], [0, 8, 'stored', undefined], [33, 8, 'stored', undefined], [33, 4, 'stored', undefined],
    ] as const) {
      const symbols = skewed(length, length + bits, bits === 8 ? 256 : 16);
      const stream = encodeStream(symbols, { symbolBits: bits, mode, chunkLog2 });
      const { result, symbols: decoded } = hostDecode(stream, length);
      expect(result, `${length} ${bits} ${mode}`).toBe(BigInt(length));
      expect(decoded).toEqual(symbols);
      expect(decoded).toEqual(decodeStream(stream).symbols);
    }
    const constant = new Uint8Array(70_000).fill(9);
    const { result, symbols } = hostDecode(encodeStream(constant, { mode: 'rans', chunkLog2: 12 }), constant.length);
    expect(result).toBe(70_000n);
    expect(symbols).toEqual(constant);
  });

  it('answers bad streams with the error codes, never trapping', () => {
    const symbols = skewed(20_000, 7, 256);
    const stream = encodeStream(symbols, { mode: 'rans', chunkLog2: 12 });
    expect(hostDecode(stream, 19_999).result).toBe(abi.EQZ_LIMIT_EXCEEDED.value);
    expect(hostDecode(stream.subarray(0, stream.length - 4), 20_000).result).toBe(abi.EQZ_MALFORMED.value);
    const badState = stream.slice();
    const statesAt = stream.findIndex((_, i) => i >= 24 && i % 4 === 0 && new DataView(stream.buffer).getUint32(i, true) >= 65536);
    new DataView(badState.buffer).setUint32(statesAt, 5, true);
    expect([abi.EQZ_CORRUPT_STREAM.value, abi.EQZ_MALFORMED.value]).toContain(hostDecode(badState, 20_000).result);
    let rejected = 0;
    for (let i = 0; i < 400; i++) {
      const mutated = stream.slice();
      mutated[(i * 7919) % mutated.length]! ^= 1 << (i % 8);
      const { result, symbols: decoded } = hostDecode(mutated, 20_000);
      if (result < 0n) rejected++;
      else expect(decoded.length).toBe(20_000);
    }
    expect(rejected).toBeGreaterThan(300);
  });
});
