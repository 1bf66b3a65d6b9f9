// rANS decoding of coded streams (spec/eqz.md §"Coded stream") straight into tensor outputs: symbols as bytes,
// or FP8 E4M3 / INT8 codes dequantized with per-row scales to F32, BF16 or F16 (spec §"2 fp8-e4m3 and 3 int8").
//
// READ ME FIRST
// - One invocation per lane: a chunk's 32 lanes are 32 invocations, and a workgroup decodes up to
//   CHUNKS_PER_GROUP chunks of one stream, sharing that stream's 4096-slot decode table.
// - Row by row, every lane decodes one symbol; the lanes whose state fell below 2^16 then take the next words
//   of the chunk's single word stream in lane order. A lane's word is therefore at (words consumed before this
//   row) + (how many lower lanes need one in this row): an exclusive prefix count over 32 flags per row.
//   WIDE (subgroups of ≥ 32 invocations): the count is a ballot, every chunk lives in one subgroup and the row
//   loop needs no barrier. Otherwise each row's flags meet in a workgroup-memory word (atomicOr; with
//   subgroups one per subgroup), between two workgroup barriers.
// - Outputs are written as whole u32 words: the elements a word holds come from 4 (bytes), 2 (16-bit) or
//   1 (F32) consecutive lanes of one row, so lanes first collect ELEMENTS_PER_WORD rows, then swap them
//   (subgroup shuffles, or a workgroup-memory stage) and each writes one word: 32 coalesced words per group.
// - Nothing here trusts the stream: table slots are masked, word reads are clamped to the chunk's words, and
//   a chunk that needs more words than it has, ends with words left or a state ≠ 2^16, starts from a state
//   below 2^16, or decodes an E4M3 NaN code reports (chunk id, reason) to `status` — the host turns that into
//   a CorruptStream error. Every index into `output` comes from host-built descriptors.
//
// Variants are chosen by the host: `// #if NAME` blocks (SUBGROUPS, WIDE, TABLE_IN_WORKGROUP) are kept or
// dropped before compilation (src/gpu/decode-shaders.ts), everything else by override constants.

// #if SUBGROUPS
enable subgroups;
diagnostic(off, subgroup_uniformity);
// #endif

const LANES = 32u;
/** States live in [2^16, 2^32); one 16-bit word read restores a state below 2^16 (spec §"Coded stream"). */
const STATE_LOW = 0x10000u;
const SLOT_MASK = 0xFFFu;
const TABLE_SLOTS = 4096u;
/** Workgroup arrays have constant sizes (override-sized ones are not portable yet). */
const MAX_CHUNKS_PER_GROUP = 8u;

const FORMAT_BYTES = 0u;
const FORMAT_F32 = 1u;
const FORMAT_BF16 = 2u;
const FORMAT_F16 = 3u;

const VALUES_SYMBOLS = 0u;
const VALUES_E4M3 = 1u;
const VALUES_INT8 = 2u;

const MODE_RANS = 0u;
const MODE_STORED = 1u;
const MODE_CONSTANT = 2u;

// Failure reasons, reported as chunk id × 8 + reason (the smallest such value wins, see reportFailure).
const FAILURE_STATE_RANGE = 1u;
const FAILURE_WORDS_EXHAUSTED = 2u;
const FAILURE_END_STATE = 3u;
const FAILURE_INVALID_CODE = 4u;

// status[0]: ~(smallest chunk id × 8 + reason), 0 if none; status[1]: nonzero when the subgroups were not laid out
// as WIDE needs.
const STATUS_FAILURE = 0u;
const STATUS_LAYOUT = 1u;

// Header of `data` (u32 indices).
const HEADER_GROUP_COUNT = 0u;
const HEADER_DISPATCH_WIDTH = 1u;
const HEADER_GROUP_TABLE = 2u;
const HEADER_CHUNK_TABLE = 3u;
const HEADER_STREAM_TABLE = 4u;

