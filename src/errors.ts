/**
 * Every failure eqz reports on bad input is an {@link EqzError}: a stable `code` (the error class named in
 * spec/eqz.md and in the conformance manifest), a message naming what was wrong, and where known the tensor
 * and the byte offset in the file.
 */
export type EqzErrorCode =
  | 'BadMagic'
  | 'UnsupportedVersion'
  | 'Truncated'
  | 'ChecksumMismatch'
  | 'Malformed'
  | 'OutOfBounds'
  | 'LimitExceeded'
  | 'UnknownEncoding'
  | 'UnsupportedDtype'
  | 'CorruptStream'
  | 'InvalidValue'
  | 'Io';

export interface EqzErrorContext {
  /** Tensor the error concerns, when there is one. */
  tensor?: string;
  /** Absolute byte offset in the file where the problem was found. */
  offset?: number;
  /** File the error concerns. */
  file?: string;
}

export class EqzError extends Error {
  readonly code: EqzErrorCode;
  readonly tensor?: string;
  readonly offset?: number;
  readonly file?: string;

  /** The message without the code and location. */
  readonly detail: string;

  constructor(code: EqzErrorCode, message: string, context: EqzErrorContext = {}) {
    const where = [
      context.file !== undefined ? `file ${context.file}` : '',
      context.tensor !== undefined ? `tensor "${context.tensor}"` : '',
      context.offset !== undefined ? `byte offset ${context.offset}` : '',
    ].filter(Boolean);
    super(`${code}: ${message}${where.length ? ` (${where.join(', ')})` : ''}`);
    this.name = 'EqzError';
    this.detail = message;
    this.code = code;
    this.tensor = context.tensor;
    this.offset = context.offset;
    this.file = context.file;
  }

  /**
   * The same error placed in a file: `offsetBase` is added to an offset that was relative to a payload (errors
   * raised while decoding a payload count from its first byte); tensor and file are filled in where unknown.
   */
  locate(context: { file?: string; tensor?: string; offsetBase?: number }): EqzError {
    const offset = context.offsetBase !== undefined ? context.offsetBase + (this.offset ?? 0) : this.offset;
    const located = new EqzError(this.code, this.detail, {
      file: this.file ?? context.file,
      tensor: this.tensor ?? context.tensor,
      offset,
    });
    located.stack = this.stack;
    return located;
  }
}
