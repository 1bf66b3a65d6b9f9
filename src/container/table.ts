/**
 * The .eqz header (spec §"Header") and table (spec §"Table": metadata and tensor entries): their binary form,
 * parsed with every rule a decoder must enforce, and serialized by the writer.
 */
import { EqzError } from '../errors.js';
import { ByteReader, ByteWriter } from './binary.js';
import {
  DTYPES, ENCODINGS, FORMAT_VERSION, HEADER_SIZE, LIMITS, MAGIC, MAX_ALIGNMENT, MIN_ALIGNMENT, ValueType,
  type Dtype, type Encoding,
} from './format.js';
import { xxh32 } from '../codec/xxh32.js';

export interface EqzHeader {
  version: number;
  alignment: number;
  dataOffset: number;
  dataSize: number;
  tableOffset: number;
  tableSize: number;
  tableChecksum: number;
}

/** A scalar metadata value, typed as in GGUF: 64-bit integers are bigints, strings UTF-8. */
export type MetadataScalar =
  | { type: ValueType.U8 | ValueType.I8 | ValueType.U16 | ValueType.I16 | ValueType.U32 | ValueType.I32 | ValueType.F32 | ValueType.F64; value: number }
  | { type: ValueType.U64 | ValueType.I64; value: bigint }
  | { type: ValueType.BOOL; value: boolean }
  | { type: ValueType.STRING; value: string };

/** Arrays hold scalars of one type; arrays of u8 are kept as bytes (embedded files). */
export type MetadataValue =
  | MetadataScalar
  | { type: ValueType.ARRAY; elementType: ValueType.U8; value: Uint8Array }
  | { type: ValueType.ARRAY; elementType: Exclude<ValueType, ValueType.ARRAY | ValueType.U8>; value: MetadataScalar['value'][] };

export type Metadata = Map<string, MetadataValue>;

/** One row of the tensor table (spec §"Tensor entries"). */
export interface TensorEntry {
  name: string;
  dtype: Dtype;
  encoding: Encoding;
  shape: number[];
  /** Payload offset relative to the data section. */
  offset: number;
  /** Payload size in bytes. */
  size: number;
  checksum: number;
}

export function numElements(shape: readonly number[]): number {
  return shape.reduce((product, dim) => product * dim, 1);
}

export const metaString = (value: string): MetadataValue => ({ type: ValueType.STRING, value });
export const metaBytes = (value: Uint8Array): MetadataValue => ({ type: ValueType.ARRAY, elementType: ValueType.U8, value });

