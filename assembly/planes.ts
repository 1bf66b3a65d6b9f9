// Byte planes of 2- and 4-byte elements (spec/eqz.md §7.4). Each plane byte is
// ((v >> highShift) & highMask) | ((v >> lowShift) & lowMask) of the element value v:
//   width 2: plane 0 = (v >> 7) & 0xFF                        (BF16: the 8 exponent bits)
//            plane 1 = ((v >> 8) & 0x80) | (v & 0x7F)          (sign and mantissa)
//   width 4: plane 0 = (v >> 23) & 0xFF                        (F32: the exponent)
//            plane 1 = ((v >> 24) & 0x80) | ((v >> 16) & 0x7F)
//            plane 2 = (v >> 8) & 0xFF,  plane 3 = v & 0xFF
// so the exponent, the only well-predictable part of a float, gets a stream of its own.

// @ts-ignore: decorator
@inline function planeHighShift(width: u32, plane: u32): u32 {
  return width == 2 ? (plane == 0 ? 7 : 8) : plane == 0 ? 23 : plane == 1 ? 24 : plane == 2 ? 8 : 0;
}
// @ts-ignore: decorator
@inline function planeHighMask(plane: u32): u32 {
  return plane == 1 ? 0x80 : 0xff;
}
// @ts-ignore: decorator
@inline function planeLowShift(width: u32): u32 {
  return width == 2 ? 0 : 16;
}
// @ts-ignore: decorator
@inline function planeLowMask(plane: u32): u32 {
  return plane == 1 ? 0x7f : 0;
}

/** Writes plane `plane` of `count` elements of `width` (2 or 4) bytes at `elements` to `out` (one byte each). */
export function extractPlane(elements: usize, count: usize, width: u32, plane: u32, out: usize): void {
  const highShift = planeHighShift(width, plane);
  const highMask = planeHighMask(plane);
  const lowShift = planeLowShift(width);
  const lowMask = planeLowMask(plane);
  const blockEnd = count & ~15;
  if (width == 2) {
    const hm = i16x8.splat(<i16>highMask);
    const lm = i16x8.splat(<i16>lowMask);
    for (let i: usize = 0; i < blockEnd; i += 16) {
      const a = v128.load(elements + (i << 1));
      const b = v128.load(elements + (i << 1), 16);
      const pa = v128.or(v128.and(i16x8.shr_u(a, highShift), hm), v128.and(a, lm));
      const pb = v128.or(v128.and(i16x8.shr_u(b, highShift), hm), v128.and(b, lm));
      v128.store(out + i, i8x16.narrow_i16x8_u(pa, pb));
    }
  } else {
    const hm = i32x4.splat(highMask);
    const lm = i32x4.splat(lowMask);
    for (let i: usize = 0; i < blockEnd; i += 16) {
      const at = elements + (i << 2);
      const p0 = planeLanes32(v128.load(at), highShift, hm, lowShift, lm);
      const p1 = planeLanes32(v128.load(at, 16), highShift, hm, lowShift, lm);
      const p2 = planeLanes32(v128.load(at, 32), highShift, hm, lowShift, lm);
      const p3 = planeLanes32(v128.load(at, 48), highShift, hm, lowShift, lm);
      v128.store(out + i, i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_u(p0, p1), i16x8.narrow_i32x4_u(p2, p3)));
    }
  }
  for (let i = blockEnd; i < count; i++) {
    const v: u32 = width == 2 ? <u32>load<u16>(elements + (i << 1)) : load<u32>(elements + (i << 2));
    store<u8>(out + i, <u8>(((v >> highShift) & highMask) | ((v >> lowShift) & lowMask)));
  }
}

// @ts-ignore: decorator
@inline function planeLanes32(v: v128, highShift: u32, highMask: v128, lowShift: u32, lowMask: v128): v128 {
  return v128.or(v128.and(i32x4.shr_u(v, highShift), highMask), v128.and(i32x4.shr_u(v, lowShift), lowMask));
}

/**
 * Reassembles `count` elements of `width` (2 or 4) bytes into `out` from the planes whose addresses are the
 * `width` u32 at `planes` — the inverse of {@link extractPlane}.
 */
