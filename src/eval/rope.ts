/**
 * Rotary position embeddings as transformers computes them for Llama (no scaling), in binary32 at every step so
 * that the CPU and GPU paths rotate by exactly the same angles as PyTorch does.
 */
import type { LlamaConfig } from './llama-config.js';

/**
 * cos and sin of every (position, frequency) pair: entry `2 * (position * headDim / 2 + i)` is cos and the next
 * one sin of `position * inv_freq[i]`, with inv_freq[i] = 1 / theta^(2i / headDim) for i < headDim / 2.
 * Rotation pairs element i with element i + headDim / 2 (transformers' rotate_half).
 */
export function ropeTable(config: Pick<LlamaConfig, 'headDim' | 'ropeTheta'>, positions: number): Float32Array {
  const half = config.headDim / 2;
  const table = new Float32Array(positions * half * 2);
  for (let i = 0; i < half; i++) {
    const exponent = Math.fround((2 * i) / config.headDim);
    const inverseFrequency = Math.fround(1 / Math.fround(config.ropeTheta ** exponent));
    for (let position = 0; position < positions; position++) {
      const angle = Math.fround(position * inverseFrequency);
      table[2 * (position * half + i)] = Math.cos(angle);
      table[2 * (position * half + i) + 1] = Math.sin(angle);
    }
  }
  return table;
}