/** The string value of `key`, or undefined when absent or not a string. */
export function getString(metadata: Metadata, key: string): string | undefined {
  const entry = metadata.get(key);
  return entry?.type === ValueType.STRING ? entry.value : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Header

export function encodeHeader(header: EqzHeader): Uint8Array {
  const writer = new ByteWriter()
    .bytes(MAGIC)
    .u32(header.version)
    .u32(0)
    .u32(header.alignment)
    .u32(0)
    .u64(header.dataOffset)
    .u64(header.dataSize)
    .u64(header.tableOffset)
    .u64(header.tableSize)
    .u32(header.tableChecksum);
  const bytes = writer.finish();
  return new ByteWriter().bytes(bytes).u32(xxh32(bytes)).finish();
}

/** Parses and checks the 64-byte header against the file size; the order of checks is the spec's. */
export function parseHeader(bytes: Uint8Array, fileSize: number): EqzHeader {
  if (fileSize < HEADER_SIZE || bytes.length < HEADER_SIZE) {
    const magicOk = MAGIC.every((b, i) => i >= bytes.length || bytes[i] === b);
    throw new EqzError(magicOk ? 'Truncated' : 'BadMagic', `file is ${fileSize} bytes, shorter than the ${HEADER_SIZE}-byte header`, { offset: 0 });
  }
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) throw new EqzError('BadMagic', 'not an .eqz file (magic bytes differ)', { offset: i });
  }
  const reader = new ByteReader(bytes.subarray(0, HEADER_SIZE));
  reader.position = 8;
  const version = reader.u32('version');
  // The version is checked before the checksum: a later version may lay the rest of the header out differently.
  if (version !== FORMAT_VERSION) {
    throw new EqzError('UnsupportedVersion', `format version ${version} is not supported (this decoder reads version ${FORMAT_VERSION})`, { offset: 8 });
  }
  const checksum = new DataView(bytes.buffer, bytes.byteOffset + 60, 4).getUint32(0, true);
  if (xxh32(bytes.subarray(0, 60)) !== checksum) {
    throw new EqzError('ChecksumMismatch', 'header checksum does not match', { offset: 60 });
  }
  const flags = reader.u32('flags');
  if (flags !== 0) reader.fail('Malformed', `unknown header flags 0x${flags.toString(16)}`, 12);
  const alignment = reader.u32('alignment');
  if (alignment < MIN_ALIGNMENT || alignment > MAX_ALIGNMENT || (alignment & (alignment - 1)) !== 0) {
    reader.fail('Malformed', `alignment ${alignment} is not a power of two in [${MIN_ALIGNMENT}, ${MAX_ALIGNMENT}]`, 16);
  }
  if (reader.u32('reserved') !== 0) reader.fail('Malformed', 'reserved header field is not zero', 20);
  const dataOffset = reader.u64('data_offset');
  const dataSize = reader.u64('data_size');
  const tableOffset = reader.u64('table_offset');
  const tableSize = reader.u64('table_size');
  const tableChecksum = reader.u32('table_checksum');
  if (dataOffset < HEADER_SIZE || dataOffset % alignment !== 0) {
    reader.fail('Malformed', `data_offset ${dataOffset} is not an aligned offset after the header`, 24);
  }
  if (tableOffset < dataOffset + dataSize) {
    reader.fail('Malformed', `table_offset ${tableOffset} lies inside the data section (ends at ${dataOffset + dataSize})`, 40);
  }
  if (tableSize > LIMITS.maxTableBytes) reader.fail('LimitExceeded', `table_size ${tableSize} exceeds ${LIMITS.maxTableBytes}`, 48);
  if (tableOffset + tableSize > fileSize) {
    throw new EqzError('Truncated', `file is ${fileSize} bytes but the table ends at ${tableOffset + tableSize}`, { offset: fileSize });
  }
  if (tableOffset + tableSize < fileSize) {
    throw new EqzError('Malformed', `${fileSize - tableOffset - tableSize} unexpected bytes after the table`, { offset: tableOffset + tableSize });
  }
  return { version, alignment, dataOffset, dataSize, tableOffset, tableSize, tableChecksum };
}

// ---------------------------------------------------------------------------------------------------------------
// Metadata values

function readScalar(reader: ByteReader, type: ValueType, at: number): MetadataScalar {
  switch (type) {
    case ValueType.U8: return { type, value: reader.u8() };
    case ValueType.I8: return { type, value: (reader.u8() << 24) >> 24 };
    case ValueType.U16: return { type, value: reader.u16() };
    case ValueType.I16: return { type, value: (reader.u16() << 16) >> 16 };
    case ValueType.U32: return { type, value: reader.u32() };
    case ValueType.I32: return { type, value: reader.i32() };
    case ValueType.F32: return { type, value: reader.f32() };
    case ValueType.F64: return { type, value: reader.f64() };
    case ValueType.U64: return { type, value: reader.u64big() };
    case ValueType.I64: return { type, value: reader.i64big() };
    case ValueType.BOOL: {
      const byte = reader.u8('bool');
      if (byte > 1) reader.fail('Malformed', `bool value ${byte} is neither 0 nor 1`, at);
      return { type, value: byte === 1 };
    }
    case ValueType.STRING: return { type, value: reader.string('string value') };
    default: return reader.fail('Malformed', `unknown metadata value type ${type}`, at);
  }
}

/** Bytes one element of a fixed-size type occupies (strings: at least their 8-byte length). */
const MIN_ELEMENT_BYTES: Record<number, number> = {
  [ValueType.U8]: 1, [ValueType.I8]: 1, [ValueType.U16]: 2, [ValueType.I16]: 2, [ValueType.U32]: 4, [ValueType.I32]: 4,
  [ValueType.F32]: 4, [ValueType.BOOL]: 1, [ValueType.STRING]: 8, [ValueType.U64]: 8, [ValueType.I64]: 8, [ValueType.F64]: 8,
};

