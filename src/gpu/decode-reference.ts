/**
 * The CPU result a GPU decode must equal bit for bit, for every encoding and output the GPU decoder offers: the
 * CPU decoder itself (src/decode/tensor.ts), and for `codes` outputs the parsed codes and scales
 * (src/encodings/scaled.ts, src/nvfp4/payload.ts). Used by the GPU decoder's tests and by bench:gpu's check on
 * hardware adapters.
 */
import { decodePayload } from '../decode/tensor.js';
import { decodeScaledPayload } from '../encodings/scaled.js';
import { decodeNvfp4Payload } from '../nvfp4/payload.js';
import { plannedDtype, type GpuDecodeRequest } from './decode-plan.js';

/**
 * What the GPU must produce for a request: the output bytes, for fp8-e4m3 / int8 `codes` outputs the f32 row
 * scales, for nvfp4 `codes` outputs the E4M3 block scales and the global scale.
 */
export interface ReferenceOutput {
  bytes: Uint8Array;
  scales?: Float32Array;
  blockScales?: Uint8Array;
  globalScale?: number;
}

/** Decodes `request` on the CPU (requires `await initCodec()`). */
export function referenceDecode(request: GpuDecodeRequest): ReferenceOutput {
  const { entry, payload } = request;
  const dtype = plannedDtype(request);
  if (dtype === 'F8_E4M3' && entry.encoding === 'fp8-e4m3' || dtype === 'I8' && entry.encoding === 'int8') {
    const { codes, scales } = decodeScaledPayload(payload, entry.encoding, entry.shape);
    return { bytes: codes, scales };
  }
  if (dtype === 'U8' && entry.encoding === 'nvfp4') {
    const [rows, cols] = entry.shape as [number, number];
    const { packed, blockScales, globalScale } = decodeNvfp4Payload(payload, rows, cols, { tensor: entry.name });
    return { bytes: packed, blockScales, globalScale };
  }
  const convert = dtype !== entry.dtype && (dtype === 'F32' || dtype === 'F16' || dtype === 'BF16');
  return { bytes: decodePayload(entry, payload, convert ? { dtype } : {}) };
}