// Descriptor sizes in u32 and field offsets (src/gpu/decode-plan.ts writes them).
const GROUP_WORDS = 4u;
const GROUP_FIRST_CHUNK = 0u;
const GROUP_CHUNK_COUNT = 1u;
const GROUP_STREAM = 2u;

const CHUNK_WORDS = 8u;
const CHUNK_INPUT = 0u;        // rANS: u32 index of the 32 states; stored: byte index of the first symbol
const CHUNK_WORD_BASE = 1u;    // u16 index of the chunk's first word
const CHUNK_WORD_COUNT = 2u;
const CHUNK_SYMBOLS = 3u;
const CHUNK_OUTPUT = 4u;       // u32 index in `output` of the chunk's first output word
const CHUNK_FIRST_SYMBOL = 5u; // index of the chunk's first symbol in its stream (finds the tensor row)
const CHUNK_ID = 6u;

const STREAM_WORDS = 8u;
const STREAM_MODE = 0u;
const STREAM_TABLE = 1u;       // rANS: u32 index of the decode table; constant: the symbol
const STREAM_SCALES = 2u;      // u32 index of the scale of tensor row 0 (may wrap: only rows in range are read)
const STREAM_ROW_LENGTH = 3u;
const STREAM_CHECK_CODES = 4u; // 1: E4M3 NaN codes (0x7F, 0xFF) have slots in the table and must be caught
const STREAM_SCALE_LIMIT = 5u; // u32 index of the last scale the batch holds for this stream

override OUTPUT_FORMAT: u32 = FORMAT_BYTES;
override VALUE_KIND: u32 = VALUES_SYMBOLS;
/** At most MAX_CHUNKS_PER_GROUP (workgroup arrays are sized for that many). */
override CHUNKS_PER_GROUP: u32 = MAX_CHUNKS_PER_GROUP;
override WORKGROUP_SIZE: u32 = CHUNKS_PER_GROUP * LANES;
/** The adapter's fixed subgroup size when it has one (lets the compiler fold the ballot word), else 0. */
override SUBGROUP_SIZE: u32 = 0u;

/** Elements per output word, which is also the rows a lane collects before a flush. */
override ELEMENTS_PER_WORD: u32 = select(select(2u, 1u, OUTPUT_FORMAT == FORMAT_F32), 4u, OUTPUT_FORMAT == FORMAT_BYTES);
override ELEMENT_BITS: u32 = 32u / ELEMENTS_PER_WORD;
override ELEMENT_MASK: u32 = 0xFFFFFFFFu >> (32u - ELEMENT_BITS);

@group(0) @binding(0) var<storage, read> data: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;
@group(0) @binding(2) var<storage, read_write> status: array<atomic<u32>>;

// #if TABLE_IN_WORKGROUP
var<workgroup> table: array<u32, TABLE_SLOTS>;
// #endif
/** f32 bits of each code's value (E4M3 or INT8), for the dequantizing formats. */
var<workgroup> codeValues: array<u32, 256>;
// #if SUBGROUPS
var<workgroup> subgroupCounter: atomic<u32>;
// #endif
// #if !WIDE
/** Per chunk, two words of "needs a word" flags (bit = lane), used by alternate rows. */
var<workgroup> flags: array<atomic<u32>, MAX_CHUNKS_PER_GROUP * 2u>;
/** Per chunk, the elements of the rows collected for the next flush: [row in group][lane]. */
var<workgroup> stage: array<u32, MAX_CHUNKS_PER_GROUP * LANES * 4u>;
// #endif

/** The decode-table entry of `slot`: frequency << 20 | (slot − cum[symbol]) << 8 | symbol. */
fn tableEntry(tableBase: u32, slot: u32) -> u32 {
  // #if TABLE_IN_WORKGROUP
  return table[slot];
  // #else
  return data[tableBase + slot];
  // #endif
}

/** One rANS decode step of state `x` through `entry`: x' = freq · (x >> 12) + (slot − cum). */
fn advanceState(x: u32, entry: u32) -> u32 {
  return (entry >> 20u) * (x >> 12u) + ((entry >> 8u) & SLOT_MASK);
}

