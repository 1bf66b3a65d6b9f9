/**
 * Host side of the GPU decoder, without the GPU: parses payloads into coded streams (every structural check
 * happens here, through the codec's own parsers, before anything is uploaded), lays out the outputs, and cuts
 * the streams' chunks into dispatches whose bindings respect the adapter's size limits. decode.ts turns the
 * plan into buffers and passes; wgsl/decode.wgsl reads the descriptors written here.
 *
 * Work is counted in chunks: an rANS chunk as the stream has it, or (stored and one-symbol streams, which need
 * no rANS decoding) a pseudo-chunk of 2^16 symbols. Chunks are independent, so any run of them can go to any
 * dispatch; a dispatch's `data` buffer holds its descriptors, decode tables, scales and the chunks' states and
 * words, and its output binding covers the outputs of its chunks, each at most `maxBindingBytes`.
 *
 * nvfp4 tensors take two steps of one pass: the dispatches of their block-scale streams come first (into the
 * output for `codes`, else into a temporary arena), then their code streams are dequantized by dispatches that
 * read the decoded block scales through a fourth binding. Block-scale chunks also get the lowest chunk ids, so
 * that a failure there is reported before one in a code stream, as the CPU decoder, which decodes the block
 * scales first, would.
 */
import { parseScaledHeader, type ScaledHeader } from '../encodings/scaled.js';
import { DTYPE_SIZE, type Dtype } from '../container/format.js';
import { numElements, type TensorEntry } from '../container/table.js';
import { EqzError } from '../errors.js';
import { LANES, PROB_SCALE, STATE_LOW, STREAM_HEADER_SIZE } from '../codec/constants.js';
import { checkExpectations } from '../codec/stream-decode.js';
import {
  checkStoredBody, parseRansLayout, parseStreamHeader, STATE_BYTES, streamError, type RansLayout, type StreamHeader,
  type SymbolBits,
} from '../codec/stream-format.js';
import { NVFP4_BLOCK } from '../nvfp4/e2m1.js';
import { NVFP4_PAYLOAD_HEADER_BYTES, parseNvfp4Header, reciprocalScale } from '../nvfp4/payload.js';
import { f32Bits } from '../tensor/dtype.js';

/**
 * What a tensor decodes to on the GPU: `source` is the tensor's own dtype (for the quantized encodings the dtype
 * it was quantized from); F32, F16 and BF16 convert floating-point tensors (others keep their dtype, as on the
 * CPU); `codes` gives quantized tensors as they are stored: fp8-e4m3 / int8 as their code bytes followed by their
 * row scales as f32, nvfp4 as compressed-tensors keeps it (the packed U8 codes [rows, cols/2], then the E4M3 block
 * scales, then the f32 global scale). Other encodings decode as `source`.
 */
export type GpuOutput = 'F32' | 'F16' | 'BF16' | 'source' | 'codes';

/** One tensor to decode: its table entry, its payload (checksum already verified) and the output wanted. */
export interface GpuDecodeRequest {
  entry: TensorEntry;
  payload: Uint8Array;
  /** Default `source`. */
  output?: GpuOutput;
  /** File offset of the payload's first byte: errors then name file offsets (else offsets within the payload). */
  payloadOffset?: number;
}

/** Output formats (decode.wgsl's OUTPUT_FORMAT override) and what codes mean (its per-stream STREAM_VALUES). */
const FORMAT_BYTES = 0;
const FORMAT_F32 = 1;
const FORMAT_BF16 = 2;
const FORMAT_F16 = 3;
const VALUES_SYMBOLS = 0;
const VALUES_E4M3 = 1;
const VALUES_INT8 = 2;

/**
 * A decode.wgsl pipeline: OUTPUT_FORMAT, SYMBOL_BITS, and for the dequantization of nvfp4 code streams (the NVFP4
 * variant) SYMBOL_ELEMENTS.
 */
export interface DecodePipeline {
  format: number;
  symbolBits: SymbolBits;
  /** nvfp4 code streams dequantized: elements per symbol, 1 (nibble symbols) or 2 (packed bytes); else 0. */
  nvfp4Elements: 0 | 1 | 2;
}

/** Byte symbols written as they are: planes, `codes` outputs, nvfp4 block scales. */
export const BYTES_PIPELINE: DecodePipeline = { format: FORMAT_BYTES, symbolBits: 8, nvfp4Elements: 0 };

function pipelineKey(pipeline: DecodePipeline): string {
  return `${pipeline.format}/${pipeline.symbolBits}/${pipeline.nvfp4Elements}`;
}

/** Stream modes of decode.wgsl. */
export const MODE_RANS = 0;
const MODE_STORED = 1;
const MODE_CONSTANT = 2;

/** Source kinds and output kinds of decode-merge.wgsl. */
const MERGE_SOURCE_BF16 = 0;
const MERGE_SOURCE_F16 = 1;
const MERGE_SOURCE_F32 = 2;
const MERGE_SOURCE_OTHER = 3;
const MERGE_OUTPUT_SOURCE = 0;
const MERGE_OUTPUT_F32 = 1;
const MERGE_OUTPUT_BF16 = 2;
const MERGE_OUTPUT_F16 = 3;

// Layout of a dispatch's data buffer, in u32 (mirrors the constants at the top of decode.wgsl).
const HEADER_WORDS = 8;
const GROUP_WORDS = 4;
const CHUNK_WORDS = 8;
const STREAM_WORDS = 8;
const TABLE_WORDS = PROB_SCALE;
/** Zero words after the last input, so that no clamped read of an empty chunk leaves the buffer. */
const GUARD_WORDS = 4;

