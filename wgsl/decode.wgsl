// rANS decoding of coded streams (spec/eqz.md §6) straight into tensor outputs: symbols as they are (bytes, or
// nibbles packed two to a byte), FP8 E4M3 / INT8 codes dequantized with per-row scales to F32, BF16 or F16
// (spec §7.5), or NVFP4's E2M1 codes dequantized with their block scales (spec §7.6, decode-nvfp4.wgsl).
//
// READ ME FIRST
// - One invocation per lane: a chunk's 32 lanes are 32 invocations, and a workgroup decodes up to
//   CHUNKS_PER_GROUP chunks of one stream, sharing that stream's 4096-slot decode table.
// - Row by row, every lane decodes one symbol; the lanes whose state fell below 2^16 then take the next words
//   of the chunk's single word stream in lane order. A lane's word is therefore at (words consumed before this
//   row) + (how many lower lanes need one in this row): an exclusive prefix count over a 32-bit ballot. Every
//   lane loads the word at that place whether or not it needs one, a chunk's row reading at most 32 consecutive
//   words: through the cache, which keeps the stream's current lines (and is warmed a line ahead, see decodeRans).
// - Outputs are written as whole u32 words: the symbols a word holds come from 8 (nibbles), 4 (bytes), 2 (16-bit)
//   or 1 (32-bit) consecutive lanes of one row, so lanes collect SYMBOLS_PER_WORD rows, then gather: 32 coalesced
//   words per group of rows. A symbol of 64 output bits (an NVFP4 pair of elements as F32) fills two words alone.
// - The decoding is written once, against two chunk-wide operations (ballot, shuffle by lane xor). WIDE
//   implements them with subgroup operations (subgroups of 32, 64 or 128: a chunk is 32 consecutive invocations
//   of one subgroup, no barriers). Otherwise they go through workgroup memory, one barrier each (with SUBGROUPS
//   the ballot is first formed per subgroup, and shuffles within a quad are quad operations), so the same
//   decoding runs on any adapter -- and tests on software adapters check the logic the fast path runs.
// - Nothing here trusts the stream: table slots are masked; a lane that runs past its chunk's words reads other
//   words of `data` (the device bounds-checks every access: GpuDecoder takes no device without), and that chunk
//   then fails its end check. A chunk that needs more words than it has, ends with words left or a state other
//   than 2^16, starts from a state below 2^16, or decodes an E4M3 NaN code reports (chunk id, reason) to
//   `status`; the host turns that into an EqzError. Every index into `output` comes from host-built descriptors.
//
// Variants are chosen by the host: `// #if NAME` blocks (SUBGROUPS, WIDE, TABLE_IN_WORKGROUP, NVFP4) are kept or
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
/** How far ahead of its next word a chunk's word stream is prefetched, in u32 pairs (see decodeRans). */
const PREFETCH_PAIRS = 64u;
/** Pairs between the lanes' prefetch loads: 32 lanes touch 8 lines of 128 bytes, two iterations' words at 4 bits. */
const PREFETCH_STRIDE = 8u;

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

// status[0]: ~(smallest chunk id × 8 + reason) of the chunks that do not decode exactly, 0 if none; status[1]:
// nonzero when the subgroups were not laid out as WIDE needs; status[2]: as status[0], of the chunks that decode
// an E4M3 NaN code (kept apart: the CPU decoder checks codes only once their whole stream has decoded).
const STATUS_FAILURE = 0u;
const STATUS_LAYOUT = 1u;
const STATUS_INVALID_CODE = 2u;

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
const STREAM_CHECK_CODES = 4u; // 1: E4M3 NaN codes (0x7F, 0xFF) may decode and must be caught
const STREAM_SCALE_LIMIT = 5u; // u32 index of the last scale the batch holds for this stream
const STREAM_VALUES = 6u;      // VALUES_*: what the codes mean when dequantized
const STREAM_RECIPROCAL = 7u;  // NVFP4: f32 bits of m = RNE_f32(1 / global_scale), computed on the host

override OUTPUT_FORMAT: u32 = FORMAT_BYTES;
/** 1 to 32 (1024 invocations); the workgroup arrays below are sized for it. */
override CHUNKS_PER_GROUP: u32 = 8u;
override WORKGROUP_SIZE: u32 = CHUNKS_PER_GROUP * LANES;
/** WIDE: the adapter's subgroup size when it is fixed (lets the compiler fold the chunk's ballot word), else 0. */
override SUBGROUP_SIZE: u32 = 0u;
/** Each chunk is a whole subgroup (WIDE at size 32): its ballot is the subgroup's, and no other slot takes part in it. */
override CHUNK_IS_SUBGROUP: bool = SUBGROUP_SIZE == LANES;