/** The 16-bit word at u16 index `index` of `data`, reading no further than u32 index `lastPair`. */
fn wordAt(index: u32, lastPair: u32) -> u32 {
  let pair = data[min(index >> 1u, lastPair)];
  return (pair >> ((index & 1u) << 4u)) & 0xFFFFu;
}

fn storedSymbol(byteIndex: u32) -> u32 {
  return (data[byteIndex >> 2u] >> ((byteIndex & 3u) << 3u)) & 0xFFu;
}

// #include decode-float.wgsl

/** f32 bits of the value of code `code` (exact: every E4M3 and INT8 value is an f32). */
fn codeValueBits(code: u32) -> u32 {
  if (VALUE_KIND == VALUES_INT8) {
    return bitcast<u32>(f32(bitcast<i32>(code << 24u) >> 24u));
  }
  let magnitude = code & 0x7Fu;
  let sign = (code & 0x80u) << 24u;
  if (magnitude < 8u) {
    // Subnormal: m/8 × 2^-6.
    return sign | bitcast<u32>(f32(magnitude) * 0.001953125);
  }
  // Normal: exponent field e (bias 7) becomes e + 120 (bias 127); the 3 mantissa bits move to the top.
  return sign | ((magnitude << 20u) + (120u << 23u));
}

/** The output element of `symbol` in tensor row with scale `scale`: y = RNE_T(f32(value) × f32(scale)). */
fn outputElement(symbol: u32, scale: f32) -> u32 {
  if (OUTPUT_FORMAT == FORMAT_BYTES) {
    return symbol;
  }
  // WGSL's f32 multiply is correctly rounded; the spec keeps every product normal, so no flushing matters.
  let product = bitcast<u32>(bitcast<f32>(codeValues[symbol]) * scale);
  if (OUTPUT_FORMAT == FORMAT_F32) {
    return product;
  }
  if (OUTPUT_FORMAT == FORMAT_BF16) {
    return bf16FromF32(product);
  }
  return f16FromF32(product);
}

/** Where a lane's next element lies in its tensor: row, position in the row, and that row's scale. */
struct RowCursor {
  row: u32,
  column: u32,
  scale: f32,
}

/** Lanes past a stream's end move their cursor past its last row: reads stop at the last scale. */
fn rowScale(stream: Stream, row: u32) -> f32 {
  return bitcast<f32>(data[min(stream.scales + row, stream.scaleLimit)]);
}

/** The cursor of element `element` of a stream whose tensor rows hold `rowLength` elements. */
fn startCursor(element: u32, stream: Stream) -> RowCursor {
  if (OUTPUT_FORMAT == FORMAT_BYTES) {
    return RowCursor(0u, 0u, 1.0);
  }
  let row = element / stream.rowLength;
  return RowCursor(row, element - row * stream.rowLength, rowScale(stream, row));
}

/** Moves a lane's cursor one chunk row (32 elements) on; rows shorter than 32 elements are crossed one by one. */
fn advanceCursor(cursor: ptr<function, RowCursor>, stream: Stream) {
  if (OUTPUT_FORMAT == FORMAT_BYTES) {
    return;
  }
  (*cursor).column += LANES;
  if ((*cursor).column >= stream.rowLength) {
    loop {
      (*cursor).column -= stream.rowLength;
      (*cursor).row += 1u;
      if ((*cursor).column < stream.rowLength) {
        break;
      }
    }
    (*cursor).scale = rowScale(stream, (*cursor).row);
  }
}

/** Whether an E4M3 code is a NaN (0x7F, 0xFF), which the spec makes invalid. */
fn invalidCode(symbol: u32) -> bool {
  return (symbol & 0x7Fu) == 0x7Fu;
}

/** Keeps the smallest chunk id × 8 + reason, stored inverted so that the zeroed status means "no failure". */
fn reportFailure(chunkId: u32, reason: u32) {
  atomicMax(&status[STATUS_FAILURE], ~(chunkId * 8u + reason));
}