function readValue(reader: ByteReader): MetadataValue {
  const at = reader.offset;
  const type = reader.u32('value type') as ValueType;
  if (type !== ValueType.ARRAY) return readScalar(reader, type, at);
  const elementAt = reader.offset;
  const elementType = reader.u32('array element type') as ValueType;
  const elementBytes = MIN_ELEMENT_BYTES[elementType];
  if (elementBytes === undefined) {
    reader.fail('Malformed', elementType === ValueType.ARRAY ? 'nested arrays are not allowed' : `unknown array element type ${elementType}`, elementAt);
  }
  const countAt = reader.offset;
  const count = reader.u64('array length');
  if (count * elementBytes > reader.remaining) {
    reader.fail('Truncated', `array of ${count} elements cannot fit in the ${reader.remaining} bytes left in the table`, countAt);
  }
  if (elementType === ValueType.U8) return { type, elementType, value: reader.take(count).slice() };
  const value: MetadataScalar['value'][] = [];
  for (let i = 0; i < count; i++) value.push(readScalar(reader, elementType, reader.offset).value);
  return { type, elementType, value } as MetadataValue;
}

function writeScalar(writer: ByteWriter, type: ValueType, value: MetadataScalar['value']): void {
  switch (type) {
    case ValueType.U8: writer.u8(value as number); break;
    case ValueType.I8: writer.u8((value as number) & 0xff); break;
    case ValueType.U16: writer.u16(value as number); break;
    case ValueType.I16: writer.u16((value as number) & 0xffff); break;
    case ValueType.U32: writer.u32(value as number); break;
    case ValueType.I32: writer.i32(value as number); break;
    case ValueType.F32: writer.f32(value as number); break;
    case ValueType.F64: writer.f64(value as number); break;
    case ValueType.U64: writer.u64(value as bigint); break;
    case ValueType.I64: writer.i64(value as bigint); break;
    case ValueType.BOOL: writer.u8(value ? 1 : 0); break;
    case ValueType.STRING: writer.string(value as string); break;
    default: throw new Error(`cannot write metadata value type ${type}`);
  }
}

function writeValue(writer: ByteWriter, entry: MetadataValue): void {
  writer.u32(entry.type);
  if (entry.type !== ValueType.ARRAY) {
    writeScalar(writer, entry.type, entry.value);
    return;
  }
  writer.u32(entry.elementType).u64(entry.value.length);
  if (entry.value instanceof Uint8Array) writer.bytes(entry.value);
  else for (const element of entry.value) writeScalar(writer, entry.elementType, element);
}

// ---------------------------------------------------------------------------------------------------------------
// Table

export interface EqzTable {
  metadata: Metadata;
  tensors: TensorEntry[];
}

export function encodeTable(table: EqzTable): Uint8Array {
  const writer = new ByteWriter().u64(table.metadata.size);
  for (const [key, value] of table.metadata) {
    writer.string(key);
    writeValue(writer, value);
  }
  writer.u64(table.tensors.length);
  for (const tensor of table.tensors) {
    writer.string(tensor.name).u32(DTYPES.indexOf(tensor.dtype)).u32(ENCODINGS.indexOf(tensor.encoding)).u32(tensor.shape.length).u32(0);
    for (const dim of tensor.shape) writer.u64(dim);
    writer.u64(tensor.offset).u64(tensor.size).u32(tensor.checksum).u32(0);
  }
  return writer.finish();
}

/**
 * Parses the table bytes read from `header.tableOffset`, checks its checksum, and validates every entry: names,
 * dtypes, encodings, shapes within the limits, and payloads aligned, inside the data section and not overlapping.
 */