/**
 * Most symbols per pseudo-chunk of a stored or one-symbol stream; fewer (down to 128, which still fills whole
 * output words in any format) when small binding limits ask for it.
 */
const COPY_CHUNK_SYMBOLS = 1 << 16;
const MIN_COPY_CHUNK_SYMBOLS = 128;
/** Storage binding offsets must be multiples of this (WebGPU's minStorageBufferOffsetAlignment is at most 256). */
const BINDING_ALIGNMENT = 256;
/** At most this many chunks share a workgroup: 1024 invocations, the most WebGPU devices may allow. */
export const MAX_CHUNKS_PER_GROUP = 32;

const PLANES_HEADER_BYTES = 8;

const alignUp = (value: number, to: number): number => Math.ceil(value / to) * to;
const alignDown = (value: number, to: number): number => Math.floor(value / to) * to;

/** The scales and stream offset of an fp8-e4m3/int8 payload, checked as the CPU decoder checks them. */
function parseQuantizedPayload(entry: TensorEntry, payload: Uint8Array): ScaledHeader {
  if (entry.dtype !== 'F32' && entry.dtype !== 'F16' && entry.dtype !== 'BF16') {
    throw new EqzError('UnsupportedDtype', `${entry.encoding} tensors must have dtype F32, F16 or BF16, not ${entry.dtype}`, { tensor: entry.name });
  }
  try {
    return parseScaledHeader(payload, entry.shape);
  } catch (error) {
    throw error instanceof EqzError ? error.locate({ tensor: entry.name }) : error;
  }
}

/** A coded stream of a request, parsed, and where its decoded elements go. */
export interface PlannedStream {
  request: number;
  /** Which of its tensor's streams this is, for error messages (`plane 1`, `block-scale stream`); '' if the only one. */
  part: string;
  /** The stream's bytes, exactly its length. */
  bytes: Uint8Array;
  /** Offset of the stream in its payload. */
  offset: number;
  header: StreamHeader;
  /** rANS streams of two or more symbols. */
  layout?: RansLayout;
  mode: number;
  /** The symbol of a one-symbol rANS stream. */
  constantSymbol: number;
  pipeline: DecodePipeline;
  values: number;
  /** E4M3 codes whose table has slots for the NaN codes (0x7F, 0xFF) must be checked as they decode. */
  checkCodes: boolean;
  scales?: Float32Array;
  rowLength: number;
  /** Output bytes per symbol: 0.5 (nibbles as they are) up to 8 (a byte of two nvfp4 codes as F32). */
  symbolBytes: number;
  /** Symbols per (pseudo-)chunk, the last excepted. */
  chunkSymbols: number;
  /** nvfp4 code streams dequantized: where the tensor's decoded block scales lie, and m = RNE_f32(1 / global_scale). */
  nvfp4?: { blockScales: Placement; reciprocalBits: number };
}

/** Where a run of output bytes lives: an arena or the plane scratch buffer. */
export interface Placement {
  /** Arena index, or -1 for the scratch buffer. */
  arena: number;
  offset: number;
}

/** One chunk (or pseudo-chunk) of work: symbols [first, first + count) of a stream, and where they go. */
export interface ChunkWork {
  stream: PlannedStream;
  /** Chunk index in the stream (pseudo-chunk index for stored / one-symbol streams). */
  index: number;
  first: number;
  count: number;
  /** Byte offset of the chunk's first output element in its destination. */
  target: Placement;
}

/** One decode dispatch: its pipeline (output format, chunks per workgroup), data buffer contents, output binding. */
export interface DecodeDispatch {
  pipeline: DecodePipeline;
  chunksPerGroup: number;
  arena: number;
  /** Output binding range in the destination, BINDING_ALIGNMENT-aligned offset, size a multiple of 4. */
  outputOffset: number;
  outputSize: number;
  /** NVFP4 pipelines: the binding of the decoded block scales (BINDING_ALIGNMENT-aligned offset, size a multiple of 4). */
  blockScales?: { arena: number; offset: number; size: number };
  /** Descriptors, tables and scales (u32), to be followed in the data buffer by the inputs. */
  descriptors: Uint32Array;
  /** Copies into the data buffer after the descriptors: bytes of a stream at a byte offset in the buffer. */
  inputs: { source: Uint8Array; at: number }[];
  /** Total data buffer size in bytes (multiple of 4). */
  dataSize: number;
  groupCount: number;
  /** The chunks, by the chunk id the kernel reports (id − firstChunkId). */
  chunks: ChunkWork[];
  firstChunkId: number;
}

/** One plane-merge dispatch of decode-merge.wgsl. */
export interface MergeDispatch {
  sourceKind: number;
  sourceWidth: number;
  outputKind: number;
  elements: number;
  /** Bytes from one plane to the next in the scratch buffer (multiple of BINDING_ALIGNMENT). */
  planeStride: number;
  scratchOffset: number;
  scratchSize: number;
  arena: number;
  outputOffset: number;
  outputSize: number;
}

/** A set of dispatches that can run before the scratch buffer is reused: decodes first, then merges. */
export interface Round {
  decodes: DecodeDispatch[];
  merges: MergeDispatch[];
}

/** Where a request's result lies. */
export interface PlannedOutput {
  dtype: Dtype;
  /** The entry's shape, or for nvfp4 `codes` the packed codes' [rows, cols/2]. */
  shape: number[];
  arena: number;
  offset: number;
  byteLength: number;
  /** fp8-e4m3 / int8 `codes` outputs: the f32 row scales after the codes. */
  scales?: { offset: number; count: number; values: Float32Array };
  /** nvfp4 `codes` outputs: the E4M3 block-scale bytes after the codes, and the f32 global scale after them. */
  blockScales?: { offset: number; count: number };
  globalScale?: { offset: number; value: number };
  /** Bytes the host writes itself (raw payloads decoded on the CPU). */
  hostBytes?: Uint8Array;
}

