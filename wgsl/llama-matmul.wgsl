// y[row, yOffset + o] (+)= Σ_i x[xRowOffset + row, i] · w[o, i]: a linear layer, w stored [outputs × inner] as
// nn.Linear keeps it. A large weight is split into row chunks (each within the adapter's binding limit); each
// chunk is one dispatch writing its own columns of y.
//
// Each invocation computes a 4 × 4 block (4 rows of x × 4 weight rows): every value loaded is used 4 times.
// Past the edge of x or w the indices are clamped to the last valid row, so every load is in bounds and the
// loop has no branches; only the stores are guarded.

struct Params {
  rows: u32,        // rows of x multiplied
  inner: u32,       // length of each dot product
  outputs: u32,     // rows of this weight chunk
  yStride: u32,     // row stride of y
  yOffset: u32,     // column of y where this chunk's outputs start
  xRowOffset: u32,  // first row of x multiplied
  accumulate: u32,  // 1: add to y (a residual connection), 0: overwrite
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const BLOCK = 4u;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let firstOutput = id.x * BLOCK;
  let firstRow = id.y * BLOCK;
  if (firstRow >= params.rows || firstOutput >= params.outputs) {
    return;
  }
  var xStart: array<u32, 4>;
  var wStart: array<u32, 4>;
  for (var j = 0u; j < BLOCK; j++) {
    xStart[j] = (params.xRowOffset + min(firstRow + j, params.rows - 1u)) * params.inner;
    wStart[j] = min(firstOutput + j, params.outputs - 1u) * params.inner;
  }
  // sums[r][c]: row firstRow + r of x times weight row firstOutput + c.
  var sums: array<vec4<f32>, 4>;
  for (var i = 0u; i < params.inner; i++) {
    let weights = vec4<f32>(w[wStart[0] + i], w[wStart[1] + i], w[wStart[2] + i], w[wStart[3] + i]);
    sums[0] = fma(vec4<f32>(x[xStart[0] + i]), weights, sums[0]);
    sums[1] = fma(vec4<f32>(x[xStart[1] + i]), weights, sums[1]);
    sums[2] = fma(vec4<f32>(x[xStart[2] + i]), weights, sums[2]);
    sums[3] = fma(vec4<f32>(x[xStart[3] + i]), weights, sums[3]);
  }
  for (var r = 0u; r < BLOCK; r++) {
    if (firstRow + r >= params.rows) {
      break;
    }
    for (var c = 0u; c < BLOCK; c++) {
      if (firstOutput + c < params.outputs) {
        let index = (firstRow + r) * params.yStride + params.yOffset + firstOutput + c;
        if (params.accumulate != 0u) {
          y[index] = y[index] + sums[r][c];
        } else {
          y[index] = sums[r][c];
        }
      }
    }
  }
}