export function parseTable(bytes: Uint8Array, header: EqzHeader): EqzTable {
  if (xxh32(bytes) !== header.tableChecksum) {
    throw new EqzError('ChecksumMismatch', 'table checksum does not match', { offset: header.tableOffset });
  }
  const reader = new ByteReader(bytes, header.tableOffset);
  const metadata: Metadata = new Map();
  const metadataAt = reader.offset;
  const metadataCount = reader.u64('metadata count');
  if (metadataCount > LIMITS.maxEntries) reader.fail('LimitExceeded', `${metadataCount} metadata entries exceed ${LIMITS.maxEntries}`, metadataAt);
  for (let i = 0; i < metadataCount; i++) {
    const keyAt = reader.offset;
    const key = reader.string('metadata key', LIMITS.maxNameBytes);
    if (key.length === 0) reader.fail('Malformed', 'empty metadata key', keyAt);
    if (metadata.has(key)) reader.fail('Malformed', `duplicate metadata key "${key}"`, keyAt);
    metadata.set(key, readValue(reader));
  }
  const countAt = reader.offset;
  const tensorCount = reader.u64('tensor count');
  if (tensorCount > LIMITS.maxEntries) reader.fail('LimitExceeded', `${tensorCount} tensors exceed ${LIMITS.maxEntries}`, countAt);
  const tensors: TensorEntry[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const entryAt = reader.offset;
    const name = reader.string('tensor name', LIMITS.maxNameBytes);
    const fail = (code: Parameters<ByteReader['fail']>[0], message: string, at: number): never => {
      throw new EqzError(code, message, { tensor: name, offset: at });
    };
    if (name.length === 0) fail('Malformed', 'empty tensor name', entryAt);
    if (names.has(name)) fail('Malformed', 'duplicate tensor name', entryAt);
    names.add(name);
    const dtypeAt = reader.offset;
    const dtypeCode = reader.u32('dtype');
    const dtype = DTYPES[dtypeCode];
    if (dtype === undefined) fail('UnsupportedDtype', `unknown dtype code ${dtypeCode}`, dtypeAt);
    const encodingAt = reader.offset;
    const encodingCode = reader.u32('encoding');
    const encoding = ENCODINGS[encodingCode];
    if (encoding === undefined) fail('UnknownEncoding', `unknown encoding ${encodingCode}`, encodingAt);
    const rankAt = reader.offset;
    const rank = reader.u32('rank');
    if (rank > LIMITS.maxRank) fail('LimitExceeded', `rank ${rank} exceeds ${LIMITS.maxRank}`, rankAt);
    if (reader.u32('flags') !== 0) fail('Malformed', 'tensor flags are not zero', rankAt + 4);
    const shape: number[] = [];
    let elements = 1;
    for (let d = 0; d < rank; d++) {
      const dimAt = reader.offset;
      const dim = reader.u64big('dimension');
      // Checked in bigint so that no product can overflow before the comparison.
      if (dim > BigInt(LIMITS.maxElements) || BigInt(elements) * dim > BigInt(LIMITS.maxElements)) {
        fail('LimitExceeded', `shape has more than ${LIMITS.maxElements} elements`, dimAt);
      }
      shape.push(Number(dim));
      elements *= Number(dim);
    }
    const offsetAt = reader.offset;
    const offset = reader.u64('payload offset');
    const size = reader.u64('payload size');
    const checksum = reader.u32('payload checksum');
    if (reader.u32('reserved') !== 0) fail('Malformed', 'reserved tensor field is not zero', reader.offset - 4);
    if (offset % header.alignment !== 0) fail('Malformed', `payload offset ${offset} is not a multiple of the alignment ${header.alignment}`, offsetAt);
    if (offset + size > header.dataSize) {
      fail('OutOfBounds', `payload [${offset}, ${offset + size}) extends past the data section (${header.dataSize} bytes)`, offsetAt);
    }
    tensors.push({ name, dtype: dtype!, encoding: encoding!, shape, offset, size, checksum });
  }
  if (reader.remaining !== 0) reader.fail('Malformed', `${reader.remaining} unexpected bytes at the end of the table`);
  const byOffset = tensors.filter((t) => t.size > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    const previous = byOffset[i - 1]!;
    const current = byOffset[i]!;
    if (current.offset < previous.offset + previous.size) {
      throw new EqzError('Malformed', `payload overlaps that of "${previous.name}"`, { tensor: current.name, offset: header.dataOffset + current.offset });
    }
  }
  return { metadata, tensors };
}