/** Words of output a chunk of `symbols` elements fills from group `group` (of 32 words) on, at most 32. */
fn wordsInGroup(symbols: u32, group: u32) -> u32 {
  let first = group * LANES * ELEMENTS_PER_WORD;
  let left = select(0u, symbols - first, symbols > first);
  return min(LANES, (left + ELEMENTS_PER_WORD - 1u) / ELEMENTS_PER_WORD);
}

/** Shift that places a lane's element of the k-th row of a group in its `collected` word. */
fn collectShift(k: u32) -> u32 {
  return k * ELEMENT_BITS;
}

struct Chunk {
  input: u32,
  wordBase: u32,
  wordCount: u32,
  symbols: u32,
  output: u32,
  firstSymbol: u32,
  id: u32,
}

fn chunkAt(index: u32) -> Chunk {
  let at = data[HEADER_CHUNK_TABLE] + index * CHUNK_WORDS;
  return Chunk(data[at + CHUNK_INPUT], data[at + CHUNK_WORD_BASE], data[at + CHUNK_WORD_COUNT], data[at + CHUNK_SYMBOLS],
    data[at + CHUNK_OUTPUT], data[at + CHUNK_FIRST_SYMBOL], data[at + CHUNK_ID]);
}

struct Stream {
  mode: u32,
  table: u32,
  scales: u32,
  rowLength: u32,
  checkCodes: bool,
  scaleLimit: u32,
}

fn streamAt(index: u32) -> Stream {
  let at = data[HEADER_STREAM_TABLE] + index * STREAM_WORDS;
  return Stream(data[at + STREAM_MODE], data[at + STREAM_TABLE], data[at + STREAM_SCALES], data[at + STREAM_ROW_LENGTH],
    data[at + STREAM_CHECK_CODES] != 0u, data[at + STREAM_SCALE_LIMIT]);
}

/** Fills the workgroup's tables: the stream's decode table (when kept in workgroup memory) and the code values. */
fn loadTables(stream: Stream, local: u32) {
  // #if TABLE_IN_WORKGROUP
  if (stream.mode == MODE_RANS) {
    for (var slot = local; slot < TABLE_SLOTS; slot += WORKGROUP_SIZE) {
      table[slot] = data[stream.table + slot];
    }
  }
  // #endif
  if (OUTPUT_FORMAT != FORMAT_BYTES) {
    for (var code = local; code < 256u; code += WORKGROUP_SIZE) {
      codeValues[code] = codeValueBits(code);
    }
  }
}

// #if WIDE
/**
 * Output word `lane` of a group of ELEMENTS_PER_WORD rows, gathered from the `collected` words of the lanes of
 * this chunk (which start at subgroup invocation `laneBase`).
 */
fn gatherWord(collected: u32, lane: u32, laneBase: u32) -> u32 {
  if (ELEMENTS_PER_WORD == 1u) {
    return collected;
  }
  let firstElement = lane * ELEMENTS_PER_WORD;
  let rowShift = collectShift(firstElement / LANES);
  let column = firstElement % LANES;
  var word = 0u;
  for (var i = 0u; i < ELEMENTS_PER_WORD; i += 1u) {
    let element = (subgroupShuffle(collected, laneBase + column + i) >> rowShift) & ELEMENT_MASK;
    word |= element << (i * ELEMENT_BITS);
  }
  return word;
}

