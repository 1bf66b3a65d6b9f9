/**
 * The per-tensor encoding strategies `eqz convert` chooses between.
 */
import { encodeLossless, initCodec } from '../codec/index.js';
import type { TensorEncoder } from './encode.js';

/** Every tensor stored losslessly: byte planes rANS-coded where that is smaller, else raw. */
export function losslessEncoder(): TensorEncoder {
  return async (tensor, bytes) => {
    await initCodec();
    return encodeLossless(bytes, tensor.dtype);
  };
}
