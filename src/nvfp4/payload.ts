/**
 * Encoding 4 `nvfp4` (spec/eqz.md §7.6): the payload that stores one compressed-tensors NVFP4 layer
 * (`weight_packed`, `weight_scale`, `weight_global_scale`) bit for bit, and its exact dequantization.
 *
 * Payload: f32 global_scale, u8 code_packing (0 nibble symbols, 1 byte symbols), u8[3] reserved, then the
 * block-scale stream (8-bit symbols, one E4M3 byte per block) and the code stream — either one 4-bit symbol
 * per element, or the packed bytes themselves as 8-bit symbols. Which of the two codes smaller depends on the
 * tensor (a byte symbol models pairs of neighbouring codes, at the cost of a 256-entry table and slower
 * adaptation), so `auto` codes both and keeps the smaller.
 */
import { decodeStream, encodeStream, parseStreamHeader, type StreamContext } from '../codec/index.js';
import { EqzError } from '../errors.js';
import { E4M3_VALUES, f32Bits, f32ToBf16Bits, f32ToF16Bits } from '../tensor/dtype.js';
import { E2M1_VALUES, NVFP4_BLOCK, packCodes, unpackCodes } from './e2m1.js';

/** Bytes before the first stream: f32 global_scale, u8 code_packing, u8[3] reserved. */
export const NVFP4_PAYLOAD_HEADER_BYTES = 8;
/** global_scale must lie in [2^-32, 2^32] (spec §7.6), which keeps every decoded product a normal f32. */
export const MIN_GLOBAL_SCALE = 2 ** -32;
export const MAX_GLOBAL_SCALE = 2 ** 32;

/** How the code stream carries the 4-bit codes: `nibble` (code_packing 0) or `byte` (1, the packed bytes). */
export type CodePacking = 'nibble' | 'byte';

/** One NVFP4 tensor as compressed-tensors stores it. */
export interface Nvfp4Tensor {
  /** `weight_packed`: U8 [rows, cols/2], element 2j in the low nibble of byte j. */
  packed: Uint8Array;
  /** `weight_scale`: F8_E4M3 bytes [rows, cols/16], block (r, b) at r·cols/16 + b. */
  blockScales: Uint8Array;
  /** `weight_global_scale`: an f32 value (the decoded weight is e2m1 × e4m3(scale) / global_scale). */
  globalScale: number;
  rows: number;
  cols: number;
}

export interface EncodeNvfp4Options {
  /** `auto` (default): code both ways and keep the smaller payload (nibble on a tie). */
  codePacking?: 'auto' | CodePacking;
}

/** Where a payload sits, for error messages: tensor name and the payload's first byte in the file. */
export interface PayloadContext {
  tensor?: string;
  /** Offset of the payload's first byte (absolute in the file, or 0 for payload-relative offsets). */
  payloadOffset?: number;
}

/** What {@link decodeNvfp4Payload} returns: the three compressed-tensors tensors and how codes were packed. */
export interface DecodedNvfp4 extends Nvfp4Tensor {
  codePacking: CodePacking;
}

/** The element count of a [rows, cols] NVFP4 tensor, after checking the shape (Malformed). */
function checkShape(rows: number, cols: number, context: PayloadContext): number {
  if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows < 0 || cols < 0) {
    throw new EqzError('Malformed', `nvfp4 dims [${rows}, ${cols}] are not non-negative integers`, { tensor: context.tensor });
  }
  if (cols % NVFP4_BLOCK !== 0) {
    throw new EqzError('Malformed', `nvfp4 needs dims[1] to be a multiple of ${NVFP4_BLOCK}, got ${cols}`, { tensor: context.tensor });
  }
  const numel = rows * cols;
  if (!Number.isSafeInteger(numel)) throw new EqzError('LimitExceeded', `nvfp4 tensor [${rows}, ${cols}] is too large`, { tensor: context.tensor });
  return numel;
}

/** Why `value` cannot be a global scale, or null when it can (finite, positive, in [2^-32, 2^32]). */
function globalScaleProblem(value: number): string | null {
  if (!Number.isFinite(value)) return `global_scale ${value} is not finite`;
  if (!(value > 0)) return `global_scale ${value} is not positive`;
  if (value < MIN_GLOBAL_SCALE || value > MAX_GLOBAL_SCALE) return `global_scale ${value} is outside [2^-32, 2^32]`;
  return null;
}