/** A buffer the plan places results in. */
export interface PlannedArena {
  size: number;
  /** Holds only intermediate results (nvfp4 block scales before dequantization), freed with the call's inputs. */
  temporary: boolean;
}

/** Everything decode.ts needs to run a call. */
export interface DecodePlan {
  arenas: PlannedArena[];
  outputs: PlannedOutput[];
  rounds: Round[];
  /** Scratch bytes the rounds need (0 when no merges). */
  scratchSize: number;
  /** Every chunk of the call by chunk id (for error reports). */
  chunks: ChunkWork[];
}

/** Limits the planner keeps to. */
export interface PlanLimits {
  /** Largest storage binding (and data buffer). */
  maxBindingBytes: number;
  /** Largest buffer (an arena holds whole tensors; a tensor larger than this cannot be decoded on the GPU). */
  maxBufferBytes: number;
  /** Scratch buffer for planes before merging. */
  scratchBytes: number;
  /** Chunks per workgroup (1..32), or `auto`: per dispatch, see {@link autoChunksPerGroup}. */
  chunksPerGroup: number | 'auto';
  /** The most chunks per workgroup `auto` gives (the kernel's choice, within the device's invocation limit / 32). */
  maxChunksPerGroup: number;
}

/** Workgroups a dispatch should have at least before chunks share workgroups (a large GPU has 100+ SMs). */
const TARGET_WORKGROUPS = 512;

/**
 * Chunks per workgroup for a dispatch of `chunks` chunks: sharing a workgroup shares its decode table, but few
 * chunks (one tensor, a small block) decode fastest spread one per workgroup over as many processors as possible.
 */
export function autoChunksPerGroup(chunks: number, most = MAX_CHUNKS_PER_GROUP): number {
  let perGroup = 2 ** Math.floor(Math.log2(most));
  while (perGroup > 1 && chunks / perGroup < TARGET_WORKGROUPS) perGroup /= 2;
  return perGroup;
}

/** Decodes raw payloads on the CPU (they need no GPU work); supplied by the caller to keep this module GPU-free. */
export type RawDecoder = (entry: TensorEntry, payload: Uint8Array, dtype: Dtype) => Uint8Array;

const FLOAT_CONVERTIBLE: readonly Dtype[] = ['F32', 'F16', 'BF16'];

/** The dtype a request decodes to (the CPU decoder's rule for F32/F16/BF16 outputs). */
export function plannedDtype(request: GpuDecodeRequest): Dtype {
  const { entry } = request;
  const output = request.output ?? 'source';
  if (output === 'codes' && entry.encoding === 'fp8-e4m3') return 'F8_E4M3';
  if (output === 'codes' && entry.encoding === 'int8') return 'I8';
  if (output === 'codes' && entry.encoding === 'nvfp4') return 'U8';
  if (output === 'F32' || output === 'F16' || output === 'BF16') {
    return FLOAT_CONVERTIBLE.includes(entry.dtype) ? output : entry.dtype;
  }
  return entry.dtype;
}

function formatOf(dtype: Dtype): number {
  return dtype === 'F32' ? FORMAT_F32 : dtype === 'BF16' ? FORMAT_BF16 : dtype === 'F16' ? FORMAT_F16 : FORMAT_BYTES;
}

/** A coded stream as parsed, before the planner says what its symbols become. */
type ParsedStream = Pick<PlannedStream, 'request' | 'part' | 'bytes' | 'offset' | 'header' | 'layout' | 'mode' | 'constantSymbol'>;

/** Parses the stream at `offset` of a request's payload, checking it holds `symbols` symbols of `symbolBits`. */
function parseStream(
  request: GpuDecodeRequest, index: number, part: string, offset: number, symbolBits: SymbolBits, symbols: number,
): ParsedStream {
  const context = { streamOffset: offset, tensor: request.entry.name };
  const rest = request.payload.subarray(offset);
  const header = parseStreamHeader(rest, context);
  checkExpectations(header, { ...context, expectedSymbolBits: symbolBits, expectedSymbols: symbols });
  const bytes = rest.subarray(0, header.byteLength);
  if (header.mode === 'stored') {
    checkStoredBody(bytes, header, context);
    return { request: index, part, bytes, offset, header, mode: MODE_STORED, constantSymbol: 0 };
  }
  const layout = parseRansLayout(bytes, header, context);
  const onlySymbol = layout.frequencies.indexOf(PROB_SCALE);
  if (onlySymbol < 0) return { request: index, part, bytes, offset, header, layout, mode: MODE_RANS, constantSymbol: 0 };
  // One symbol: C(s, x) = x, so every state must be 2^16 and there are no words (checked as the CPU decoder does).
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < layout.chunkCount * LANES; i++) {
    if (view.getUint32(layout.statesOffset + 4 * i, true) !== STATE_LOW) {
      throw streamError('CorruptStream', 'one-symbol stream with a state other than 2^16', layout.statesOffset + 4 * i, context);
    }
  }
  if (layout.wordStarts[layout.chunkCount] !== 0) {
    throw streamError('CorruptStream', 'one-symbol stream with words', layout.wordCountsOffset, context);
  }
  return { request: index, part, bytes, offset, header, mode: MODE_CONSTANT, constantSymbol: onlySymbol };
}

/**
 * Symbols per (pseudo-)chunk of a parsed stream whose symbols become `symbolBytes` output bytes each: the rANS
 * chunk, or a pseudo-chunk whose input and output fit a quarter binding.
 */