/** Bits of the stream's symbols: 8, or 4 (nibbles: stored two to a byte, written as nibbles by FORMAT_BYTES). */
override SYMBOL_BITS: u32 = 8u;
/** Output elements per symbol: 1, or 2 for NVFP4 codes coded as packed bytes (two E2M1 codes a symbol). */
override SYMBOL_ELEMENTS: u32 = 1u;

/** Bits of one output element: the symbol itself (FORMAT_BYTES) or a float. */
override ELEMENT_BITS: u32 = select(select(16u, 32u, OUTPUT_FORMAT == FORMAT_F32), SYMBOL_BITS, OUTPUT_FORMAT == FORMAT_BYTES);
/** Output bits of one symbol: 4 to 64. */
override SYMBOL_OUTPUT_BITS: u32 = ELEMENT_BITS * SYMBOL_ELEMENTS;
/** Symbols per output word, which is also the rows a lane collects before a gather (1 when a symbol fills words). */
override SYMBOLS_PER_WORD: u32 = max(32u / SYMBOL_OUTPUT_BITS, 1u);
/** Output words per symbol: 2 for 64-bit symbols, else 1. */
override WORDS_PER_SYMBOL: u32 = max(SYMBOL_OUTPUT_BITS / 32u, 1u);
override SYMBOL_MASK: u32 = (1u << SYMBOL_BITS) - 1u;

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
/** Ballots through workgroup memory: three words per chunk, used in turn (see chunkBallot). */
var<workgroup> ballots: array<atomic<u32>, CHUNKS_PER_GROUP * 3u>;
/** Shuffles through workgroup memory: two buffers of a word per lane, used in turn (see shuffleXorBeyondQuad). */
var<workgroup> exchange: array<u32, CHUNKS_PER_GROUP * LANES * 2u>;
/** Which ballot word / exchange buffer comes next: the same sequence in every invocation. */
var<private> ballotTurn: u32;
var<private> exchangeTurn: u32;
// #endif

/** The decode-table entry of `slot`: frequency << 20 | symbol << 12 | (slot − cum[symbol]). */
fn tableEntry(tableBase: u32, slot: u32) -> u32 {
  // #if TABLE_IN_WORKGROUP
  return table[slot];
  // #else
  return data[tableBase + slot];
  // #endif
}

/** One rANS decode step of state `x` through `entry`: x' = freq · (x >> 12) + (slot − cum). */
fn advanceState(x: u32, entry: u32) -> u32 {
  return (entry >> 20u) * (x >> 12u) + (entry & SLOT_MASK);
}

fn symbolOf(entry: u32) -> u32 {
  return (entry >> 12u) & 0xFFu;
}

/** Symbol `index` of a stored chunk whose first symbol is at byte `firstByte` of `data` (nibbles: low one first). */
fn storedSymbol(firstByte: u32, index: u32) -> u32 {
  let bit = ((firstByte & 3u) << 3u) + index * SYMBOL_BITS;
  return (data[(firstByte >> 2u) + (bit >> 5u)] >> (bit & 31u)) & SYMBOL_MASK;
}

// #include decode-float.wgsl

