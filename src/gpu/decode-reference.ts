/**
 * The CPU result a GPU decode must equal bit for bit, for every encoding and output the GPU decoder offers:
 * the codec's WASM decoders for the symbols, src/tensor/dtype.ts for every value conversion, and the spec's
 * dequantization y = RNE_T(f32(value(code)) × f32(scale)) written out plainly. Used by the GPU decoder's tests
 * and by bench:gpu's check on hardware adapters.
 */
import { numElements } from '../container/table.js';
import { decodePlanes, decodeStream } from '../codec/index.js';
import { decodePayload } from '../decode/tensor.js';
import { E4M3_VALUES, f32Bits, f32ToBf16Bits, f32ToF16Bits, fromFloat32, toFloat32 } from '../tensor/dtype.js';
import { parseQuantizedPayload, plannedDtype, type GpuDecodeRequest } from './decode-plan.js';

/** What the GPU must produce for a request: the output bytes, and for `codes` outputs the f32 scales. */
export interface ReferenceOutput {
  bytes: Uint8Array;
  scales?: Float32Array;
}

/** The value of code `code` of an fp8-e4m3 or int8 tensor. */
function codeValue(encoding: string, code: number): number {
  return encoding === 'int8' ? (code << 24) >> 24 : E4M3_VALUES[code]!;
}

/** Decodes `request` on the CPU (requires `await initCodec()`). */
export function referenceDecode(request: GpuDecodeRequest): ReferenceOutput {
  const { entry, payload } = request;
  const dtype = plannedDtype(request);
  const numel = numElements(entry.shape);
  switch (entry.encoding) {
    case 'raw':
      return { bytes: decodePayload(entry, payload, dtype === entry.dtype ? {} : { dtype: dtype as 'F32' | 'F16' | 'BF16' }) };
    case 'planes': {
      const bytes = decodePlanes(payload, entry.dtype, numel);
      return { bytes: dtype === entry.dtype ? bytes : fromFloat32(toFloat32(bytes, entry.dtype), dtype as 'F32' | 'F16' | 'BF16') };
    }
    case 'fp8-e4m3':
    case 'int8': {
      const quantized = parseQuantizedPayload(entry, payload);
      const codes = decodeStream(payload.subarray(quantized.streamOffset), { streamOffset: quantized.streamOffset }).symbols;
      if (entry.encoding === 'fp8-e4m3') {
        const nan = codes.findIndex((code) => (code & 0x7f) === 0x7f);
        if (nan >= 0) throw new Error(`reference: E4M3 NaN code at element ${nan}`);
      }
      if (dtype === 'F8_E4M3' || dtype === 'I8') return { bytes: codes, scales: quantized.scales };
      const width = dtype === 'F32' ? 4 : 2;
      const out = new Uint8Array(numel * width);
      const view = new DataView(out.buffer);
      for (let i = 0; i < numel; i++) {
        const product = Math.fround(codeValue(entry.encoding, codes[i]!) * quantized.scales[Math.floor(i / quantized.rowLength)]!);
        if (dtype === 'F32') view.setUint32(4 * i, f32Bits(product), true);
        else view.setUint16(2 * i, dtype === 'BF16' ? f32ToBf16Bits(product) : f32ToF16Bits(product), true);
      }
      return { bytes: out };
    }
    default:
      throw new Error(`reference: encoding ${entry.encoding} has no GPU decoding`);
  }
}
