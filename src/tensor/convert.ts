/**
 * Floating-point tensor bytes (little-endian, as safetensors and .eqz store them) to a fresh Float32Array.
 */
import { EqzError } from '../errors.js';
import type { Dtype } from '../container/format.js';

/** The dtypes {@link toFloat32} converts. */
export type FloatDtype = 'F32' | 'F16' | 'BF16' | 'F64';

const FLOAT_DTYPE_SIZE: Readonly<Record<FloatDtype, number>> = { F32: 4, F16: 2, BF16: 2, F64: 8 };

let halfTable: Float32Array | undefined;

/** Every binary16 bit pattern decoded once: 256 KiB that turn an F16 conversion into a table lookup. */
function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  halfTable = new Float32Array(65536);
  for (let bits = 0; bits < 65536; bits++) {
    const sign = bits & 0x8000 ? -1 : 1;
    const exponent = (bits >> 10) & 0x1f;
    const mantissa = bits & 0x3ff;
    if (exponent === 0) halfTable[bits] = sign * mantissa * 2 ** -24;
    else if (exponent === 31) halfTable[bits] = mantissa ? NaN : sign * Infinity;
    else halfTable[bits] = sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
  return halfTable;
}

/**
 * `bytes` holding little-endian values of `dtype` as a new Float32Array (never a view of `bytes`).
 * F64 values are rounded to the nearest binary32. Throws EqzError `UnsupportedDtype` for a non-float dtype and
 * `Malformed` when the byte length is not a whole number of elements.
 */
export function toFloat32(bytes: Uint8Array, dtype: Dtype, tensor?: string): Float32Array {
  if (!(dtype in FLOAT_DTYPE_SIZE)) {
    throw new EqzError('UnsupportedDtype', `dtype ${dtype} cannot be converted to F32 (expected F32, F16, BF16 or F64)`, { tensor });
  }
  const size = FLOAT_DTYPE_SIZE[dtype as FloatDtype];
  if (bytes.byteLength % size !== 0) {
    throw new EqzError('Malformed', `${bytes.byteLength} bytes is not a whole number of ${dtype} values`, { tensor });
  }
  const count = bytes.byteLength / size;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  switch (dtype as FloatDtype) {
    case 'F32':
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
      break;
    case 'F64':
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(8 * i, true);
      break;
    case 'F16': {
      const table = halfToFloatTable();
      for (let i = 0; i < count; i++) out[i] = table[view.getUint16(2 * i, true)];
      break;
    }
    case 'BF16': {
      // A bfloat16 is the high half of the binary32 with the same value.
      const wide = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) wide[i] = view.getUint16(2 * i, true) << 16;
      break;
    }
  }
  return out;
}