/** f32 bits of the value of code `code` of kind `values` (exact: every E4M3 and INT8 value is an f32). */
fn codeValueBits(code: u32, values: u32) -> u32 {
  if (values == VALUES_INT8) {
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

/** RNE_T of a dequantized product's f32 bits, T the output format (F32, BF16 or F16). */
fn outputBits(product: u32) -> u32 {
  if (OUTPUT_FORMAT == FORMAT_F32) {
    return product;
  }
  if (OUTPUT_FORMAT == FORMAT_BF16) {
    // Products of valid codes are finite (a NaN code fails the chunk anyway).
    return bf16FromFiniteF32(product);
  }
  return f16FromF32(product);
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
  values: u32,
  reciprocal: f32,
}

fn streamAt(index: u32) -> Stream {
  let at = data[HEADER_STREAM_TABLE] + index * STREAM_WORDS;
  return Stream(data[at + STREAM_MODE], data[at + STREAM_TABLE], data[at + STREAM_SCALES], data[at + STREAM_ROW_LENGTH],
    data[at + STREAM_CHECK_CODES] != 0u, data[at + STREAM_SCALE_LIMIT], data[at + STREAM_VALUES],
    bitcast<f32>(data[at + STREAM_RECIPROCAL]));
}

// What a lane needs to know about its next symbol's place in the tensor to dequantize it (a Cursor), and the
// symbol's output bits: NVFP4 codes (block scales, decode-nvfp4.wgsl), or codes with per-row scales (here).
// #if NVFP4
// #include decode-nvfp4.wgsl
// #else
/** Where a lane's next element lies in its tensor: row, position in the row, and that row's scale. */
struct Cursor {
  row: u32,
  column: u32,
  scale: f32,
}

/** Lanes past a stream's end move their cursor past its last row: reads stop at the last scale. */
fn rowScale(stream: Stream, row: u32) -> f32 {
  return bitcast<f32>(data[min(stream.scales + row, stream.scaleLimit)]);
}

/** The cursor of element `element` of a stream. */
fn startCursor(element: u32, stream: Stream) -> Cursor {
  if (OUTPUT_FORMAT == FORMAT_BYTES) {
    return Cursor(0u, 0u, 1.0);
  }
  let row = element / stream.rowLength;
  return Cursor(row, element - row * stream.rowLength, rowScale(stream, row));
}

/** Moves a lane's cursor one chunk row (32 elements) on; rows shorter than 32 elements are crossed one by one. */
fn advanceCursor(cursor: ptr<function, Cursor>, stream: Stream) {
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

/**
 * The output bits of `symbol` at `cursor` (in .x; .y is for symbols of 64 bits, which only NVFP4 has): the symbol
 * itself, or y = RNE_T(f32(value) × f32(row scale)).
 */
fn symbolOutput(symbol: u32, cursor: Cursor, stream: Stream) -> vec2<u32> {
  if (OUTPUT_FORMAT == FORMAT_BYTES) {
    return vec2<u32>(symbol, 0u);
  }
  // WGSL's f32 multiply is correctly rounded; the spec keeps every product normal, so no flushing matters.
  return vec2<u32>(outputBits(bitcast<u32>(bitcast<f32>(codeValues[symbol]) * cursor.scale)), 0u);
}
// #endif

/**
 * Whether any of the up to four 8-bit codes packed in `symbols` (zero bytes where none) is an E4M3 NaN (0x7F,
 * 0xFF), which the spec makes invalid: only a byte whose low 7 bits are all set carries into its top bit.
 */
fn invalidCodes(symbols: u32) -> bool {
  return (((symbols & 0x7F7F7F7Fu) + 0x01010101u) & 0x80808080u) != 0u;
}

/** Keeps the smallest chunk id × 8 + reason, stored inverted so that the zeroed status means "no failure". */
fn reportFailure(chunkId: u32, reason: u32) {
  atomicMax(&status[select(STATUS_FAILURE, STATUS_INVALID_CODE, reason == FAILURE_INVALID_CODE)], ~(chunkId * 8u + reason));
}

/** Words of output a chunk of `symbols` symbols fills from group `group` on, at most the group's 32 · WORDS_PER_SYMBOL. */
fn wordsInGroup(symbols: u32, group: u32) -> u32 {
  let first = group * LANES * SYMBOLS_PER_WORD;
  let left = select(0u, symbols - first, symbols > first);
  return min(LANES, (left + SYMBOLS_PER_WORD - 1u) / SYMBOLS_PER_WORD) * WORDS_PER_SYMBOL;
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
      codeValues[code] = codeValueBits(code, stream.values);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Chunk-wide operations. Every lane of a chunk calls them the same number of times; without WIDE, every lane of
// the workgroup does (they contain barriers), so the loops around them run workgroup-uniform trip counts.

/** A lane: its number in the chunk (0..31), its chunk's slot in the workgroup, and where its subgroup lies. */
struct Lane {
  lane: u32,
  slot: u32,
  /** Bits of the lanes below this one. */
  lowerLanes: u32,
  /** Without WIDE: this subgroup's first lane, counted in the chunk (where its ballot bits go). */
  laneBase: u32,
  /** WIDE: which u32 of a subgroup ballot holds this chunk's lanes. */
  ballotWord: u32,
  subgroupLane: u32,
  /** Which of a group's output words this lane writes (see gatherWord). */
  groupWord: u32,
}

/** The Lane of lane `lane` of the chunk in slot `slot`. */
fn laneOf(lane: u32, slot: u32, laneBase: u32, ballotWord: u32, subgroupLane: u32) -> Lane {
  // A gathered word holds row lane mod n of the group from column n·(lane div n) on (n = SYMBOLS_PER_WORD, see
  // gatherWord); a lane with 64-bit symbols writes its own two words.
  let gathered = (lane % SYMBOLS_PER_WORD) * (LANES / SYMBOLS_PER_WORD) + lane / SYMBOLS_PER_WORD;
  let groupWord = select(gathered, 2u * lane, WORDS_PER_SYMBOL == 2u);
  return Lane(lane, slot, (1u << lane) - 1u, laneBase, ballotWord, subgroupLane, groupWord);
}

// #if WIDE
/** Bit l: whether lane l of this chunk passed `flag`. */
fn chunkBallot(me: Lane, flag: bool) -> u32 {
  return subgroupBallot(flag)[me.ballotWord];
}

fn shuffleXorBeyondQuad(me: Lane, value: u32, mask: u32) -> u32 {
  return subgroupShuffleXor(value, mask);
}
// #else
fn chunkBallot(me: Lane, flag: bool) -> u32 {
  // Three words in turn: the one zeroed here was last read two ballots ago and is next written one ballot on,
  // each side of at least this ballot's barrier.
  let word = me.slot * 3u + ballotTurn;
  // #if SUBGROUPS
  let subgroupFlags = subgroupBallot(flag).x;
  if (me.subgroupLane == 0u && subgroupFlags != 0u) {
    atomicOr(&ballots[word], subgroupFlags << me.laneBase);
  }
  // #else
  if (flag) {
    atomicOr(&ballots[word], 1u << me.lane);
  }
  // #endif
  workgroupBarrier();
  let flags = atomicLoad(&ballots[word]);
  if (me.lane == 0u) {
    atomicStore(&ballots[me.slot * 3u + (ballotTurn + 2u) % 3u], 0u);
  }
  ballotTurn = (ballotTurn + 1u) % 3u;
  return flags;
}

/**
 * Two buffers in turn: the one written here is rewritten two exchanges later, after every lane has passed the
 * next exchange's barrier (and so has read this one).
 */
fn shuffleXorBeyondQuad(me: Lane, value: u32, mask: u32) -> u32 {
  let base = (exchangeTurn * CHUNKS_PER_GROUP + me.slot) * LANES;
  exchange[base + me.lane] = value;
  workgroupBarrier();
  exchangeTurn ^= 1u;
  return exchange[base + (me.lane ^ mask)];
}
// #endif

/** `value` of lane (this lane ^ `mask`) of this chunk (`mask` < 32). */
fn chunkShuffleXor(me: Lane, value: u32, mask: u32) -> u32 {
  // #if SUBGROUPS
  // Partners within a quad by the quad operations: no barrier, and no check that the partner exists (3 % faster
  // on an H100 than shuffles for the byte gather). Lane numbers follow subgroup invocations (see decode), so a
  // quad is four lanes of one chunk, l to l + 3 with l a multiple of 4.
  if (mask == 1u) {
    return quadSwapX(value);
  }
  if (mask == 2u) {
    return quadSwapY(value);
  }
  // #endif
  return shuffleXorBeyondQuad(me, value, mask);
}

/**
 * One step of gatherWord at distance d: the lower lane of each pair l, l ^ d keeps its fields of rows with bit d
 * clear and takes its partner's such fields (moved up a field); the upper lane keeps those with bit d set and
 * takes its partner's (moved down). Each lane sends its own fields moved as its partner needs them, already
 * masked as the partner keeps, so the step has no branch.
 */
fn gatherStep(me: Lane, word: u32, distance: u32) -> u32 {
  let shift = distance * SYMBOL_OUTPUT_BITS;
  // The fields of rows with bit `distance` clear: runs of `shift` bits, every other run.
  let clear = select(select(0x0F0F0F0Fu, 0x00FF00FFu, shift == 8u), 0x0000FFFFu, shift == 16u);
  let upper = (me.lane & distance) != 0u;
  let kept = select(clear, ~clear, upper);
  let sent = select(word >> shift, word << shift, upper) & kept;
  return (word & kept) | chunkShuffleXor(me, sent, distance);
}

/**
 * This lane's output word of a group of SYMBOLS_PER_WORD (n) rows: the group's word Lane.groupWord. Lane
 * l collected column l of the rows (row k in bits k·SYMBOL_OUTPUT_BITS); a word holds n consecutive columns of one
 * row, so each run of n lanes transposes its n × n fields. A field moves from (lane a, row k) to (lane k, row a)
 * by swapping one bit of the lane index with the same bit of the row index at a time (gatherStep). Afterwards
 * lane l holds row l mod n of columns n·(l div n) .. n·(l div n) + n − 1. The steps are written out rather than
 * looped: n is a pipeline constant, so each pipeline keeps just its own straight-line code.
 */
fn gatherWord(me: Lane, collected: u32) -> u32 {
  var word = collected;
  if (SYMBOLS_PER_WORD > 1u) {
    word = gatherStep(me, word, 1u);
  }
  if (SYMBOLS_PER_WORD > 2u) {
    word = gatherStep(me, word, 2u);
  }
  if (SYMBOLS_PER_WORD > 4u) {
    word = gatherStep(me, word, 4u);
  }
  return word;
}

/**
 * Writes a group's output: lane l collected column l of its rows. Words are gathered from SYMBOLS_PER_WORD rows;
 * 64-bit symbols (one row a group) need no gathering, each lane writing its two words. Full groups (`checked`
 * false) are all written, except by a slot without a chunk (decoding its neighbour's data for company).
 */
fn writeGroup(me: Lane, chunk: Chunk, group: u32, collected: vec2<u32>, checked: bool) {
  let at = chunk.output + group * LANES * WORDS_PER_SYMBOL + me.groupWord;
  // A chunk alone in its subgroup never decodes without one (decode returns first), and its full groups write
  // without a branch: on an H100, 1 GiB of 3-bit codes decoded 1 % faster.
  let owned = CHUNK_IS_SUBGROUP || chunk.symbols != 0u;
  let written = select(owned, me.groupWord < wordsInGroup(chunk.symbols, group), checked);
  if (WORDS_PER_SYMBOL == 2u) {
    if (written) {
      output[at] = collected.x;
      output[at + 1u] = collected.y;
    }
    return;
  }
  let word = gatherWord(me, collected.x);
  if (written) {
    output[at] = word;
  }
}

/** Adds the output bits of a lane's symbol of row `k` to what the lane collected for its group. */
fn collect(collected: vec2<u32>, bits: vec2<u32>, k: u32) -> vec2<u32> {
  // 64-bit symbols have groups of one row (k = 0): both words are the symbol's.
  return vec2<u32>(collected.x | (bits.x << (k * SYMBOL_OUTPUT_BITS)), bits.y);
}

// ---------------------------------------------------------------------------------------------------------------
// The decoding itself.

/** A lane's rANS state and where it stands in the chunk's word stream. */
struct Decoder {
  x: u32,
  /** The next unread word, counted from the chunk's first u32 pair (1 at the start if the chunk starts mid-pair). */
  next: u32,
  firstPair: u32,
}

fn startDecoder(chunk: Chunk, lane: u32) -> Decoder {
  var x = STATE_LOW;
  if (chunk.symbols > 0u) {
    x = data[chunk.input + lane];
  }
  return Decoder(x, chunk.wordBase & 1u, chunk.wordBase >> 1u);
}

/** Decodes one row: this lane's symbol (if `live`) and its renormalization. Returns the table entry. */
fn decodeRow(decoder: ptr<function, Decoder>, me: Lane, stream: Stream, live: bool) -> u32 {
  let entry = tableEntry(stream.table, (*decoder).x & SLOT_MASK);
  let x = advanceState((*decoder).x, entry);
  let needsWord = live && x < STATE_LOW;
  let flags = chunkBallot(me, needsWord);
  // Loaded whether needed or not: a branch would cost more than the cached load.
  let position = (*decoder).next + countOneBits(flags & me.lowerLanes);
  let pair = data[(*decoder).firstPair + (position >> 1u)];
  // The word is the pair's low half at an even position, its high half at an odd one. Moved to the top of
  // `word`, it is appended by (x << 16) | (word >> 16): one funnel shift (on an H100, 1 GiB of 3-bit codes decoded
  // 6 % faster than with a shift and a mask). Selects rather than branches: no divergent code around the ballots.
  let word = select(pair << 16u, pair, (position & 1u) != 0u);
  let renormalized = select(x, (x << 16u) | (word >> 16u), needsWord);
  (*decoder).x = select((*decoder).x, renormalized, live);
  (*decoder).next += countOneBits(flags);
  return entry;
}

/** What a lane accumulates over a chunk besides its state: output cursor and code check. */
struct Progress {
  cursor: Cursor,
  invalid: bool,
}

/** Decodes the SYMBOLS_PER_WORD rows of group `group` and writes its output words. */
fn decodeGroup(decoder: ptr<function, Decoder>, progress: ptr<function, Progress>, me: Lane, chunk: Chunk, stream: Stream,
    group: u32, checkLive: bool) {
  var collected = vec2<u32>(0u);
  // The group's symbols, SYMBOL_BITS each (they fit a word: SYMBOL_OUTPUT_BITS ≥ SYMBOL_BITS), for the code check.
  var symbols = 0u;
  for (var k = 0u; k < SYMBOLS_PER_WORD; k += 1u) {
    let live = !checkLive || (group * SYMBOLS_PER_WORD + k) * LANES + me.lane < chunk.symbols;
    let symbol = symbolOf(decodeRow(decoder, me, stream, live));
    symbols |= select(0u, symbol, live) << (k * SYMBOL_BITS);
    collected = select(collected, collect(collected, symbolOutput(symbol, (*progress).cursor, stream), k), live);
    advanceCursor(&(*progress).cursor, stream);
  }
  // Uniform per stream, and off unless the stream can hold NaN codes at all (its codes are bytes then).
  if (stream.checkCodes) {
    (*progress).invalid = (*progress).invalid || invalidCodes(symbols);
  }
  writeGroup(me, chunk, group, collected, checkLive);
}

/**
 * Decodes an rANS chunk: groups below `fullGroups` have every row full (no per-row checks), the rest up to
 * `groups` are checked lane by lane. Then the end-of-chunk checks.
 */
fn decodeRans(chunk: Chunk, stream: Stream, me: Lane, fullGroups: u32, groups: u32) {
  var decoder = startDecoder(chunk, me.lane);
  var progress = Progress(startCursor(chunk.firstSymbol + me.lane, stream), false);
  let startFailure = select(0u, FAILURE_STATE_RANGE, decoder.x < STATE_LOW);
  // Full groups eight an iteration: the loop's own bookkeeping is a sizeable share of a group's work (on an H100,
  // 1 GiB of 3-bit codes decoded 9 % faster four an iteration than one, and 2 % faster eight than four). The full
  // groups left over and the partial ones go one by one.
  var group = 0u;
  // Each iteration first touches the word stream's lines from PREFETCH_PAIRS u32 pairs ahead on, so that the rows'
  // own word loads hit the cache: WGSL has no prefetch, so the loaded words are kept alive by a use below that
  // changes nothing. On an H100: one 4096×4096 tensor decoded 25 % faster, a Llama-3-8B block 16 %, 1 GiB 5 %.
  var prefetched = 0u;
  for (; group + 8u <= fullGroups; group += 8u) {
    prefetched |= data[decoder.firstPair + (decoder.next >> 1u) + PREFETCH_PAIRS + me.lane * PREFETCH_STRIDE];
    decodeGroup(&decoder, &progress, me, chunk, stream, group, false);
    decodeGroup(&decoder, &progress, me, chunk, stream, group + 1u, false);
    decodeGroup(&decoder, &progress, me, chunk, stream, group + 2u, false);
    decodeGroup(&decoder, &progress, me, chunk, stream, group + 3u, false);
    decodeGroup(&decoder, &progress, me, chunk, stream, group + 4u, false);
    decodeGroup(&decoder, &progress, me, chunk, stream, group + 5u, false);
    decodeGroup(&decoder, &progress, me, chunk, stream, group + 6u, false);
    decodeGroup(&decoder, &progress, me, chunk, stream, group + 7u, false);
  }
  for (; group < groups; group += 1u) {
    decodeGroup(&decoder, &progress, me, chunk, stream, group, group >= fullGroups);
  }
  // A start state out of range is what the CPU decoder reports first: it checks before decoding.
  let consumed = decoder.next - (chunk.wordBase & 1u);
  var failure = startFailure;
  if (failure == 0u && consumed > chunk.wordCount) {
    failure = FAILURE_WORDS_EXHAUSTED;
  } else if (failure == 0u && (consumed != chunk.wordCount || decoder.x != STATE_LOW)) {
    failure = FAILURE_END_STATE;
  }
  // A chunk that does not decode exactly is that, whatever codes it decoded.
  if (failure == 0u && progress.invalid) {
    failure = FAILURE_INVALID_CODE;
  }
  if (failure != 0u && chunk.symbols > 0u) {
    reportFailure(chunk.id, failure);
  }
  // The prefetches' use: an atomic max with 0 leaves the status word as it is.
  if (prefetched == 0u) {
    atomicMax(&status[STATUS_LAYOUT], 0u);
  }
}

/** Writes the symbols of a stored or one-symbol chunk, as decodeRans would have. */
fn copySymbols(chunk: Chunk, stream: Stream, me: Lane, groups: u32) {
  var cursor = startCursor(chunk.firstSymbol + me.lane, stream);
  var invalid = false;
  for (var group = 0u; group < groups; group += 1u) {
    var collected = vec2<u32>(0u);
    for (var k = 0u; k < SYMBOLS_PER_WORD; k += 1u) {
      let index = (group * SYMBOLS_PER_WORD + k) * LANES + me.lane;
      if (index < chunk.symbols) {
        var symbol = stream.table;
        if (stream.mode == MODE_STORED) {
          symbol = storedSymbol(chunk.input, index);
        }
        invalid = invalid || (stream.checkCodes && invalidCodes(symbol));
        collected = collect(collected, symbolOutput(symbol, cursor, stream), k);
      }
      advanceCursor(&cursor, stream);
    }
    writeGroup(me, chunk, group, collected, true);
  }
  if (invalid) {
    reportFailure(chunk.id, FAILURE_INVALID_CODE);
  }
}

/** Full groups of a chunk of `symbols` symbols, and all its groups. */
fn groupCounts(symbols: u32) -> vec2<u32> {
  let groupSymbols = LANES * SYMBOLS_PER_WORD;
  return vec2<u32>(symbols / groupSymbols, (symbols + groupSymbols - 1u) / groupSymbols);
}

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
  var chunk = chunkAt(firstChunk + min(slot, chunkCount - 1u));
  if (slot >= chunkCount) {
    // A slot without a chunk: its lanes take part in the chunk-wide operations and write nothing.
    chunk.symbols = 0u;
  }

  // #if WIDE
  // Every chunk must lie inside one full subgroup: sizes 32, 64 or 128, no partial subgroups.
  if (subgroupSize % LANES != 0u || subgroupSize > 128u || subgroupAdd(1u) != subgroupSize
      || (SUBGROUP_SIZE != 0u && subgroupSize != SUBGROUP_SIZE)) {
    if (local == 0u) {
      atomicMax(&status[STATUS_LAYOUT], 1u);
    }
    return;
  }
  // A slot without a chunk and alone in its subgroup has nothing to take part in.
  if (CHUNK_IS_SUBGROUP && slot >= chunkCount) {
    return;
  }
  let me = laneOf(lane, slot, 0u, select((subgroupLane / LANES) % 4u, 0u, CHUNK_IS_SUBGROUP), subgroupLane);
  // Chunks sharing a subgroup run the same loops; an empty slot does not hold back its neighbour's full groups.
  let own = groupCounts(chunk.symbols);
  let fullGroups = subgroupMin(select(own.x, 0xFFFFFFFFu, chunk.symbols == 0u));
  let groups = subgroupMax(own.y);
  // #else
  // #if SUBGROUPS
  if (LANES % subgroupSize != 0u) {
    if (local == 0u) {
      atomicMax(&status[STATUS_LAYOUT], 1u);
    }
    return;
  }
  // #endif
  let me = laneOf(lane, slot, lane - subgroupLane, 0u, subgroupLane);
  // The loops hold barriers: every invocation of the workgroup runs the same counts.
  var fullGroups = 0xFFFFFFFFu;
  var groups = 0u;
  for (var i = 0u; i < chunkCount; i += 1u) {
    let counts = groupCounts(chunkAt(firstChunk + i).symbols);
    fullGroups = min(fullGroups, counts.x);
    groups = max(groups, counts.y);
  }
  // #endif
  if (stream.mode == MODE_RANS) {
    decodeRans(chunk, stream, me, min(fullGroups, groups), groups);
  } else {
    copySymbols(chunk, stream, me, groups);
  }
}