/** Index of the first E4M3 NaN code (0x7F or 0xFF) in `scales`, or −1. */
function firstNaNScale(scales: Uint8Array): number {
  for (let i = 0; i < scales.length; i++) if ((scales[i]! & 0x7f) === 0x7f) return i;
  return -1;
}

function describeBlock(index: number, cols: number): string {
  const perRow = cols / NVFP4_BLOCK;
  return `block scale ${index} (row ${Math.floor(index / perRow)}, block ${index % perRow})`;
}

/** Names to give in errors about each of the three tensors (e.g. the compressed-tensors names). */
export interface Nvfp4TensorNames {
  packed?: string;
  blockScales?: string;
  globalScale?: string;
}

/**
 * Checks the three tensors of one NVFP4 layer: sizes against [rows, cols] (Malformed), the global scale
 * (an f32 value, finite, positive, in [2^-32, 2^32]) and the block scales (no E4M3 NaN) (InvalidValue). Errors
 * name the tensor concerned from `names`.
 */
export function checkNvfp4Tensor(tensor: Nvfp4Tensor, names: Nvfp4TensorNames = {}): void {
  const { packed, blockScales, globalScale, rows, cols } = tensor;
  const numel = checkShape(rows, cols, { tensor: names.packed });
  if (packed.length !== numel / 2) {
    throw new EqzError('Malformed', `packed codes hold ${packed.length} bytes, [${rows}, ${cols}] needs ${numel / 2}`, { tensor: names.packed });
  }
  if (blockScales.length !== numel / NVFP4_BLOCK) {
    throw new EqzError('Malformed', `${blockScales.length} block scales, [${rows}, ${cols}] needs ${numel / NVFP4_BLOCK}`, { tensor: names.blockScales });
  }
  const problem = globalScaleProblem(globalScale);
  if (problem) throw new EqzError('InvalidValue', problem, { tensor: names.globalScale });
  if (Math.fround(globalScale) !== globalScale) {
    throw new EqzError('InvalidValue', `global_scale ${globalScale} is not an f32 value`, { tensor: names.globalScale });
  }
  const nan = firstNaNScale(blockScales);
  if (nan >= 0) {
    throw new EqzError('InvalidValue', `${describeBlock(nan, cols)} is the E4M3 NaN code 0x${blockScales[nan]!.toString(16)}`, { tensor: names.blockScales });
  }
}

/** The code stream of `tensor` with the given packing. */
function codeStream(packed: Uint8Array, packing: CodePacking): Uint8Array {
  return packing === 'byte' ? encodeStream(packed, { symbolBits: 8 }) : encodeStream(unpackCodes(packed), { symbolBits: 4 });
}

/**
 * The `nvfp4` payload (spec §7.6) of one layer. Requires `await initCodec()`. Inputs are checked as in
 * {@link checkNvfp4Tensor}; the stored tensors come back bit for bit from {@link decodeNvfp4Payload}.
 */
export function encodeNvfp4Payload(tensor: Nvfp4Tensor, options: EncodeNvfp4Options = {}): Uint8Array {
  checkNvfp4Tensor(tensor);
  const choice = options.codePacking ?? 'auto';
  const scales = encodeStream(tensor.blockScales, { symbolBits: 8 });
  let packing: CodePacking = choice === 'byte' ? 'byte' : 'nibble';
  let codes = codeStream(tensor.packed, packing);
  if (choice === 'auto') {
    const asBytes = codeStream(tensor.packed, 'byte');
    if (asBytes.length < codes.length) {
      packing = 'byte';
      codes = asBytes;
    }
  }
  const payload = new Uint8Array(NVFP4_PAYLOAD_HEADER_BYTES + scales.length + codes.length);
  const view = new DataView(payload.buffer);
  view.setFloat32(0, tensor.globalScale, true);
  payload[4] = packing === 'byte' ? 1 : 0;
  payload.set(scales, NVFP4_PAYLOAD_HEADER_BYTES);
  payload.set(codes, NVFP4_PAYLOAD_HEADER_BYTES + scales.length);
  return payload;
}

