// Causal attention weights: for query head h (of the heads [headOffset, headOffset + headsInPass) done in this
// pass) and query position q, probs[h − headOffset, q, k] = softmax over k ≤ q of (Q[q, h] · K[k, h / group]) · scale,
// where group = heads per key/value head (grouped-query attention). Entries k > q are never written nor read.
// One invocation per (head, query) row: it writes the scores, then turns them into probabilities in place.

struct Params {
  rows: u32,
  heads: u32,
  group: u32,        // query heads per key/value head
  headDim: u32,
  headOffset: u32,
  headsInPass: u32,
  scaleBits: u32,    // 1 / sqrt(headDim) as f32 bits
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> queries: array<f32>;  // [rows × heads × headDim]
@group(0) @binding(2) var<storage, read> keys: array<f32>;     // [rows × heads / group × headDim]
@group(0) @binding(3) var<storage, read_write> probs: array<f32>;  // [headsInPass × rows × rows]

const LANES = 64u;
const LOWEST_FLOAT = -3.40282346638528859812e+38f;  // −FLT_MAX: the start of a running maximum

@compute @workgroup_size(LANES)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
  let task = (group.x + group.y * groups.x) * LANES + lane;
  if (task >= params.headsInPass * params.rows) {
    return;
  }
  let query = task % params.rows;
  let localHead = task / params.rows;
  let head = params.headOffset + localHead;
  let keyStride = params.heads / params.group * params.headDim;
  let keyOffset = head / params.group * params.headDim;
  let queryStart = (query * params.heads + head) * params.headDim;
  let rowStart = (localHead * params.rows + query) * params.rows;
  let scale = bitcast<f32>(params.scaleBits);

  var largest = LOWEST_FLOAT;
  for (var key = 0u; key <= query; key++) {
    let keyStart = key * keyStride + keyOffset;
    var dot = 0.0;
    for (var i = 0u; i < params.headDim; i++) {
      dot = fma(queries[queryStart + i], keys[keyStart + i], dot);
    }
    let score = dot * scale;
    probs[rowStart + key] = score;
    largest = max(largest, score);
  }
  var total = 0.0;
  for (var key = 0u; key <= query; key++) {
    let weight = exp(probs[rowStart + key] - largest);
    probs[rowStart + key] = weight;
    total += weight;
  }
  for (var key = 0u; key <= query; key++) {
    probs[rowStart + key] = probs[rowStart + key] / total;
  }
}
