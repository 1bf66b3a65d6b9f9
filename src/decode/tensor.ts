/**
 * Turns a stored payload back into tensor bytes, per encoding (spec §"Encodings"). No Node-only imports: this is
 * the CPU decode path of the embeddable decoder too.
 */
import { EqzError } from '../errors.js';
import { DTYPE_SIZE, type Dtype } from '../container/format.js';
import { numElements, type TensorEntry } from '../container/table.js';
import type { EqzReader } from '../container/reader.js';
import { fromFloat32, toFloat32 } from '../tensor/dtype.js';
import { decodePlanes, initCodec, planesWidth } from '../codec/index.js';
import { decodeScaled } from '../encodings/scaled.js';
import { decodeNvfp4Payload, dequantizeNvfp4 } from '../nvfp4/payload.js';

/** Output dtypes a decoder can be asked for; floating tensors convert with round-to-nearest-even. */
export type OutputDtype = 'F32' | 'F16' | 'BF16';

export interface DecodeOptions {
  /** Output dtype for floating-point tensors; default: the tensor's own dtype. */
  dtype?: OutputDtype;
}

/** The dtype a tensor decodes to under `options`. */
export function outputDtypeOf(entry: TensorEntry, options: DecodeOptions = {}): Dtype {
  const floating = entry.dtype === 'F32' || entry.dtype === 'F16' || entry.dtype === 'BF16';
  return options.dtype && floating ? options.dtype : entry.dtype;
}

const LOSSY_DTYPES: readonly Dtype[] = ['F32', 'F16', 'BF16'];

/**
 * Decodes one tensor's payload (already checksum-verified) to little-endian bytes of its output dtype.
 * Synchronous: the codec must be initialized (`await initCodec()`, which {@link decodeTensor} does).
 */
export function decodePayload(entry: TensorEntry, payload: Uint8Array, options: DecodeOptions = {}): Uint8Array {
  const elements = numElements(entry.shape);
  let bytes: Uint8Array;
  switch (entry.encoding) {
    case 'raw': {
      const expected = elements * DTYPE_SIZE[entry.dtype];
      if (payload.length !== expected) {
        throw new EqzError('Malformed', `raw payload is ${payload.length} bytes, expected ${expected} for shape [${entry.shape.join(', ')}] ${entry.dtype}`, { tensor: entry.name });
      }
      bytes = payload;
      break;
    }
    case 'planes':
      if (planesWidth(entry.dtype) === undefined) throw new EqzError('UnsupportedDtype', `planes cannot hold ${entry.dtype}`);
      bytes = decodePlanes(payload, entry.dtype, elements);
      break;
    case 'fp8-e4m3':
    case 'int8':
      if (!LOSSY_DTYPES.includes(entry.dtype)) throw new EqzError('UnsupportedDtype', `${entry.encoding} cannot stand for ${entry.dtype}`);
      // Lossy encodings decode straight to the requested type: one rounding, as the spec defines it.
      return decodeScaled(payload, entry.encoding, entry.shape, outputDtypeOf(entry, options));
    case 'nvfp4': {
      if (!LOSSY_DTYPES.includes(entry.dtype)) throw new EqzError('UnsupportedDtype', `nvfp4 cannot stand for ${entry.dtype}`);
      if (entry.shape.length !== 2) throw new EqzError('Malformed', `nvfp4 needs rank 2, the shape is [${entry.shape.join(', ')}]`);
      const tensor = decodeNvfp4Payload(payload, entry.shape[0]!, entry.shape[1]!, { tensor: entry.name });
      return dequantizeNvfp4(tensor, outputDtypeOf(entry, options) as OutputDtype);
    }
    default:
      throw new EqzError('UnknownEncoding', `encoding ${entry.encoding} is not supported by this decoder`, { tensor: entry.name });
  }
  const target = outputDtypeOf(entry, options);
  return target === entry.dtype ? bytes : fromFloat32(toFloat32(bytes, entry.dtype), target as OutputDtype);
}

/** Reads, verifies and decodes one tensor. Errors name the tensor and the payload's byte offset. */
export async function decodeTensor(reader: EqzReader, entry: TensorEntry, options: DecodeOptions = {}): Promise<Uint8Array> {
  await initCodec();
  const payload = await reader.readPayload(entry);
  try {
    return decodePayload(entry, payload, options);
  } catch (error) {
    if (error instanceof EqzError) throw error.locate({ tensor: entry.name, offsetBase: reader.payloadOffset(entry) });
    throw error;
  }
}
