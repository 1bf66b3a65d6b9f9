// Loss and gradient sums of the NVFP4 reference optimizer (src/nvfp4/reference.ts), one thread per block of 16:
//   Σ|deq − w|, Σ|q|, Σ sign(e)·s·(q − xs), Σ sign(q)·xs
// with xs = w·2^-θ, q = e2m1(cast(xs)) (round to nearest, ties to the even magnitude index, saturating at 6),
// s = 2^θ (both factors computed on the host), deq = q·s, e = deq − w. f32 sums in element order: close to the
// CPU's f64 sums, not bit-identical (the reference needs no more). Indices come from the dispatch only (blocks
// below block_count): in range by construction, so it runs without bounds clamping (src/gpu/device.ts).

const WG: u32 = 64u;

struct Params {
  block_count: u32,
  unused0: u32,
  unused1: u32,
  unused2: u32,
}

@group(0) @binding(0) var<storage, read> weights: array<vec4<f32>>;
@group(0) @binding(1) var<uniform> params: Params;
// Per block: (2^-θ, 2^θ).
@group(0) @binding(2) var<storage, read> factors: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> sums: array<vec4<f32>>;

// E2M1 magnitude of |x| as compressed-tensors' cast_to_fp4 rounds it: an even index takes the tie at its upper
// bound (0.25, 1.25, 2.5, 5), an odd one leaves it to the next.
fn e2m1_magnitude(a: f32) -> f32 {
  if (a <= 0.25) { return 0.0; }
  if (a < 0.75) { return 0.5; }
  if (a <= 1.25) { return 1.0; }
  if (a < 1.75) { return 1.5; }
  if (a <= 2.5) { return 2.0; }
  if (a < 3.5) { return 3.0; }
  if (a <= 5.0) { return 4.0; }
  return 6.0;
}

@compute @workgroup_size(WG)
fn block_sums(@builtin(global_invocation_id) id: vec3<u32>) {
  let block = id.x;
  if (block >= params.block_count) { return; }
  let factor = factors[block];
  var acc = vec4<f32>(0.0);
  for (var q = 0u; q < 4u; q++) {
    let word = weights[block * 4u + q];
    for (var c = 0u; c < 4u; c++) {
      let w = word[c];
      let xs = w * factor.x;
      let magnitude = e2m1_magnitude(abs(xs));
      let value = select(magnitude, -magnitude, xs < 0.0);
      let error = value * factor.y - w;
      acc += vec4<f32>(abs(error), magnitude, sign(error) * factor.y * (value - xs), sign(value) * xs);
    }
  }
  sums[block] = acc;
}
