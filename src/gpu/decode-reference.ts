/**
 * The CPU result a GPU decode must equal bit for bit, for every encoding and output the GPU decoder offers: the
 * CPU decoder itself (src/decode/tensor.ts), and for `codes` outputs the parsed codes and scales
 * (src/encodings/scaled.ts). Used by the GPU decoder's tests and by bench:gpu's check on hardware adapters.
 */
import { decodePayload } from '../decode/tensor.js';
import { decodeScaledPayload } from '../encodings/scaled.js';
import { plannedDtype, type GpuDecodeRequest } from './decode-plan.js';

/** What the GPU must produce for a request: the output bytes, and for `codes` outputs the f32 scales. */
export interface ReferenceOutput {
  bytes: Uint8Array;
  scales?: Float32Array;
}

/** Decodes `request` on the CPU (requires `await initCodec()`). */
export function referenceDecode(request: GpuDecodeRequest): ReferenceOutput {
  const { entry, payload } = request;
  const dtype = plannedDtype(request);
  if (dtype === 'F8_E4M3' && entry.encoding === 'fp8-e4m3' || dtype === 'I8' && entry.encoding === 'int8') {
    const { codes, scales } = decodeScaledPayload(payload, entry.encoding, entry.shape);
    return { bytes: codes, scales };
  }
  const convert = dtype !== entry.dtype && (dtype === 'F32' || dtype === 'F16' || dtype === 'BF16');
  return { bytes: decodePayload(entry, payload, convert ? { dtype } : {}) };
}