/**
 * Decodes the coded stream at payload offset `at`, which must have `symbolBits` and `count` symbols; returns
 * the symbols and the offset after the stream. A stream that does not fit the payload is Malformed (spec §7.1).
 */
function readStream(
  payload: Uint8Array, at: number, symbolBits: 4 | 8, count: number, into: Uint8Array, what: string, context: PayloadContext,
): number {
  const base = context.payloadOffset ?? 0;
  const streamContext: StreamContext = { tensor: context.tensor, streamOffset: base + at };
  const fail = (message: string, offset: number) => new EqzError('Malformed', `${what}: ${message}`, { tensor: context.tensor, offset: base + offset });
  if (payload.length - at < 24) throw fail(`needs a 24-byte stream header, ${payload.length - at} payload bytes left`, at);
  try {
    const bytes = payload.subarray(at);
    const header = parseStreamHeader(bytes, streamContext);
    if (header.symbolBits !== symbolBits) throw fail(`symbol_bits ${header.symbolBits}, the encoding requires ${symbolBits}`, at + 1);
    if (header.symbolCount !== count) throw fail(`symbol_count ${header.symbolCount}, the tensor needs ${count}`, at + 8);
    decodeStream(bytes.subarray(0, header.byteLength), { ...streamContext, into });
    return at + header.byteLength;
  } catch (error) {
    // A stream running past the payload is a layout field that does not fit: Malformed, not a short file.
    if (error instanceof EqzError && error.code === 'Truncated') throw new EqzError('Malformed', `${what}: ${error.detail}`, error);
    throw error;
  }
}

/** What the 8-byte header of an `nvfp4` payload says, once checked. */
export interface Nvfp4Header {
  /** Elements of the [rows, cols] tensor. */
  numel: number;
  globalScale: number;
  packing: CodePacking;
}

/**
 * Checks the shape and the 8-byte header of an `nvfp4` payload (spec §7.6): cols a multiple of 16 (Malformed),
 * global_scale (InvalidValue), code_packing and the reserved bytes (Malformed). Error offsets count from
 * `context.payloadOffset` (0: payload-relative).
 */
export function parseNvfp4Header(payload: Uint8Array, rows: number, cols: number, context: PayloadContext = {}): Nvfp4Header {
  const numel = checkShape(rows, cols, context);
  const base = context.payloadOffset ?? 0;
  const located = (offset: number) => ({ tensor: context.tensor, offset: base + offset });
  if (payload.length < NVFP4_PAYLOAD_HEADER_BYTES) {
    throw new EqzError('Malformed', `nvfp4 payload of ${payload.length} bytes is shorter than its 8-byte header`, located(0));
  }
  const globalScale = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getFloat32(0, true);
  const problem = globalScaleProblem(globalScale);
  if (problem) throw new EqzError('InvalidValue', problem, located(0));
  const packingCode = payload[4]!;
  if (packingCode > 1) throw new EqzError('Malformed', `code_packing ${packingCode} is not 0 (nibbles) or 1 (bytes)`, located(4));
  for (let i = 5; i < NVFP4_PAYLOAD_HEADER_BYTES; i++) {
    if (payload[i] !== 0) throw new EqzError('Malformed', 'nvfp4 reserved byte is not 0', located(i));
  }
  return { numel, globalScale, packing: packingCode === 1 ? 'byte' : 'nibble' };
}

/**
 * Decodes an `nvfp4` payload of a [rows, cols] tensor back to the compressed-tensors tensors, checking every
 * rule of spec §7.6: the header ({@link parseNvfp4Header}), each stream's symbol width, count and structure
 * (Malformed / CorruptStream), NaN block scales (InvalidValue), and no bytes after the code stream (Malformed).
 * Error offsets count from `context.payloadOffset` (0: payload-relative). Requires `await initCodec()`.
 */
