/**
 * λ presets: the rate each optimizer's λ gives on LLM-like weights, stated like the paper states its own — in
 * bits per parameter of the codes (order-0 entropy), scales and container overhead not counted.
 * rd-search's were measured on stories260K and on Student-t synthetic tensors (within 0.25 bit on both).
 */

/** Nominal rates the presets are named by. */
export type PresetBits = 2 | 3 | 4;

/** The reference optimizer: the EntQuant paper's λ (and learning rate) for ≈ 4, 3 and 2 bits. */
export const REFERENCE_PRESETS: Readonly<Record<PresetBits, { lambda: number; lr: number }>> = {
  4: { lambda: 3.9, lr: 1 },
  3: { lambda: 14.5, lr: 1 },
  2: { lambda: 58, lr: 0.25 },
};

/** rd-search: λ (relative squared error per bit/param) for ≈ 4, 3 and 2 bits. */
export const SEARCH_PRESETS: Readonly<Record<PresetBits, number>> = { 4: 0.006, 3: 0.024, 2: 0.085 };