/** Decodes the rANS chunk of this lane (all 32 lanes of a chunk are in one subgroup; no barriers). */
fn decodeRansWide(chunk: Chunk, stream: Stream, lane: u32, laneBase: u32, ballotWord: u32, rows: u32) {
  // A slot without a chunk (symbols 0) still takes part in the subgroup's ballots and shuffles.
  var x = STATE_LOW;
  if (chunk.symbols > 0u) {
    x = data[chunk.input + lane];
  }
  var failure = select(0u, FAILURE_STATE_RANGE, x < STATE_LOW);
  var invalid = false;
  let lowerLanes = (1u << lane) - 1u;
  let lastPair = (chunk.wordBase + max(chunk.wordCount, 1u) - 1u) >> 1u;
  var cursor = startCursor(chunk.firstSymbol + lane, stream);
  var next = chunk.wordBase;
  let groups = (rows + ELEMENTS_PER_WORD - 1u) / ELEMENTS_PER_WORD;
  for (var group = 0u; group < groups; group += 1u) {
    var collected = 0u;
    for (var k = 0u; k < ELEMENTS_PER_WORD; k += 1u) {
      let row = group * ELEMENTS_PER_WORD + k;
      let live = row * LANES + lane < chunk.symbols;
      let entry = tableEntry(stream.table, x & SLOT_MASK);
      var y = advanceState(x, entry);
      let needsWord = live && y < STATE_LOW;
      let flags = subgroupBallot(needsWord)[ballotWord];
      if (needsWord) {
        y = (y << 16u) | wordAt(next + countOneBits(flags & lowerLanes), lastPair);
      }
      next += countOneBits(flags);
      let symbol = entry & 0xFFu;
      if (live) {
        x = y;
        invalid = invalid || (stream.checkCodes && invalidCode(symbol));
        collected |= outputElement(symbol, cursor.scale) << collectShift(k);
      }
      advanceCursor(&cursor, stream);
    }
    let word = gatherWord(collected, lane, laneBase);
    if (lane < wordsInGroup(chunk.symbols, group)) {
      output[chunk.output + group * LANES + lane] = word;
    }
  }
  // A start state out of range is what the CPU decoder reports first; it checks before decoding.
  let consumed = next - chunk.wordBase;
  if (failure == 0u && consumed > chunk.wordCount) {
    failure = FAILURE_WORDS_EXHAUSTED;
  } else if (failure == 0u && (consumed != chunk.wordCount || x != STATE_LOW)) {
    failure = FAILURE_END_STATE;
  }
  if (invalid) {
    failure = FAILURE_INVALID_CODE;
  }
  if (failure != 0u && chunk.symbols > 0u) {
    reportFailure(chunk.id, failure);
  }
}

/** Writes the symbols of a stored or one-symbol chunk, as decodeRansWide would have. */
fn copySymbolsWide(chunk: Chunk, stream: Stream, lane: u32, laneBase: u32, rows: u32) {
  var cursor = startCursor(chunk.firstSymbol + lane, stream);
  var invalid = false;
  let groups = (rows + ELEMENTS_PER_WORD - 1u) / ELEMENTS_PER_WORD;
  for (var group = 0u; group < groups; group += 1u) {
    var collected = 0u;
    for (var k = 0u; k < ELEMENTS_PER_WORD; k += 1u) {
      let index = (group * ELEMENTS_PER_WORD + k) * LANES + lane;
      if (index < chunk.symbols) {
        let symbol = select(stream.table, storedSymbol(chunk.input + index), stream.mode == MODE_STORED);
        invalid = invalid || (stream.checkCodes && invalidCode(symbol));
        collected |= outputElement(symbol, cursor.scale) << collectShift(k);
      }
      advanceCursor(&cursor, stream);
    }
    let word = gatherWord(collected, lane, laneBase);
    if (lane < wordsInGroup(chunk.symbols, group)) {
      output[chunk.output + group * LANES + lane] = word;
    }
  }
  if (invalid) {
    reportFailure(chunk.id, FAILURE_INVALID_CODE);
  }
}
// #endif

// #if !WIDE
/** Stages this lane's element of row k of the current group. */
fn stageElement(slot: u32, k: u32, lane: u32, element: u32) {
  stage[(slot * ELEMENTS_PER_WORD + k) * LANES + lane] = element;
}