function chunkSymbolsFor(parsed: ParsedStream, symbolBytes: number, limits: PlanLimits): number {
  if (parsed.layout) return parsed.layout.chunkSymbols;
  const bytesPerSymbol = parsed.header.symbolBits / 8 + symbolBytes;
  let symbols = COPY_CHUNK_SYMBOLS;
  while (symbols > MIN_COPY_CHUNK_SYMBOLS && symbols * bytesPerSymbol > limits.maxBindingBytes / 4) symbols /= 2;
  return symbols;
}

/** Number of (pseudo-)chunks of a stream. */
function chunkCountOf(stream: PlannedStream): number {
  return Math.ceil(stream.header.symbolCount / stream.chunkSymbols);
}

/** Input bytes a chunk takes in a data buffer (states and words, or stored symbols), whole u32 words. */
function inputBytes(work: ChunkWork): number {
  const { stream } = work;
  if (stream.mode === MODE_CONSTANT) return 0;
  if (stream.mode === MODE_STORED) return alignUp(Math.ceil((work.count * stream.header.symbolBits) / 8), 4);
  const starts = stream.layout!.wordStarts;
  const wordBytes = 2 * (starts[work.index + 1]! - starts[work.index]!);
  return STATE_BYTES + alignUp(wordBytes + 2, 4);
}

/** Data-buffer bytes a chunk adds to a dispatch, its stream's table and scales included when `newStream`. */
function chunkDataBytes(work: ChunkWork, newStream: boolean): number {
  const { stream } = work;
  let bytes = 4 * (CHUNK_WORDS + GROUP_WORDS) + inputBytes(work);
  if (newStream) bytes += 4 * (STREAM_WORDS + (stream.mode === MODE_RANS ? TABLE_WORDS : 0));
  // The scales of the tensor rows the chunk touches (one more for a row shared with the previous chunk).
  if (stream.scales) bytes += 4 * (Math.ceil(work.count / stream.rowLength) + 2);
  return bytes;
}

/**
 * Builds the 4096-slot decode table: entry = frequency << 20 | symbol << 12 | (slot − cum), so that a decode
 * step is one shift, one mask and one multiply-add (decode.wgsl advanceState). Frequencies are below 4096 here:
 * one-symbol streams never reach the table.
 */
function decodeTable(frequencies: Uint32Array, into: Uint32Array, at: number): void {
  let slot = at;
  for (let symbol = 0; symbol < frequencies.length; symbol++) {
    const frequency = frequencies[symbol]!;
    for (let offset = 0; offset < frequency; offset++) into[slot++] = ((frequency << 20) | (symbol << 12) | offset) >>> 0;
  }
}

/** Bytes [start, end) of an arena. */
interface ArenaRange {
  arena: number;
  start: number;
  end: number;
}

/** The decoded block scales a chunk of a dequantized nvfp4 code stream reads; none for other streams. */
function blockScaleRange(work: ChunkWork): ArenaRange | undefined {
  const { nvfp4, pipeline } = work.stream;
  if (!nvfp4) return undefined;
  const symbolsPerBlock = NVFP4_BLOCK / pipeline.nvfp4Elements;
  const { arena, offset } = nvfp4.blockScales;
  return {
    arena, start: offset + Math.floor(work.first / symbolsPerBlock), end: offset + Math.ceil((work.first + work.count) / symbolsPerBlock),
  };
}

/** Accumulates chunks into one dispatch, then writes its descriptors. */
class DispatchBuilder {
  readonly chunks: ChunkWork[] = [];
  private dataBytes = 4 * (HEADER_WORDS + GUARD_WORDS);
  private readonly outputStart: number;
  private outputEnd: number;
  private lastStream: PlannedStream | undefined;
  /** The block scales the chunks read (NVFP4 pipelines). */
  private blockScales: ArenaRange | undefined;

  constructor(readonly pipeline: DecodePipeline, readonly arena: number, first: ChunkWork, private readonly limits: PlanLimits) {
    this.outputStart = alignDown(first.target.offset, BINDING_ALIGNMENT);
    this.outputEnd = this.outputStart;
  }

  /** Adds `work` if the dispatch stays within the limits; false if it does not (and the dispatch is not empty). */
  tryAdd(work: ChunkWork): boolean {
    const bytes = chunkDataBytes(work, work.stream !== this.lastStream);
    const outputEnd = work.target.offset + alignUp(work.count * work.stream.symbolBytes, 4);
    const needed = blockScaleRange(work);
    const current = this.blockScales;
    const blockScales = needed && current
      ? { arena: current.arena, start: Math.min(current.start, needed.start), end: Math.max(current.end, needed.end) }
      : needed ?? current;
    const fits = this.dataBytes + bytes <= this.limits.maxBindingBytes
      && outputEnd - this.outputStart <= this.limits.maxBindingBytes
      && (!needed || !current || needed.arena === current.arena)
      && (!blockScales || alignUp(blockScales.end, 4) - alignDown(blockScales.start, BINDING_ALIGNMENT) <= this.limits.maxBindingBytes);
    if (!fits && this.chunks.length > 0) return false;
    if (!fits) {
      throw new EqzError('LimitExceeded', `a chunk of ${work.count} symbols needs more than the ${this.limits.maxBindingBytes}-byte binding limit`);
    }
    this.chunks.push(work);
    this.dataBytes += bytes;
    this.outputEnd = Math.max(this.outputEnd, outputEnd);
    this.lastStream = work.stream;
    this.blockScales = blockScales;
    return true;
  }