export function mergePlanes(planes: usize, count: usize, width: u32, out: usize): void {
  const blockEnd = count & ~15;
  const p0 = <usize>load<u32>(planes);
  const p1 = <usize>load<u32>(planes, 4);
  if (width == 2) {
    for (let i: usize = 0; i < blockEnd; i += 16) {
      const exponent = v128.load(p0 + i);
      const rest = v128.load(p1 + i);
      v128.store(out + (i << 1), merge16(i16x8.extend_low_i8x16_u(exponent), i16x8.extend_low_i8x16_u(rest)));
      v128.store(out + (i << 1), merge16(i16x8.extend_high_i8x16_u(exponent), i16x8.extend_high_i8x16_u(rest)), 16);
    }
    for (let i = blockEnd; i < count; i++) {
      const rest = <u32>load<u8>(p1 + i);
      store<u16>(out + (i << 1), <u16>((<u32>load<u8>(p0 + i) << 7) | ((rest & 0x80) << 8) | (rest & 0x7f)));
    }
    return;
  }
  const p2 = <usize>load<u32>(planes, 8);
  const p3 = <usize>load<u32>(planes, 12);
  for (let i: usize = 0; i < blockEnd; i += 16) {
    const b0 = v128.load(p0 + i);
    const b1 = v128.load(p1 + i);
    const b2 = v128.load(p2 + i);
    const b3 = v128.load(p3 + i);
    const at = out + (i << 2);
    const lo0 = i16x8.extend_low_i8x16_u(b0), hi0 = i16x8.extend_high_i8x16_u(b0);
    const lo1 = i16x8.extend_low_i8x16_u(b1), hi1 = i16x8.extend_high_i8x16_u(b1);
    const lo2 = i16x8.extend_low_i8x16_u(b2), hi2 = i16x8.extend_high_i8x16_u(b2);
    const lo3 = i16x8.extend_low_i8x16_u(b3), hi3 = i16x8.extend_high_i8x16_u(b3);
    v128.store(at, merge32(i32x4.extend_low_i16x8_u(lo0), i32x4.extend_low_i16x8_u(lo1),
      i32x4.extend_low_i16x8_u(lo2), i32x4.extend_low_i16x8_u(lo3)));
    v128.store(at, merge32(i32x4.extend_high_i16x8_u(lo0), i32x4.extend_high_i16x8_u(lo1),
      i32x4.extend_high_i16x8_u(lo2), i32x4.extend_high_i16x8_u(lo3)), 16);
    v128.store(at, merge32(i32x4.extend_low_i16x8_u(hi0), i32x4.extend_low_i16x8_u(hi1),
      i32x4.extend_low_i16x8_u(hi2), i32x4.extend_low_i16x8_u(hi3)), 32);
    v128.store(at, merge32(i32x4.extend_high_i16x8_u(hi0), i32x4.extend_high_i16x8_u(hi1),
      i32x4.extend_high_i16x8_u(hi2), i32x4.extend_high_i16x8_u(hi3)), 48);
  }
  for (let i = blockEnd; i < count; i++) {
    const rest = <u32>load<u8>(p1 + i);
    store<u32>(out + (i << 2), (<u32>load<u8>(p0 + i) << 23) | ((rest & 0x80) << 24) | ((rest & 0x7f) << 16)
      | (<u32>load<u8>(p2 + i) << 8) | <u32>load<u8>(p3 + i));
  }
}

// @ts-ignore: decorator
@inline function merge16(exponent: v128, rest: v128): v128 {
  return v128.or(v128.or(i16x8.shl(exponent, 7), i16x8.shl(v128.and(rest, i16x8.splat(0x80)), 8)),
    v128.and(rest, i16x8.splat(0x7f)));
}

// @ts-ignore: decorator
@inline function merge32(b0: v128, b1: v128, b2: v128, b3: v128): v128 {
  const signAndHigh = v128.or(i32x4.shl(v128.and(b1, i32x4.splat(0x80)), 24), i32x4.shl(v128.and(b1, i32x4.splat(0x7f)), 16));
  return v128.or(v128.or(i32x4.shl(b0, 23), signAndHigh), v128.or(i32x4.shl(b2, 8), b3));
}
