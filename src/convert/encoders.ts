/**
 * The per-tensor encoding strategies `eqz convert` chooses between.
 */
import type { TensorEncoder } from './encode.js';

/** Every tensor stored byte for byte as in the source (`raw`). */
export function losslessEncoder(): TensorEncoder {
  return async (_tensor, bytes) => ({ encoding: 'raw', payload: bytes });
}