  build(firstChunkId: number): DecodeDispatch {
    // Streams of this dispatch in order, each with its run of consecutive chunks.
    const runs: { stream: PlannedStream; chunks: ChunkWork[] }[] = [];
    for (const work of this.chunks) {
      const last = runs[runs.length - 1];
      if (last && last.stream === work.stream) last.chunks.push(work);
      else runs.push({ stream: work.stream, chunks: [work] });
    }
    const perGroup = this.limits.chunksPerGroup === 'auto'
      ? autoChunksPerGroup(this.chunks.length, this.limits.maxChunksPerGroup) : this.limits.chunksPerGroup;
    const groups: { firstChunk: number; count: number; stream: number }[] = [];
    let chunkIndex = 0;
    runs.forEach((run, streamIndex) => {
      for (let i = 0; i < run.chunks.length; i += perGroup) {
        groups.push({ firstChunk: chunkIndex + i, count: Math.min(perGroup, run.chunks.length - i), stream: streamIndex });
      }
      chunkIndex += run.chunks.length;
    });

    const groupTable = HEADER_WORDS;
    const chunkTable = groupTable + groups.length * GROUP_WORDS;
    const streamTable = chunkTable + this.chunks.length * CHUNK_WORDS;
    let words = streamTable + runs.length * STREAM_WORDS;
    const tableAt: number[] = [];
    const scalesAt: number[] = [];
    const firstRow: number[] = [];
    const rowCount: number[] = [];
    for (const run of runs) {
      tableAt.push(run.stream.mode === MODE_RANS ? words : 0);
      if (run.stream.mode === MODE_RANS) words += TABLE_WORDS;
      const first = run.chunks[0]!;
      const last = run.chunks[run.chunks.length - 1]!;
      const rowFirst = run.stream.scales ? Math.floor(first.first / run.stream.rowLength) : 0;
      const rowEnd = run.stream.scales ? Math.ceil((last.first + last.count) / run.stream.rowLength) : 0;
      scalesAt.push(words);
      firstRow.push(rowFirst);
      rowCount.push(rowEnd - rowFirst);
      words += rowEnd - rowFirst;
    }
    const descriptors = new Uint32Array(words);
    const inputs: { source: Uint8Array; at: number }[] = [];
    let inputAt = 4 * words;
    const blockScales = this.blockScales && {
      arena: this.blockScales.arena,
      offset: alignDown(this.blockScales.start, BINDING_ALIGNMENT),
      size: alignUp(this.blockScales.end - alignDown(this.blockScales.start, BINDING_ALIGNMENT), 4),
    };

    descriptors[0] = groups.length;
    descriptors[1] = Math.min(groups.length, 65535);
    descriptors[2] = groupTable;
    descriptors[3] = chunkTable;
    descriptors[4] = streamTable;
    groups.forEach((group, i) => descriptors.set([group.firstChunk, group.count, group.stream, 0], groupTable + i * GROUP_WORDS));

    let chunkSlot = 0;
    runs.forEach((run, s) => {
      const { stream } = run;
      // The u32 of tensor row 0's scale in `data`, or (nvfp4) the byte of block 0's scale in the block-scale
      // binding: either may lie before the binding's start, wrapping (only blocks and rows in range are read).
      const scaleBase = stream.nvfp4 ? (stream.nvfp4.blockScales.offset - blockScales!.offset) >>> 0 : (scalesAt[s]! - firstRow[s]!) >>> 0;
      descriptors.set([
        stream.mode, stream.mode === MODE_RANS ? tableAt[s]! : stream.constantSymbol, scaleBase, stream.rowLength,
        stream.checkCodes ? 1 : 0, scalesAt[s]! + Math.max(rowCount[s]! - 1, 0), stream.values, stream.nvfp4?.reciprocalBits ?? 0,
      ], streamTable + s * STREAM_WORDS);
      if (stream.mode === MODE_RANS) decodeTable(stream.layout!.frequencies, descriptors, tableAt[s]!);
      if (stream.scales) {
        const scaleBits = new Uint32Array(stream.scales.buffer, stream.scales.byteOffset, stream.scales.length);
        descriptors.set(scaleBits.subarray(firstRow[s]!, firstRow[s]! + rowCount[s]!), scalesAt[s]!);
      }
      for (const work of run.chunks) {
        let input = 0;
        let wordBase = 0;
        let wordCount = 0;
        if (stream.mode === MODE_RANS) {
          const layout = stream.layout!;
          const statesAt = layout.statesOffset + work.index * STATE_BYTES;
          inputs.push({ source: stream.bytes.subarray(statesAt, statesAt + STATE_BYTES), at: inputAt });
          input = inputAt / 4;
          inputAt += STATE_BYTES;
          const wordsStart = layout.wordsOffset + 2 * layout.wordStarts[work.index]!;
          wordCount = layout.wordCounts[work.index]!;
          // Whole u32 words around the chunk's u16 words (the words region is 4-aligned and zero-padded).
          const copyStart = alignDown(wordsStart, 4);
          const copyEnd = alignUp(wordsStart + 2 * wordCount, 4);
          inputs.push({ source: stream.bytes.subarray(copyStart, copyEnd), at: inputAt });
          wordBase = (inputAt + wordsStart - copyStart) / 2;
          inputAt += copyEnd - copyStart;
        } else if (stream.mode === MODE_STORED) {
          // Pseudo-chunks start at whole bytes: their sizes are multiples of 128 symbols.
          const symbolsAt = STREAM_HEADER_SIZE + (work.first * stream.header.symbolBits) / 8;
          const size = inputBytes(work);
          inputs.push({ source: stream.bytes.subarray(symbolsAt, symbolsAt + size), at: inputAt });
          input = inputAt;
          inputAt += size;
        }
        descriptors.set([
          input, wordBase, wordCount, work.count, (work.target.offset - this.outputStart) / 4, work.first, firstChunkId + chunkSlot, 0,
        ], chunkTable + chunkSlot * CHUNK_WORDS);
        chunkSlot++;
      }
    });
    return {
      pipeline: this.pipeline,
      chunksPerGroup: perGroup,
      arena: this.arena,
      outputOffset: this.outputStart,
      outputSize: alignUp(this.outputEnd - this.outputStart, 4),
      blockScales,
      descriptors,
      inputs,
      dataSize: inputAt + 4 * GUARD_WORDS,
      groupCount: groups.length,
      chunks: this.chunks,
      firstChunkId,
    };
  }
}

