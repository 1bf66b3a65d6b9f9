// Constants of the coded stream (spec/eqz.md §6). The TypeScript side mirrors them in
// src/codec/constants.ts; the spec is the single source of truth for both.

/** Probabilities are 12-bit: a decode table of 4096 slots fits in L1 here and in GPU workgroup memory. */
export const PROB_BITS: u32 = 12;
export const PROB_SCALE: u32 = 1 << PROB_BITS;
export const SLOT_MASK: u32 = PROB_SCALE - 1;

/**
 * States live in [2^16, 2^32) and renormalize by 16-bit words. Decoding one symbol leaves x ≥ 2^16 / 2^12 = 16,
 * so a single word read always restores x ≥ 2^16: at most one read per symbol, never a loop.
 */
export const STATE_LOW: u32 = 1 << 16;

/** 32 interleaved lanes per chunk (one NVIDIA warp; 8 × 4 lanes of v128 here). */
export const LANES: u32 = 32;
export const LANE_BYTES: usize = LANES << 2;

/** Encoder threshold: push a word first when x ≥ freq << 20, so that the coded x stays below 2^32. */
export const ENCODE_RENORM_SHIFT: u32 = 32 - PROB_BITS;
