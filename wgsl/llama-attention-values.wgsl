// The attention output: out[q, h · headDim + d] = Σ_{k ≤ q} probs[h − headOffset, q, k] · V[k, h / group, d]
// for the heads of this pass (see llama-attention-scores.wgsl). One invocation per (head, query, d).

struct Params {
  rows: u32,
  heads: u32,
  group: u32,
  headDim: u32,
  headOffset: u32,
  headsInPass: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> probs: array<f32>;   // [headsInPass × rows × rows]
@group(0) @binding(2) var<storage, read> values: array<f32>;  // [rows × heads / group × headDim]
@group(0) @binding(3) var<storage, read_write> attended: array<f32>;  // [rows × heads × headDim]

const LANES = 64u;

@compute @workgroup_size(LANES)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
  let task = (group.x + group.y * groups.x) * LANES + lane;
  if (task >= params.headsInPass * params.rows * params.headDim) {
    return;
  }
  let d = task % params.headDim;
  let query = (task / params.headDim) % params.rows;
  let localHead = task / (params.headDim * params.rows);
  let head = params.headOffset + localHead;
  let valueStride = params.heads / params.group * params.headDim;
  let valueStart = head / params.group * params.headDim + d;
  let rowStart = (localHead * params.rows + query) * params.rows;
  var sum = 0.0;
  for (var key = 0u; key <= query; key++) {
    sum = fma(probs[rowStart + key], values[key * valueStride + valueStart], sum);
  }
  attended[(query * params.heads + head) * params.headDim + d] = sum;
}