/**
 * Cuts `work` (ordered by destination offset within each destination) into dispatches of one output format and
 * one destination each, appending its chunks to `chunks` in chunk-id order.
 */
function cutDispatches(work: readonly ChunkWork[], limits: PlanLimits, chunks: ChunkWork[]): DecodeDispatch[] {
  const dispatches: DecodeDispatch[] = [];
  let builder: DispatchBuilder | undefined;
  const close = (): void => {
    if (!builder) return;
    const built = builder.build(chunks.length);
    chunks.push(...built.chunks);
    dispatches.push(built);
    builder = undefined;
  };
  for (const chunk of work) {
    const { pipeline } = chunk.stream;
    if (builder && (pipelineKey(builder.pipeline) !== pipelineKey(pipeline) || builder.arena !== chunk.target.arena)) close();
    builder ??= new DispatchBuilder(pipeline, chunk.target.arena, chunk, limits);
    if (!builder.tryAdd(chunk)) {
      close();
      builder = new DispatchBuilder(pipeline, chunk.target.arena, chunk, limits);
      builder.tryAdd(chunk);
    }
  }
  close();
  return dispatches;
}

/** Chunks of `stream` with symbols in [from, to) (chunk-aligned), placed from `base` (byte offset of symbol `from`). */
function chunksOf(stream: PlannedStream, from: number, to: number, arena: number, base: number): ChunkWork[] {
  const size = stream.chunkSymbols;
  const out: ChunkWork[] = [];
  for (let index = from / size; index < chunkCountOf(stream) && index * size < to; index++) {
    const first = index * size;
    const count = Math.min(stream.header.symbolCount, first + size) - first;
    out.push({ stream, index, first, count, target: { arena, offset: base + (first - from) * stream.symbolBytes } });
  }
  return out;
}

/** The plane-merge source kind of a planes tensor's dtype. */
function mergeSourceKind(dtype: Dtype): number {
  return dtype === 'BF16' ? MERGE_SOURCE_BF16 : dtype === 'F16' ? MERGE_SOURCE_F16 : dtype === 'F32' ? MERGE_SOURCE_F32 : MERGE_SOURCE_OTHER;
}

function mergeOutputKind(source: Dtype, target: Dtype): number {
  if (source === target) return MERGE_OUTPUT_SOURCE;
  return target === 'F32' ? MERGE_OUTPUT_F32 : target === 'BF16' ? MERGE_OUTPUT_BF16 : MERGE_OUTPUT_F16;
}

/** An nvfp4 payload's global scale and coded streams, checked as the CPU decoder checks them (spec §7.6). */
interface Nvfp4Payload {
  rows: number;
  cols: number;
  globalScale: number;
  blockScales: ParsedStream;
  codes: ParsedStream;
}

/** Parses an nvfp4 payload: the header's fields, then both streams' structure; nothing is decoded. */
function parseNvfp4Payload(request: GpuDecodeRequest, index: number): Nvfp4Payload {
  const { entry, payload } = request;
  if (!FLOAT_CONVERTIBLE.includes(entry.dtype)) throw new EqzError('UnsupportedDtype', `nvfp4 cannot stand for ${entry.dtype}`);
  if (entry.shape.length !== 2) throw new EqzError('Malformed', `nvfp4 needs rank 2, the shape is [${entry.shape.join(', ')}]`);
  const [rows, cols] = entry.shape as [number, number];
  const { numel, globalScale, packing } = parseNvfp4Header(payload, rows, cols);
  const blockScales = parseStream(request, index, 'block-scale stream', NVFP4_PAYLOAD_HEADER_BYTES, 8, numel / NVFP4_BLOCK);
  const codesAt = NVFP4_PAYLOAD_HEADER_BYTES + blockScales.header.byteLength;
  const packedBytes = packing === 'byte';
  const codes = parseStream(request, index, 'code stream', codesAt, packedBytes ? 8 : 4, packedBytes ? numel / 2 : numel);
  const end = codesAt + codes.header.byteLength;
  if (end !== payload.length) throw new EqzError('Malformed', `${payload.length - end} bytes after the code stream`, { offset: end });
  return { rows, cols, globalScale, blockScales, codes };
}

/** Whether an rANS table gives the E4M3 NaN codes (0x7F, 0xFF) slots; stored streams may hold any byte. */
function mayHoldNaNCodes(parsed: ParsedStream): boolean {
  return parsed.layout ? parsed.layout.frequencies[0x7f]! + parsed.layout.frequencies[0xff]! > 0 : true;
}

/**
 * Plans a decode call: parses and checks every payload (EqzError on bad input, offsets within the payload or,
 * with `payloadOffset`, in the file), places the outputs in arenas, and cuts the work into rounds of dispatches.
 */
