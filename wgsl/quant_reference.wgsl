// Loss and gradient sums of the reference optimizer (src/quant/reference.ts), one workgroup per row:
//   Σ|deq − w|, Σ|q|, Σ sign(e)·s·(q − xs), Σ sign(q)·xs
// with xs = w·2^-θ, q = cast(clamp(xs, ±448)) (FP8 E4M3, round to nearest even) or clamp(round(xs), −128, 127)
// (INT8), s = 2^θ' (θ' = θ rounded through the weight dtype, done on the CPU), deq = q·s, e = deq − w.
// Float sums in a workgroup tree: close to the CPU's, not bit-identical (the reference needs no more).
// Indices come from the dispatch (one workgroup per row of the bindings) only: in range by construction, so it
// runs on the optimizer's device without bounds clamping (src/gpu/device.ts, DeviceChecks).

const WG: u32 = 128u;

struct Params {
  cols: u32,
  row_base: u32,
  is_int8: u32,
  unused: u32,
}

@group(0) @binding(0) var<storage, read> weights: array<f32>;
@group(0) @binding(1) var<uniform> params: Params;
// Per tensor row: (θ, θ').
@group(0) @binding(2) var<storage, read> thetas: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> sums: array<vec4<f32>>;

var<workgroup> partial: array<vec4<f32>, WG>;

// Value of cast(x) to E4M3 for |x| ≤ 448: round to nearest even on the E4M3 grid.
fn e4m3_value(x: f32) -> f32 {
  let a = abs(x);
  var v: f32;
  if (a < 0.015625) {
    // Subnormals: multiples of 2^-9; round() is round-half-to-even in WGSL.
    v = round(a * 512.0) / 512.0;
  } else {
    let bits = bitcast<u32>(a);
    let rounded = (bits + 0x7ffffu + ((bits >> 20u) & 1u)) & 0xfff00000u;
    v = min(bitcast<f32>(rounded), 448.0);
  }
  return select(v, -v, x < 0.0);
}

fn code_value(xs: f32) -> f32 {
  if (params.is_int8 == 1u) { return clamp(round(xs), -128.0, 127.0); }
  return e4m3_value(clamp(xs, -448.0, 448.0));
}

@compute @workgroup_size(WG)
fn row_sums(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let row = group.x;
  let theta = thetas[params.row_base + row];
  let inverse = exp2(-theta.x);
  let scale = exp2(theta.y);
  var acc = vec4<f32>(0.0);
  for (var i = tid; i < params.cols; i += WG) {
    let w = weights[row * params.cols + i];
    let xs = w * inverse;
    let q = code_value(xs);
    let error = q * scale - w;
    acc += vec4<f32>(abs(error), abs(q), sign(error) * scale * (q - xs), sign(q) * xs);
  }
  partial[tid] = acc;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (tid < stride) { partial[tid] += partial[tid + stride]; }
    workgroupBarrier();
  }
  if (tid == 0u) { sums[params.row_base + row] = partial[0]; }
}
