// XXH32's stripe loop (the bulk of a checksum): the four 32-bit accumulators are the four lanes of one v128, so a
// 16-byte stripe is one load, two multiplies, an add and a rotate. The header, length and tail steps stay in
// TypeScript (src/codec/xxh32.ts), which owns the streaming state.

const PRIME1: u32 = 0x9e3779b1;
const PRIME2: u32 = 0x85ebca77;

/** Runs the accumulators at `state` (u32 × 4) over the 16-byte stripes of `data[0..length)` (length % 16 == 0). */
export function xxh32Stripes(data: usize, length: usize, state: usize): void {
  let accumulators = v128.load(state);
  const prime1 = i32x4.splat(PRIME1);
  const prime2 = i32x4.splat(PRIME2);
  const end = data + length;
  for (let at = data; at < end; at += 16) {
    accumulators = i32x4.add(accumulators, i32x4.mul(v128.load(at), prime2));
    accumulators = i32x4.mul(v128.or(i32x4.shl(accumulators, 13), i32x4.shr_u(accumulators, 19)), prime1);
  }
  v128.store(state, accumulators);
}