export function planDecode(requests: readonly GpuDecodeRequest[], limits: PlanLimits, decodeRaw: RawDecoder): DecodePlan {
  const outputs: PlannedOutput[] = [];
  const arenas: PlannedArena[] = [];
  // nvfp4 block scales, decoded before anything else; work straight into the arenas; planes tensors of 2 or 4
  // bytes, which go through the scratch buffer.
  const blockScaleWork: ChunkWork[] = [];
  const direct: ChunkWork[] = [];
  const merged: { request: number; streams: PlannedStream[]; output: PlannedOutput }[] = [];

  /** Room for `bytes` in the last arena of its kind (outputs, or temporary), or in a new one. */
  const place = (bytes: number, temporary = false): Placement => {
    const size = alignUp(bytes, BINDING_ALIGNMENT);
    if (size > limits.maxBufferBytes) {
      throw new EqzError('LimitExceeded', `a decoded tensor of ${bytes} bytes is larger than the adapter's ${limits.maxBufferBytes}-byte buffers`);
    }
    let arena = arenas.length - 1;
    while (arena >= 0 && arenas[arena]!.temporary !== temporary) arena--;
    if (arena < 0 || arenas[arena]!.size + size > limits.maxBufferBytes) {
      arenas.push({ size: 0, temporary });
      arena = arenas.length - 1;
    }
    const offset = arenas[arena]!.size;
    arenas[arena]!.size = offset + size;
    return { arena, offset };
  };

  requests.forEach((request, index) => {
    const { entry, payload } = request;
    try {
      const dtype = plannedDtype(request);
      const shape = [...entry.shape];
      const numel = numElements(entry.shape);
      // The kernels index a tensor's elements with u32.
      if (numel >= 2 ** 32) throw new EqzError('LimitExceeded', `${numel} elements: the GPU decoder takes tensors of fewer than 2^32`);
      const elementBytes = DTYPE_SIZE[dtype];
      switch (entry.encoding) {
        case 'raw': {
          const hostBytes = decodeRaw(entry, payload, dtype);
          const at = place(hostBytes.length);
          outputs.push({ dtype, shape, ...at, byteLength: hostBytes.length, hostBytes });
          break;
        }
        case 'planes': {
          const width = DTYPE_SIZE[entry.dtype];
          if (width !== 1 && width !== 2 && width !== 4) {
            throw new EqzError('UnsupportedDtype', `planes encoding needs 1-, 2- or 4-byte elements, not ${entry.dtype}`);
          }
          if (payload.length < PLANES_HEADER_BYTES) throw new EqzError('Malformed', 'planes payload shorter than its 8-byte header', { offset: 0 });
          const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
          if (view.getUint32(0, true) !== width) {
            throw new EqzError('Malformed', `plane_count ${view.getUint32(0, true)} for ${entry.dtype} (width ${width})`, { offset: 0 });
          }
          if (view.getUint32(4, true) !== 0) throw new EqzError('Malformed', 'planes reserved field is not 0', { offset: 4 });
          const streams: PlannedStream[] = [];
          let at = PLANES_HEADER_BYTES;
          for (let plane = 0; plane < width; plane++) {
            const parsed = parseStream(request, index, `plane ${plane}`, at, 8, numel);
            streams.push({
              ...parsed, pipeline: BYTES_PIPELINE, values: VALUES_SYMBOLS, checkCodes: false, rowLength: 0, symbolBytes: 1,
              chunkSymbols: chunkSymbolsFor(parsed, 1, limits),
            });
            at += parsed.header.byteLength;
          }
          if (at !== payload.length) throw new EqzError('Malformed', `${payload.length - at} bytes after the last plane`, { offset: at });
          const output = { dtype, shape, ...place(numel * elementBytes), byteLength: numel * elementBytes };
          outputs.push(output);
          if (width === 1) direct.push(...chunksOf(streams[0]!, 0, numel, output.arena, output.offset));
          else merged.push({ request: index, streams, output });
          break;
        }
        case 'fp8-e4m3':
        case 'int8': {
          const quantized = parseQuantizedPayload(entry, payload);
          const parsed = parseStream(request, index, '', quantized.streamOffset, 8, numel);
          if (quantized.streamOffset + parsed.header.byteLength !== payload.length) {
            throw new EqzError('Malformed', 'bytes after the code stream', { offset: quantized.streamOffset + parsed.header.byteLength });
          }
          const e4m3 = entry.encoding === 'fp8-e4m3';
          const codes = dtype === 'F8_E4M3' || dtype === 'I8';
          const stream: PlannedStream = {
            ...parsed,
            pipeline: { ...BYTES_PIPELINE, format: formatOf(dtype) },
            values: codes ? VALUES_SYMBOLS : e4m3 ? VALUES_E4M3 : VALUES_INT8,
            checkCodes: e4m3 && mayHoldNaNCodes(parsed),
            scales: codes ? undefined : quantized.scales,
            rowLength: quantized.rowLength,
            symbolBytes: elementBytes,
            chunkSymbols: chunkSymbolsFor(parsed, elementBytes, limits),
          };
          const codeBytes = alignUp(numel, 4);
          const size = codes ? codeBytes + 4 * quantized.rows : numel * elementBytes;
          const at = place(size);
          outputs.push({
            dtype, shape, ...at, byteLength: codes ? numel : size,
            scales: codes ? { offset: at.offset + codeBytes, count: quantized.rows, values: quantized.scales } : undefined,
          });
          direct.push(...chunksOf(stream, 0, numel, at.arena, at.offset));
          break;
        }
        case 'nvfp4': {
          const nvfp4 = parseNvfp4Payload(request, index);
          const blocks = numel / NVFP4_BLOCK;
          const blockScales: PlannedStream = {
            ...nvfp4.blockScales, pipeline: BYTES_PIPELINE, values: VALUES_SYMBOLS, checkCodes: mayHoldNaNCodes(nvfp4.blockScales),
            rowLength: 0, symbolBytes: 1, chunkSymbols: chunkSymbolsFor(nvfp4.blockScales, 1, limits),
          };
          const symbolBits = nvfp4.codes.header.symbolBits;
          const symbols = nvfp4.codes.header.symbolCount;
          if (dtype === 'U8') {
            // compressed-tensors' three tensors: the packed codes (nibble symbols are packed as they are written),
            // the block scales, the global scale.
            const scalesAt = alignUp(numel / 2, 4);
            const globalAt = alignUp(scalesAt + blocks, 4);
            const at = place(globalAt + 4);
            outputs.push({
              dtype, shape: [nvfp4.rows, nvfp4.cols / 2], ...at, byteLength: numel / 2,
              blockScales: { offset: at.offset + scalesAt, count: blocks }, globalScale: { offset: at.offset + globalAt, value: nvfp4.globalScale },
            });
            blockScaleWork.push(...chunksOf(blockScales, 0, blocks, at.arena, at.offset + scalesAt));
            const stream: PlannedStream = {
              ...nvfp4.codes, pipeline: { ...BYTES_PIPELINE, symbolBits }, values: VALUES_SYMBOLS, checkCodes: false, rowLength: 0,
              symbolBytes: symbolBits / 8, chunkSymbols: chunkSymbolsFor(nvfp4.codes, symbolBits / 8, limits),
            };
            direct.push(...chunksOf(stream, 0, symbols, at.arena, at.offset));
            break;
          }
          const scalesAt = place(blocks, true);
          blockScaleWork.push(...chunksOf(blockScales, 0, blocks, scalesAt.arena, scalesAt.offset));
          const elementsPerSymbol = symbolBits === 8 ? 2 : 1;
          const stream: PlannedStream = {
            ...nvfp4.codes,
            pipeline: { format: formatOf(dtype), symbolBits, nvfp4Elements: elementsPerSymbol },
            // The codes' values are computed in the kernel; the workgroup's code table holds the block scales'.
            values: VALUES_E4M3,
            checkCodes: false,
            rowLength: 0,
            symbolBytes: elementBytes * elementsPerSymbol,
            chunkSymbols: chunkSymbolsFor(nvfp4.codes, elementBytes * elementsPerSymbol, limits),
            nvfp4: { blockScales: scalesAt, reciprocalBits: f32Bits(reciprocalScale(nvfp4.globalScale)) },
          };
          const at = place(numel * elementBytes);
          outputs.push({ dtype, shape, ...at, byteLength: numel * elementBytes });
          direct.push(...chunksOf(stream, 0, symbols, at.arena, at.offset));
          break;
        }
        default:
          throw new EqzError('UnknownEncoding', `encoding ${entry.encoding} is not supported by the GPU decoder`);
      }
    } catch (error) {
      if (error instanceof EqzError) throw error.locate({ tensor: entry.name, offsetBase: request.payloadOffset });
      throw error;
    }
  });

  const chunks: ChunkWork[] = [];
  // Block scales first: the dequantizing dispatches that follow in the same pass read them. Then each
  // pipeline's direct chunks share dispatches, in destination order.
  const byPipeline = new Map<string, ChunkWork[]>();
  for (const work of direct) {
    const key = pipelineKey(work.stream.pipeline);
    const list = byPipeline.get(key);
    if (list) list.push(work);
    else byPipeline.set(key, [work]);
  }
  const blockScaleDispatches = cutDispatches(blockScaleWork, limits, chunks);
  const directDispatches = [...byPipeline.values()].flatMap((work) => cutDispatches(work, limits, chunks));
  const rounds: Round[] = [{ decodes: [...blockScaleDispatches, ...directDispatches], merges: [] }];

  // Planes of 2 or 4 bytes go through the scratch buffer in parts; a round holds as many parts as it fits.
  let scratchSize = 0;
  let scratchUsed = 0;
  let pending: ChunkWork[] = [];
  let merges: MergeDispatch[] = [];
  const closeRound = (): void => {
    if (merges.length) rounds.push({ decodes: cutDispatches(pending, limits, chunks), merges });
    pending = [];
    merges = [];
    scratchUsed = 0;
  };
  for (const { streams, output, request } of merged) {
    const { entry } = requests[request]!;
    const width = streams.length;
    const numel = streams[0]!.header.symbolCount;
    const granule = Math.max(...streams.map((stream) => stream.chunkSymbols));
    const partElements = alignDown(Math.floor(limits.scratchBytes / width / BINDING_ALIGNMENT) * BINDING_ALIGNMENT, granule);
    if (partElements === 0) {
      throw new EqzError('LimitExceeded', `${width} planes of ${granule}-symbol chunks do not fit the ${limits.scratchBytes}-byte scratch buffer`,
        { tensor: entry.name });
    }
    const outputBytes = DTYPE_SIZE[output.dtype];
    for (let first = 0; first < numel; first += partElements) {
      const elements = Math.min(partElements, numel - first);
      const planeStride = alignUp(elements, BINDING_ALIGNMENT);
      if (scratchUsed + width * planeStride > limits.scratchBytes) closeRound();
      streams.forEach((stream, plane) => pending.push(...chunksOf(stream, first, first + elements, -1, scratchUsed + plane * planeStride)));
      merges.push({
        sourceKind: mergeSourceKind(entry.dtype),
        sourceWidth: width,
        outputKind: mergeOutputKind(entry.dtype, output.dtype),
        elements,
        planeStride,
        scratchOffset: scratchUsed,
        scratchSize: width * planeStride,
        arena: output.arena,
        outputOffset: output.offset + first * outputBytes,
        outputSize: alignUp(elements * outputBytes, 4),
      });
      scratchUsed += width * planeStride;
      scratchSize = Math.max(scratchSize, scratchUsed);
    }
  }
  closeRound();
  return { arenas, outputs, rounds: rounds.filter((r) => r.decodes.length + r.merges.length > 0), scratchSize, chunks };
}