/** Output word `lane` of the staged group of chunk slot `slot`. */
fn stagedWord(slot: u32, lane: u32) -> u32 {
  let firstElement = lane * ELEMENTS_PER_WORD;
  let base = slot * ELEMENTS_PER_WORD * LANES + firstElement;
  var word = 0u;
  for (var i = 0u; i < ELEMENTS_PER_WORD; i += 1u) {
    word |= (stage[base + i] & ELEMENT_MASK) << (i * ELEMENT_BITS);
  }
  return word;
}

/**
 * Decodes one group's chunks in lockstep: `rows` is the same for the whole workgroup (barriers inside), lanes of
 * chunks that are shorter, or of slots with no chunk, take part without decoding.
 */
fn decodeShared(chunk: Chunk, stream: Stream, slot: u32, lane: u32, laneBase: u32, subgroupLane: u32, rows: u32) {
  let rans = stream.mode == MODE_RANS;
  var x = STATE_LOW;
  if (rans && chunk.symbols > 0u) {
    x = data[chunk.input + lane];
  }
  var failure = select(0u, FAILURE_STATE_RANGE, x < STATE_LOW);
  var invalid = false;
  let lowerLanes = (1u << lane) - 1u;
  let lastPair = (chunk.wordBase + max(chunk.wordCount, 1u) - 1u) >> 1u;
  var cursor = startCursor(chunk.firstSymbol + lane, stream);
  var next = chunk.wordBase;
  let groups = (rows + ELEMENTS_PER_WORD - 1u) / ELEMENTS_PER_WORD;
  for (var group = 0u; group < groups; group += 1u) {
    for (var k = 0u; k < ELEMENTS_PER_WORD; k += 1u) {
      let row = group * ELEMENTS_PER_WORD + k;
      let index = row * LANES + lane;
      let live = index < chunk.symbols;
      var symbol = stream.table;
      var y = x;
      if (rans) {
        let entry = tableEntry(stream.table, x & SLOT_MASK);
        y = advanceState(x, entry);
        symbol = entry & 0xFFu;
      } else if (stream.mode == MODE_STORED && live) {
        symbol = storedSymbol(chunk.input + index);
      }
      let needsWord = rans && live && y < STATE_LOW;
      let flagWord = slot * 2u + (row & 1u);
      // #if SUBGROUPS
      let subgroupFlags = subgroupBallot(needsWord).x;
      if (subgroupLane == 0u && subgroupFlags != 0u) {
        atomicOr(&flags[flagWord], subgroupFlags << laneBase);
      }
      // #else
      if (needsWord) {
        atomicOr(&flags[flagWord], 1u << lane);
      }
      // #endif
      stageElement(slot, k, lane, select(0u, outputElement(symbol, cursor.scale), live));
      workgroupBarrier();
      let rowFlags = atomicLoad(&flags[flagWord]);
      if (lane == 0u) {
        // The other word was last read in the previous row, before this row's first barrier.
        atomicStore(&flags[slot * 2u + ((row + 1u) & 1u)], 0u);
      }
      if (needsWord) {
        y = (y << 16u) | wordAt(next + countOneBits(rowFlags & lowerLanes), lastPair);
      }
      next += countOneBits(rowFlags);
      if (live) {
        x = y;
        invalid = invalid || (stream.checkCodes && invalidCode(symbol));
      }
      advanceCursor(&cursor, stream);
      if (k + 1u == ELEMENTS_PER_WORD || row + 1u == rows) {
        let word = stagedWord(slot, lane);
        if (lane < wordsInGroup(chunk.symbols, group)) {
          output[chunk.output + group * LANES + lane] = word;
        }
      }
      workgroupBarrier();
    }
  }
  if (rans && chunk.symbols > 0u) {
    let consumed = next - chunk.wordBase;
    if (failure == 0u && consumed > chunk.wordCount) {
      failure = FAILURE_WORDS_EXHAUSTED;
    } else if (failure == 0u && (consumed != chunk.wordCount || x != STATE_LOW)) {
      failure = FAILURE_END_STATE;
    }
  }
  if (invalid) {
    failure = FAILURE_INVALID_CODE;
  }
  if (failure != 0u) {
    reportFailure(chunk.id, failure);
  }
}
// #endif

