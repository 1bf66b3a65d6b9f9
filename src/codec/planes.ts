/**
 * Lossless encoding 1, "planes" (spec/eqz.md §7.4): a tensor of 1-, 2- or 4-byte elements as one coded
 * stream per byte plane, the exponent in a plane of its own so rANS can exploit its skew while the near-uniform
 * mantissa bytes are stored. Each plane's stream picks rANS or stored by itself.
 */
import type { Dtype } from '../container/format.js';
import { DTYPE_SIZE } from '../container/format.js';
import { EqzError } from '../errors.js';
import { STREAM_HEADER_SIZE } from './constants.js';
import {
  checkExpectations, decodeRansChunks, prepareRansDecoder, type RansDecoder,
} from './stream-decode.js';
import { encodeSource, type SymbolSource } from './stream-encode.js';
import {
  allocateOutput, checkStoredBody, parseRansLayout, parseStreamHeader, type StreamContext, type StreamHeader,
} from './stream-format.js';
import { codecRuntime, type CodecRuntime } from './wasm.js';

/** Bytes before the first plane stream: u32 plane_count, u32 reserved 0. */
const PLANES_HEADER_SIZE = 8;
/** Tensors up to this many bytes are copied into linear memory once for all their planes. */
const STAGED_BYTES = 1 << 25;
/** Elements per batch through linear memory when merging planes (rounded up to every plane's chunk). */
const MERGE_BATCH = 1 << 20;

/** Element widths the planes encoding supports. */
export function planesWidth(dtype: Dtype): number | undefined {
  const width = DTYPE_SIZE[dtype];
  return width === 1 || width === 2 || width === 4 ? width : undefined;
}

/** Plane `plane` of `elements` (width-byte little-endian values) as a symbol source for the stream encoder. */
function planeSource(elements: Uint8Array, width: number, plane: number): SymbolSource {
  return {
    count: elements.length / width,
    fill(rt: CodecRuntime, begin: number, end: number, target: number): void {
      if (width === 1) {
        rt.bytes.set(elements.subarray(begin, end), target);
        return;
      }
      rt.scoped(() => {
        const staged = rt.alloc((end - begin) * width);
        rt.bytes.set(elements.subarray(begin * width, end * width), staged);
        rt.wasm.extractPlane(staged, end - begin, width, plane, target);
      });
    },
  };
}

/**
 * Encodes a tensor's bytes (`dtype` of width 1, 2 or 4; little-endian, row-major) as a planes payload:
 * u32 plane_count, u32 0, then one coded stream per plane. Throws EqzError UnsupportedDtype for other widths.
 */
export function encodePlanes(bytes: Uint8Array, dtype: Dtype): Uint8Array {
  const width = planesWidth(dtype);
  if (width === undefined) throw new EqzError('UnsupportedDtype', `planes encoding needs 1-, 2- or 4-byte elements, not ${dtype}`);
  if (bytes.length % width !== 0) throw new EqzError('Malformed', `${bytes.length} bytes is not a whole number of ${dtype} elements`);
  const rt = codecRuntime();
  const numel = bytes.length / width;
  const streams = rt.scoped(() => {
    const planes = Array.from({ length: width }, (_, plane) => planeSource(bytes, width, plane));
    if (width === 1 || bytes.length > STAGED_BYTES) return planes.map((source) => encodeSource(source));
    // Copy the elements into linear memory once and split each plane from there.
    const elements = rt.alloc(bytes.length);
    rt.bytes.set(bytes, elements);
    const symbols = rt.alloc(numel);
    return planes.map((source, plane) => {
      rt.wasm.extractPlane(elements, numel, width, plane, symbols);
      return encodeSource(source, {}, symbols);
    });
  });
  const out = new Uint8Array(PLANES_HEADER_SIZE + streams.reduce((sum, s) => sum + s.length, 0));
  new DataView(out.buffer).setUint32(0, width, true);
  let at = PLANES_HEADER_SIZE;
  for (const stream of streams) {
    out.set(stream, at);
    at += stream.length;
  }
  return out;
}

/** A lossless payload: the tensor's bytes as they are, or planes when that is smaller. */
export interface LosslessPayload {
  encoding: 'raw' | 'planes';
  payload: Uint8Array;
}

/**
 * The smaller of raw and planes for a tensor: raw for empty tensors, element widths other than 1/2/4, and data
 * that planes do not shrink. A raw payload is `bytes` itself, not a copy.
 */
export function encodeLossless(bytes: Uint8Array, dtype: Dtype): LosslessPayload {
  if (bytes.length === 0 || planesWidth(dtype) === undefined) return { encoding: 'raw', payload: bytes };
  const planes = encodePlanes(bytes, dtype);
  return planes.length < bytes.length ? { encoding: 'planes', payload: planes } : { encoding: 'raw', payload: bytes };
}

/** One plane's stream, ready to decode element ranges. */
interface PlaneStream {
  bytes: Uint8Array;
  header: StreamHeader;
  context: StreamContext;
  /** For rANS streams. */
  decoder?: RansDecoder;
}

