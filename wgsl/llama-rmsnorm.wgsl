// y[row] = weight ⊙ x[row] / sqrt(mean(x[row]²) + eps), as transformers' LlamaRMSNorm computes it in fp32.
// One workgroup per row; its 64 invocations stride over the row and reduce the sum of squares in workgroup memory.

struct Params {
  rows: u32,
  width: u32,
  epsBits: u32,  // eps as f32 bits
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const LANES = 64u;
var<workgroup> partial: array<f32, LANES>;

@compute @workgroup_size(LANES)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
  // Rows beyond 65535 continue on the grid's second dimension.
  let row = group.x + group.y * groups.x;
  if (row >= params.rows) {
    return;
  }
  let base = row * params.width;
  var sum = 0.0;
  for (var i = lane; i < params.width; i += LANES) {
    let value = x[base + i];
    sum = fma(value, value, sum);
  }
  partial[lane] = sum;
  workgroupBarrier();
  for (var stride = LANES / 2u; stride > 0u; stride >>= 1u) {
    if (lane < stride) {
      partial[lane] += partial[lane + stride];
    }
    workgroupBarrier();
  }
  let inverseRms = 1.0 / sqrt(partial[0] / f32(params.width) + bitcast<f32>(params.epsBits));
  for (var i = lane; i < params.width; i += LANES) {
    y[base + i] = weight[i] * (x[base + i] * inverseRms);
  }
}
