import { describe, expect, it } from 'vitest';
import { EqzError } from '../src/errors.js';
import {
  decodePlanes, decodeStream, encodeLossless, encodePlanes, initCodec, parseStreamHeader,
} from '../src/codec/index.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { fromFloat32, toFloat32 } from '../src/tensor/dtype.js';
import { SeededRandom } from '../src/tensor/synthetic.js';
import type { Dtype } from '../src/container/format.js';

await initCodec();

const DATA = new URL('../../shared/data/', import.meta.url).pathname;

async function readTensors(file: string): Promise<Array<{ name: string; dtype: Dtype; bytes: Uint8Array }>> {
  const st = await SafetensorsFile.open(DATA + file);
  try {
    const out = [];
    for (const tensor of st.tensors) out.push({ name: tensor.name, dtype: tensor.dtype, bytes: await st.read(tensor) });
    return out;
  } finally {
    await st.close();
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

/** Plane `plane` of element values as spec/eqz.md §7.4 defines it. */
function specPlane(values: ArrayLike<number>, width: number, plane: number): Uint8Array {
  const table: Record<number, Array<(v: number) => number>> = {
    2: [(v) => (v >> 7) & 0xff, (v) => ((v >> 8) & 0x80) | (v & 0x7f)],
    4: [(v) => (v >>> 23) & 0xff, (v) => ((v >>> 24) & 0x80) | ((v >>> 16) & 0x7f), (v) => (v >>> 8) & 0xff, (v) => v & 0xff],
  };
  return Uint8Array.from(values, table[width]![plane]!);
}

function payloadStreams(payload: Uint8Array): Uint8Array[] {
  const planes = new DataView(payload.buffer, payload.byteOffset).getUint32(0, true);
  const streams = [];
  let at = 8;
  for (let p = 0; p < planes; p++) {
    const length = parseStreamHeader(payload.subarray(at)).byteLength;
    streams.push(payload.subarray(at, at + length));
    at += length;
  }
  return streams;
}

describe('planes (spec §7.4)', () => {
  it('splits elements into the planes the spec defines, for 2- and 4-byte widths', () => {
    const random = new SeededRandom(4);
    for (const [dtype, width] of [['BF16', 2], ['F32', 4]] as const) {
      // 1000 + 7 elements: whole SIMD blocks and a scalar tail.
      const values = Array.from({ length: 1007 }, () => (width === 2 ? random.nextU32() & 0xffff : random.nextU32()));
      const bytes = new Uint8Array(values.length * width);
      const view = new DataView(bytes.buffer);
      values.forEach((v, i) => (width === 2 ? view.setUint16(i * 2, v, true) : view.setUint32(i * 4, v, true)));
      const payload = encodePlanes(bytes, dtype);
      const streams = payloadStreams(payload);
      expect(streams.length).toBe(width);
      streams.forEach((stream, plane) => expect(sameBytes(decodeStream(stream).symbols, specPlane(values, width, plane))).toBe(true));
      expect(sameBytes(decodePlanes(payload, dtype, values.length), bytes)).toBe(true);
    }
  });

  it('round-trips every real tensor as BF16, F16, F32 and FP8, byte-exact', async () => {
    const tensors = [
      ...(await readTensors('models/stories260K/model.safetensors')),
      ...(await readTensors('weights/movenet-lightning-f16.safetensors')).slice(0, 40),
    ].filter((t) => t.dtype === 'F32' || t.dtype === 'F16');
    expect(tensors.length).toBeGreaterThan(40);
    let bf16Bytes = 0;
    let bf16Stored = 0;
    for (const tensor of tensors) {
      const f32 = toFloat32(tensor.bytes, tensor.dtype);
      const fp8 = Uint8Array.from(f32, (v) => { // E4M3 codes by nearest value (test data only, not RNE-exact)
        const magnitude = Math.min(448, Math.abs(v) * 64);
        const code = magnitude === 0 ? 0 : Math.max(0, Math.min(126, Math.round(8 * Math.log2(magnitude) + 56)));
        return (v < 0 ? 0x80 : 0) | code;
      });
      const variants: Array<[Dtype, Uint8Array]> = [
        ['BF16', fromFloat32(f32, 'BF16')], ['F16', fromFloat32(f32, 'F16')], ['F32', fromFloat32(f32, 'F32')], ['F8_E4M3', fp8],
      ];
      for (const [dtype, bytes] of variants) {
        const { encoding, payload } = encodeLossless(bytes, dtype);
        const decoded = encoding === 'raw' ? payload : decodePlanes(payload, dtype, f32.length);
        expect(sameBytes(decoded, bytes)).toBe(true);
        if (dtype === 'BF16') {
          bf16Bytes += bytes.length;
          bf16Stored += payload.length;
        }
      }
    }
    // stories260K as BF16: the README's floor for an order-0 exponent plane is 0.663 before overhead.
    expect(bf16Stored / bf16Bytes).toBeLessThan(0.69);
  });

  it('picks raw for empty tensors, other widths and incompressible data', () => {
    const random = new SeededRandom(2);
    const noise = Uint8Array.from({ length: 4096 }, () => random.nextU32() & 0xff);
    expect(encodeLossless(new Uint8Array(0), 'BF16').encoding).toBe('raw');
    expect(encodeLossless(new Uint8Array(64), 'F64').encoding).toBe('raw');
    expect(encodeLossless(noise, 'U8')).toEqual({ encoding: 'raw', payload: noise });
    expect(encodeLossless(new Uint8Array(4096), 'U8').encoding).toBe('planes');
    expect(() => encodePlanes(new Uint8Array(8), 'I64')).toThrow(EqzError);
  });

  it('decodes into a caller array, one element and odd lengths included', () => {
    for (const count of [1, 15, 17, 100_003]) {
      const random = new SeededRandom(count);
      const bytes = fromFloat32(Float32Array.from({ length: count }, () => random.normal() * 0.02), 'BF16');
      const into = new Uint8Array(bytes.length + 10);
      const decoded = decodePlanes(encodePlanes(bytes, 'BF16'), 'BF16', count, into);
      expect(decoded.buffer).toBe(into.buffer);
      expect(sameBytes(decoded, bytes)).toBe(true);
    }
  });

  it('rejects payloads that break §7.4 as Malformed, with payload offsets', () => {
    const bytes = fromFloat32(Float32Array.from({ length: 5000 }, (_, i) => Math.sin(i) * 0.1), 'BF16');
    const payload = encodePlanes(bytes, 'BF16');
    const code = (p: Uint8Array, numel = 5000, dtype: Dtype = 'BF16'): { code: string; offset?: number } => {
      try {
        decodePlanes(p, dtype, numel);
      } catch (error) {
        if (error instanceof EqzError) return { code: error.code, offset: error.offset };
        throw error;
      }
      return { code: 'none' };
    };
    const edited = (edit: (b: Uint8Array, v: DataView) => void): Uint8Array => {
      const copy = payload.slice();
      edit(copy, new DataView(copy.buffer));
      return copy;
    };
    expect(code(payload.subarray(0, 6)).code).toBe('Malformed');
    expect(code(edited((b, v) => v.setUint32(0, 4, true)))).toEqual({ code: 'Malformed', offset: 0 });
    expect(code(edited((b, v) => v.setUint32(4, 1, true)))).toEqual({ code: 'Malformed', offset: 4 });
    expect(code(payload, 4999)).toEqual({ code: 'Malformed', offset: 16 });
    const second = 8 + parseStreamHeader(payload.subarray(8)).byteLength;
    expect(code(edited((b) => { b[second + 1] = 4; })).offset).toBe(second + 1);
    const longer = new Uint8Array(payload.length + 4);
    longer.set(payload);
    expect(code(longer)).toEqual({ code: 'Malformed', offset: payload.length });
    expect(code(payload.subarray(0, payload.length - 4)).code).toBe('Malformed');
    expect(code(payload, 5000, 'F64').code).toBe('UnsupportedDtype');
  });
});
