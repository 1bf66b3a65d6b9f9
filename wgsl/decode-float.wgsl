// Exact conversions between f32 bits and BF16 / F16 bits, matching the reference definitions in
// src/tensor/dtype.ts bit for bit (NaNs included). Included by decode.wgsl and decode-merge.wgsl.

/** BF16 bits of the bits of a finite f32 (or ±Inf), round-to-nearest-even: a carry may round up to Inf. */
fn bf16FromFiniteF32(bits: u32) -> u32 {
  return (bits + 0x7FFFu + ((bits >> 16u) & 1u)) >> 16u;
}

/** BF16 bits of f32 bits with round-to-nearest-even; NaN stays a quiet NaN (src/tensor/dtype.ts). */
fn bf16FromF32(bits: u32) -> u32 {
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {
    return ((bits >> 16u) | 0x40u) & 0xFFFFu;
  }
  return bf16FromFiniteF32(bits);
}

/** F16 bits of f32 bits with round-to-nearest-even, subnormals exact, overflow to ±Inf (src/tensor/dtype.ts). */
fn f16FromF32(bits: u32) -> u32 {
  let sign = (bits >> 16u) & 0x8000u;
  let exponent = (bits >> 23u) & 0xFFu;
  let mantissa = bits & 0x7FFFFFu;
  if (exponent == 0xFFu) {
    return sign | 0x7C00u | select(0u, 0x200u | (mantissa >> 13u), mantissa != 0u);
  }
  // Rebias 127 → 15; below F16's normal range the significand (implicit 1 included) shifts right.
  let halfExponent = i32(exponent) - 112;
  if (halfExponent >= 0x1F) {
    return sign | 0x7C00u;
  }
  if (halfExponent <= 0) {
    if (halfExponent < -10) {
      return sign;
    }
    let significand = mantissa | 0x800000u;
    let shift = u32(14 - halfExponent);
    let half = significand >> shift;
    let remainder = significand & ((1u << shift) - 1u);
    let halfway = 1u << (shift - 1u);
    let roundUp = remainder > halfway || (remainder == halfway && (half & 1u) == 1u);
    return sign | (half + select(0u, 1u, roundUp));
  }
  let half = (u32(halfExponent) << 10u) | (mantissa >> 13u);
  let remainder = mantissa & 0x1FFFu;
  let roundUp = remainder > 0x1000u || (remainder == 0x1000u && (half & 1u) == 1u);
  // A carry out of the mantissa correctly bumps the exponent, up to Inf.
  return sign | (half + select(0u, 1u, roundUp));
}

/**
 * f32 bits of F16 bits (exact). A NaN becomes the canonical quiet NaN 0x7FC00000, as the CPU path's
 * f16BitsToF32 → Float32Array conversion does.
 */
fn f32FromF16(bits: u32) -> u32 {
  let sign = (bits & 0x8000u) << 16u;
  let exponent = (bits >> 10u) & 0x1Fu;
  let mantissa = bits & 0x3FFu;
  if (exponent == 0x1Fu) {
    return select(sign | 0x7F800000u, 0x7FC00000u, mantissa != 0u);
  }
  if (exponent == 0u) {
    // Subnormal (or zero): m × 2^-24 is a normal f32, exact.
    return sign | bitcast<u32>(f32(mantissa) * 5.9604644775390625e-8);
  }
  return sign | ((exponent + 112u) << 23u) | (mantissa << 13u);
}