/** A checked planes payload whose element ranges can be decoded (on this thread). */
export interface PlanesDecoder {
  dtype: Dtype;
  width: number;
  numel: number;
  /** Element ranges must start at multiples of this (every rANS plane's chunk size divides it). */
  alignment: number;
  planes: PlaneStream[];
}

/**
 * Checks a planes payload of `numel` elements of `dtype` (all Malformed): plane_count, the reserved field, every
 * plane an 8-bit stream of exactly numel symbols with a valid structure, the streams filling the payload exactly.
 * Builds the rANS planes' decode tables. Error offsets count from the payload's first byte.
 */
export function preparePlanes(payload: Uint8Array, dtype: Dtype, numel: number): PlanesDecoder {
  const width = planesWidth(dtype);
  if (width === undefined) throw new EqzError('UnsupportedDtype', `planes encoding needs 1-, 2- or 4-byte elements, not ${dtype}`);
  if (payload.length < PLANES_HEADER_SIZE) {
    throw new EqzError('Malformed', 'planes payload shorter than its 8-byte header', { offset: 0 });
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  if (view.getUint32(0, true) !== width) {
    throw new EqzError('Malformed', `plane_count ${view.getUint32(0, true)} for ${dtype} (width ${width})`, { offset: 0 });
  }
  if (view.getUint32(4, true) !== 0) throw new EqzError('Malformed', 'planes reserved field is not 0', { offset: 4 });

  const planes: PlaneStream[] = [];
  let at = PLANES_HEADER_SIZE;
  for (let plane = 0; plane < width; plane++) {
    const context: StreamContext = { streamOffset: at };
    const bytes = payload.subarray(at);
    const header = parseStreamHeader(bytes, context);
    checkExpectations(header, { ...context, expectedSymbolBits: 8, expectedSymbols: numel });
    const stream: PlaneStream = { bytes: bytes.subarray(0, header.byteLength), header, context };
    if (header.mode === 'rans') {
      const layout = parseRansLayout(stream.bytes, header, context);
      stream.decoder = prepareRansDecoder(stream.bytes, layout, plane, context);
    } else {
      checkStoredBody(stream.bytes, header, context);
    }
    planes.push(stream);
    at += header.byteLength;
  }
  if (at !== payload.length) throw new EqzError('Malformed', `${payload.length - at} bytes after the last plane`, { offset: at });
  const alignment = Math.max(1, ...planes.map((p) => (p.decoder ? p.decoder.layout.chunkSymbols : 1)));
  return { dtype, width, numel, alignment, planes };
}

/**
 * Decodes a planes payload of `numel` elements of `dtype` into `into` (or a new array of numel × width bytes).
 * Errors as {@link preparePlanes} (all checked before the output is allocated) and as decodeStream for the
 * streams' data; offsets count from the payload's first byte.
 */
export function decodePlanes(payload: Uint8Array, dtype: Dtype, numel: number, into?: Uint8Array): Uint8Array {
  const planes = preparePlanes(payload, dtype, numel);
  const size = numel * planes.width;
  if (into && into.length < size) {
    throw new EqzError('LimitExceeded', `output holds ${into.length} bytes, tensor needs ${size}`);
  }
  const out = into ? into.subarray(0, size) : allocateOutput(size);
  decodePlanesRange(planes, 0, numel, out);
  return out;
}

/**
 * Decodes elements [begin, end) of a prepared payload into `out` (the whole tensor's bytes: the elements land
 * at their own offsets). `begin` must be a multiple of `planes.alignment`, `end` too unless it is numel.
 */
export function decodePlanesRange(planes: PlanesDecoder, begin: number, end: number, out: Uint8Array): void {
  const { width } = planes;
  const rt = codecRuntime();
  // A batch holds whole chunks of every plane (chunk sizes are powers of two, so the largest divides the rest).
  const batch = Math.max(MERGE_BATCH, planes.alignment);
  for (let first = begin; first < end; first += batch) {
    const last = Math.min(end, first + batch);
    rt.scoped(() => {
      const targets = planes.planes.map(() => rt.alloc(last - first));
      planes.planes.forEach((plane, index) => decodePlaneRange(rt, plane, first, last, targets[index]!));
      if (width === 1) {
        out.set(rt.bytes.subarray(targets[0]!, targets[0]! + last - first), first);
        return;
      }
      const planeAddresses = rt.alloc(4 * width);
      const merged = rt.alloc((last - first) * width);
      rt.u32(planeAddresses, width).set(targets);
      rt.wasm.mergePlanes(planeAddresses, last - first, width, merged);
      out.set(rt.bytes.subarray(merged, merged + (last - first) * width), first * width);
    });
  }
}

/** Writes symbols [begin, end) of one plane to linear memory at `target`. */
function decodePlaneRange(rt: CodecRuntime, plane: PlaneStream, begin: number, end: number, target: number): void {
  if (!plane.decoder) {
    rt.bytes.set(plane.bytes.subarray(STREAM_HEADER_SIZE + begin, STREAM_HEADER_SIZE + end), target);
    return;
  }
  const { chunkSymbols, chunkCount } = plane.decoder.layout;
  decodeRansChunks(plane.bytes, plane.decoder, begin / chunkSymbols, Math.min(chunkCount, Math.ceil(end / chunkSymbols)), target, plane.context);
}