@compute @workgroup_size(WORKGROUP_SIZE)
fn decode(
  @builtin(workgroup_id) workgroup: vec3<u32>,
  @builtin(local_invocation_index) local: u32,
  // #if SUBGROUPS
  @builtin(subgroup_invocation_id) subgroupLane: u32,
  @builtin(subgroup_size) subgroupSize: u32,
  // #endif
) {
  let groupIndex = workgroup.y * data[HEADER_DISPATCH_WIDTH] + workgroup.x;
  if (groupIndex >= data[HEADER_GROUP_COUNT]) {
    return;
  }
  let groupAt = data[HEADER_GROUP_TABLE] + groupIndex * GROUP_WORDS;
  let firstChunk = data[groupAt + GROUP_FIRST_CHUNK];
  let chunkCount = data[groupAt + GROUP_CHUNK_COUNT];
  let stream = streamAt(data[groupAt + GROUP_STREAM]);
  loadTables(stream, local);

  // Lanes are numbered by subgroup, so that each subgroup covers consecutive lanes of one chunk whatever order
  // the implementation forms subgroups in: subgroup s takes invocation numbers s·size .. s·size + size − 1.
  // #if SUBGROUPS
  var subgroupIndex = 0u;
  if (subgroupElect()) {
    subgroupIndex = atomicAdd(&subgroupCounter, 1u);
  }
  subgroupIndex = subgroupBroadcastFirst(subgroupIndex);
  let invocation = subgroupIndex * subgroupSize + subgroupLane;
  // #else
  let invocation = local;
  let subgroupLane = 0u;
  // #endif
  workgroupBarrier();
  let slot = invocation / LANES;
  let lane = invocation % LANES;

  // #if WIDE
  // Every chunk must lie inside one full subgroup: sizes 32, 64 or 128, no partial subgroups.
  if (subgroupSize % LANES != 0u || subgroupSize > 128u || subgroupAdd(1u) != subgroupSize
      || (SUBGROUP_SIZE != 0u && subgroupSize != SUBGROUP_SIZE)) {
    if (local == 0u) {
      atomicMax(&status[STATUS_LAYOUT], 1u);
    }
    return;
  }
  let ballotWord = select((subgroupLane / LANES) % 4u, 0u, SUBGROUP_SIZE == LANES);
  let laneBase = subgroupLane - lane;
  let hasChunk = slot < chunkCount;
  let chunk = chunkAt(firstChunk + min(slot, chunkCount - 1u));
  let symbols = select(0u, chunk.symbols, hasChunk);
  // Chunks sharing a subgroup (subgroups of 64 or 128) run the same number of rows.
  let rows = subgroupMax((symbols + LANES - 1u) / LANES);
  if (stream.mode == MODE_RANS) {
    decodeRansWide(Chunk(chunk.input, chunk.wordBase, chunk.wordCount, symbols, chunk.output, chunk.firstSymbol, chunk.id),
      stream, lane, laneBase, ballotWord, rows);
  } else {
    copySymbolsWide(Chunk(chunk.input, chunk.wordBase, chunk.wordCount, symbols, chunk.output, chunk.firstSymbol, chunk.id),
      stream, lane, laneBase, rows);
  }
  // #else
  // #if SUBGROUPS
  if (LANES % subgroupSize != 0u) {
    if (local == 0u) {
      atomicMax(&status[STATUS_LAYOUT], 1u);
    }
    return;
  }
  // #endif
  var rows = 0u;
  for (var i = 0u; i < chunkCount; i += 1u) {
    rows = max(rows, (chunkAt(firstChunk + i).symbols + LANES - 1u) / LANES);
  }
  let hasChunk = slot < chunkCount;
  var chunk = chunkAt(firstChunk + min(slot, chunkCount - 1u));
  if (!hasChunk) {
    chunk.symbols = 0u;
  }
  decodeShared(chunk, stream, slot, lane, lane - subgroupLane, subgroupLane, rows);
  // #endif
}
