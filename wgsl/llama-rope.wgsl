// Rotary position embedding in place on x ([rows × heads × headDim]), transformers' rotate_half convention:
// element i is rotated with element i + headDim / 2 by the angle of (row, i). The angles' cos and sin come from
// a table computed once on the host (src/eval/rope.ts), so that CPU and GPU rotate identically.

struct Params {
  rows: u32,
  heads: u32,
  half: u32,  // headDim / 2
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> cosSin: array<f32>;  // [position × half × (cos, sin)]
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

const LANES = 64u;

@compute @workgroup_size(LANES)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
  let pair = (group.x + group.y * groups.x) * LANES + lane;
  if (pair >= params.rows * params.heads * params.half) {
    return;
  }
  let i = pair % params.half;
  let rowHead = pair / params.half;
  let row = rowHead / params.heads;
  let angle = 2u * (row * params.half + i);
  let cosine = cosSin[angle];
  let sine = cosSin[angle + 1u];
  let first = rowHead * 2u * params.half + i;
  let second = first + params.half;
  let a = x[first];
  let b = x[second];
  x[first] = a * cosine - b * sine;
  x[second] = b * cosine + a * sine;
}
