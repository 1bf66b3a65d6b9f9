/**
 * Bounds-checked little-endian reading and growable writing of the .eqz table (spec §"Table").
 *
 * Every read says where it happened: a {@link ByteReader} knows the absolute file offset of its first byte, so an
 * error names the byte offset in the file. Lengths read from the input are checked against the bytes that remain
 * before anything is allocated — a hostile length can never allocate more than the file holds.
 */
import { EqzError, type EqzErrorCode } from '../errors.js';

const textDecoder = new TextDecoder('utf-8', { fatal: true });
const textEncoder = new TextEncoder();

export class ByteReader {
  private readonly view: DataView;
  /** Offset of the next unread byte within `bytes`. */
  position = 0;

  constructor(
    readonly bytes: Uint8Array,
    /** Absolute file offset of bytes[0], for error messages. */
    readonly fileOffset = 0,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get remaining(): number {
    return this.bytes.length - this.position;
  }

  /** Absolute file offset of the next unread byte. */
  get offset(): number {
    return this.fileOffset + this.position;
  }

  fail(code: EqzErrorCode, message: string, at = this.offset): never {
    throw new EqzError(code, message, { offset: at });
  }

  private need(n: number, what: string): void {
    if (n > this.remaining) {
      this.fail('Truncated', `${what} needs ${n} bytes but only ${this.remaining} remain`);
    }
  }

  u8(what = 'u8'): number {
    this.need(1, what);
    return this.bytes[this.position++]!;
  }

  u16(what = 'u16'): number {
    this.need(2, what);
    const value = this.view.getUint16(this.position, true);
    this.position += 2;
    return value;
  }

  u32(what = 'u32'): number {
    this.need(4, what);
    const value = this.view.getUint32(this.position, true);
    this.position += 4;
    return value;
  }

  i32(what = 'i32'): number {
    this.need(4, what);
    const value = this.view.getInt32(this.position, true);
    this.position += 4;
    return value;
  }

  u64big(what = 'u64'): bigint {
    this.need(8, what);
    const value = this.view.getBigUint64(this.position, true);
    this.position += 8;
    return value;
  }

  i64big(what = 'i64'): bigint {
    this.need(8, what);
    const value = this.view.getBigInt64(this.position, true);
    this.position += 8;
    return value;
  }

  /** A u64 that must fit in a JS number (≤ 2^53 − 1): sizes, offsets and counts. */
  u64(what = 'u64'): number {
    const at = this.offset;
    const value = this.u64big(what);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) this.fail('LimitExceeded', `${what} ${value} exceeds 2^53 − 1`, at);
    return Number(value);
  }

  f32(what = 'f32'): number {
    this.need(4, what);
    const value = this.view.getFloat32(this.position, true);
    this.position += 4;
    return value;
  }

  f64(what = 'f64'): number {
    this.need(8, what);
    const value = this.view.getFloat64(this.position, true);
    this.position += 8;
    return value;
  }

  /** `n` raw bytes (a view, not a copy). */
  take(n: number, what = 'bytes'): Uint8Array {
    this.need(n, what);
    const out = this.bytes.subarray(this.position, this.position + n);
    this.position += n;
    return out;
  }

  /** u64 length + UTF-8 bytes (spec §"Strings"); `maxBytes` bounds the length before it is read. */
  string(what = 'string', maxBytes = Number.MAX_SAFE_INTEGER): string {
    const at = this.offset;
    const length = this.u64(`${what} length`);
    if (length > maxBytes) this.fail('LimitExceeded', `${what} is ${length} bytes, more than the limit of ${maxBytes}`, at);
    const raw = this.take(length, what);
    try {
      return textDecoder.decode(raw);
    } catch {
      return this.fail('Malformed', `${what} is not valid UTF-8`, at + 8);
    }
  }
}

/** Appends little-endian values to a growable buffer. */
export class ByteWriter {
  private buffer = new Uint8Array(256);
  private view = new DataView(this.buffer.buffer);
  length = 0;

  /** Makes room for `n` more bytes and returns where they start (call before touching `view`: it may be replaced). */
  private reserve(n: number): number {
    const start = this.length;
    if (start + n > this.buffer.length) {
      const grown = new Uint8Array(Math.max(this.buffer.length * 2, start + n));
      grown.set(this.buffer.subarray(0, start));
      this.buffer = grown;
      this.view = new DataView(grown.buffer);
    }
    this.length += n;
    return start;
  }

  u8(value: number): this {
    const at = this.reserve(1);
    this.buffer[at] = value;
    return this;
  }

  u16(value: number): this {
    const at = this.reserve(2);
    this.view.setUint16(at, value, true);
    return this;
  }

  u32(value: number): this {
    const at = this.reserve(4);
    this.view.setUint32(at, value, true);
    return this;
  }

  i32(value: number): this {
    const at = this.reserve(4);
    this.view.setInt32(at, value, true);
    return this;
  }

  u64(value: number | bigint): this {
    const at = this.reserve(8);
    this.view.setBigUint64(at, BigInt(value), true);
    return this;
  }

  i64(value: number | bigint): this {
    const at = this.reserve(8);
    this.view.setBigInt64(at, BigInt(value), true);
    return this;
  }

  f32(value: number): this {
    const at = this.reserve(4);
    this.view.setFloat32(at, value, true);
    return this;
  }

  f64(value: number): this {
    const at = this.reserve(8);
    this.view.setFloat64(at, value, true);
    return this;
  }

  bytes(data: Uint8Array): this {
    const at = this.reserve(data.length);
    this.buffer.set(data, at);
    return this;
  }

  string(value: string): this {
    const encoded = textEncoder.encode(value);
    return this.u64(encoded.length).bytes(encoded);
  }

  /** Zero bytes up to the next multiple of `alignment`. */
  pad(alignment: number): this {
    const padding = (alignment - (this.length % alignment)) % alignment;
    this.reserve(padding);
    this.buffer.fill(0, this.length - padding, this.length);
    return this;
  }

  finish(): Uint8Array {
    return this.buffer.slice(0, this.length);
  }
}