export function decodeNvfp4Payload(payload: Uint8Array, rows: number, cols: number, context: PayloadContext = {}): DecodedNvfp4 {
  const { numel, globalScale, packing } = parseNvfp4Header(payload, rows, cols, context);
  const base = context.payloadOffset ?? 0;
  const located = (offset: number) => ({ tensor: context.tensor, offset: base + offset });
  const blockScales = new Uint8Array(numel / NVFP4_BLOCK);
  let at = readStream(payload, NVFP4_PAYLOAD_HEADER_BYTES, 8, blockScales.length, blockScales, 'block-scale stream', context);
  const nan = firstNaNScale(blockScales);
  if (nan >= 0) {
    throw new EqzError('InvalidValue', `${describeBlock(nan, cols)} is the E4M3 NaN code 0x${blockScales[nan]!.toString(16)}`, located(NVFP4_PAYLOAD_HEADER_BYTES));
  }
  let packed: Uint8Array;
  if (packing === 'byte') {
    packed = new Uint8Array(numel / 2);
    at = readStream(payload, at, 8, packed.length, packed, 'code stream', context);
  } else {
    const codes = new Uint8Array(numel);
    at = readStream(payload, at, 4, numel, codes, 'code stream', context);
    packed = packCodes(codes);
  }
  if (at !== payload.length) throw new EqzError('Malformed', `${payload.length - at} bytes after the code stream`, located(at));
  return { packed, blockScales, globalScale, rows, cols, codePacking: packing };
}

/** Output element types of the lossy encodings. */
export type Nvfp4OutputDtype = 'F32' | 'F16' | 'BF16';

/** m = RNE_f32(1 / global_scale): the f64 quotient of two f32 values rounds to the correctly rounded f32. */
export function reciprocalScale(globalScale: number): number {
  return Math.fround(1 / globalScale);
}

/**
 * The decoded output bits of every (code, block scale) pair, index `scale << 4 | code`:
 * RNE_T(mul32(e2m1(code) × e4m3(scale), m)). e2m1 × e4m3 is exact (≤ 6 significant bits) and its product
 * with m is exact in f64 (≤ 30 bits), so one Math.fround is the correctly rounded f32 product.
 */
function outputTable(globalScale: number, dtype: Nvfp4OutputDtype): Uint32Array {
  const m = reciprocalScale(globalScale);
  const table = new Uint32Array(16 * 256);
  for (let scale = 0; scale < 256; scale++) {
    for (let code = 0; code < 16; code++) {
      const value = Math.fround(E2M1_VALUES[code]! * E4M3_VALUES[scale]! * m);
      table[(scale << 4) | code] = dtype === 'F32' ? f32Bits(value) : dtype === 'BF16' ? f32ToBf16Bits(value) : f32ToF16Bits(value);
    }
  }
  return table;
}

/**
 * Dequantizes an NVFP4 tensor exactly as spec §7.6 defines it: m = RNE_f32(1 / global_scale),
 * y = RNE_T(mul32(e2m1(code) × e4m3(block_scale), m)), returned as little-endian bytes of `outputDtype`.
 * Inputs are checked as in {@link checkNvfp4Tensor}.
 */
export function dequantizeNvfp4(tensor: Nvfp4Tensor, outputDtype: Nvfp4OutputDtype): Uint8Array {
  checkNvfp4Tensor(tensor);
  const { packed, blockScales } = tensor;
  const table = outputTable(tensor.globalScale, outputDtype);
  const out = outputDtype === 'F32' ? new Uint32Array(packed.length * 2) : new Uint16Array(packed.length * 2);
  const bytesPerBlock = NVFP4_BLOCK / 2;
  for (let block = 0; block < blockScales.length; block++) {
    const row = blockScales[block]! << 4;
    for (let j = block * bytesPerBlock; j < (block + 1) * bytesPerBlock; j++) {
      out[2 * j] = table[row | (packed[j]! & 15)]!;
      out[2 * j + 1] = table[row | (packed[j]! >> 4)]!;
    }
  }
  return new Uint8Array(out.buffer);
}

/** Dequantized values as f32 (the F32 output of {@link dequantizeNvfp4}). */
export function dequantizeNvfp4F32(tensor: Nvfp4Tensor): Float32Array {
  const bytes = dequantizeNvfp4(tensor, 'F32');
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}
