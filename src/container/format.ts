/**
 * Constants of the .eqz format, version 1 (spec/eqz.md): magic, header layout, dtype and encoding codes,
 * metadata value types and the limits eqz enforces on hostile input.
 */

export const MAGIC = Uint8Array.of(0x89, 0x45, 0x51, 0x5a, 0x0d, 0x0a, 0x1a, 0x0a);
export const FORMAT_VERSION = 1;
export const HEADER_SIZE = 64;
export const DEFAULT_ALIGNMENT = 256;
export const MIN_ALIGNMENT = 8;
export const MAX_ALIGNMENT = 65536;

/** Limits from spec §"Limits": a hostile file cannot make a decoder allocate more than it holds. */
export const LIMITS = {
  maxRank: 8,
  maxElements: 2 ** 48,
  maxNameBytes: 65535,
  maxEntries: 2 ** 24,
  maxTableBytes: 2 ** 31,
} as const;

export type Dtype =
  | 'F32' | 'F16' | 'BF16' | 'F64' | 'F8_E4M3' | 'F8_E5M2'
  | 'I8' | 'U8' | 'I16' | 'U16' | 'I32' | 'U32' | 'I64' | 'U64' | 'BOOL';

/** dtype code → name, in code order (spec §"dtype codes"). Names are safetensors' own. */
export const DTYPES: readonly Dtype[] = [
  'F32', 'F16', 'BF16', 'F64', 'F8_E4M3', 'F8_E5M2', 'I8', 'U8', 'I16', 'U16', 'I32', 'U32', 'I64', 'U64', 'BOOL',
];

export const DTYPE_SIZE: Readonly<Record<Dtype, number>> = {
  F32: 4, F16: 2, BF16: 2, F64: 8, F8_E4M3: 1, F8_E5M2: 1,
  I8: 1, U8: 1, I16: 2, U16: 2, I32: 4, U32: 4, I64: 8, U64: 8, BOOL: 1,
};

export function dtypeCode(dtype: Dtype): number {
  return DTYPES.indexOf(dtype);
}

export function isDtype(name: string): name is Dtype {
  return (DTYPES as readonly string[]).includes(name);
}

export type Encoding = 'raw' | 'planes' | 'fp8-e4m3' | 'int8' | 'nvfp4';

/** encoding code → name, in code order (spec §"Encodings"). */
export const ENCODINGS: readonly Encoding[] = ['raw', 'planes', 'fp8-e4m3', 'int8', 'nvfp4'];

/** Metadata value types, numbered as in GGUF (spec §"Metadata"). */
export const enum ValueType {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
}

/** Reserved metadata keys (spec §"Reserved metadata keys"). */
export const META = {
  producer: 'eqz.producer',
  sourceFormat: 'eqz.source.format',
  sourceFiles: 'eqz.source.files',
  filePrefix: 'eqz.file.',
  quantMethod: 'eqz.quant.method',
  quantParams: 'eqz.quant.params',
  stats: 'eqz.stats',
} as const;
