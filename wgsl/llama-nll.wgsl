// What each predicted token costs, one workgroup per position p of a block of logit rows:
//   scores[2 (positionOffset + p)]     = −log softmax(logits[p])[targets[positionOffset + p]]   (entry point nll)
//   scores[2 (positionOffset + p) + 1] = Σ_v p_ref(v) (log p_ref(v) − log p_model(v))          (entry point nllKl)
// with p_ref = softmax(refLogits[p]). Log-normalizers are max + log Σ e^(l − max); each reduction runs over the
// vocabulary in workgroup memory, so no subgroup support is needed.

struct Params {
  positions: u32,       // logit rows in this block
  vocab: u32,
  positionOffset: u32,  // the block's first position in the window
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;     // [positions × vocab]
@group(0) @binding(2) var<storage, read> targets: array<u32>;    // [window positions]
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;  // [window positions × 2]
@group(0) @binding(4) var<storage, read> refLogits: array<f32>;  // [positions × vocab]

const LANES = 64u;
const LOWEST_FLOAT = -3.40282346638528859812e+38f;  // −FLT_MAX: the start of a running maximum
var<workgroup> partial: array<f32, LANES>;
// A reduction's result, published by lane 0 for every lane to read. Reading partial[0] directly races with the
// next reduction's writes to it on the GLES software adapter even with a barrier between the read and the writes
// (seen on llvmpipe: every lane but lane 0 got another value); a separate variable, written only after a barrier
// that every lane crosses after its read, does not.
var<workgroup> reduced: f32;

fn reduceMax(lane: u32, value: f32) -> f32 {
  partial[lane] = value;
  workgroupBarrier();
  for (var stride = LANES / 2u; stride > 0u; stride >>= 1u) {
    if (lane < stride) {
      partial[lane] = max(partial[lane], partial[lane + stride]);
    }
    workgroupBarrier();
  }
  if (lane == 0u) {
    reduced = partial[0];
  }
  workgroupBarrier();
  return reduced;
}

fn reduceSum(lane: u32, value: f32) -> f32 {
  partial[lane] = value;
  workgroupBarrier();
  for (var stride = LANES / 2u; stride > 0u; stride >>= 1u) {
    if (lane < stride) {
      partial[lane] += partial[lane + stride];
    }
    workgroupBarrier();
  }
  if (lane == 0u) {
    reduced = partial[0];
  }
  workgroupBarrier();
  return reduced;
}

fn modelLogNormalizer(lane: u32, base: u32) -> f32 {
  var largest = LOWEST_FLOAT;
  for (var v = lane; v < params.vocab; v += LANES) {
    largest = max(largest, logits[base + v]);
  }
  largest = reduceMax(lane, largest);
  var sum = 0.0;
  for (var v = lane; v < params.vocab; v += LANES) {
    sum += exp(logits[base + v] - largest);
  }
  return largest + log(reduceSum(lane, sum));
}

fn refLogNormalizer(lane: u32, base: u32) -> f32 {
  var largest = LOWEST_FLOAT;
  for (var v = lane; v < params.vocab; v += LANES) {
    largest = max(largest, refLogits[base + v]);
  }
  largest = reduceMax(lane, largest);
  var sum = 0.0;
  for (var v = lane; v < params.vocab; v += LANES) {
    sum += exp(refLogits[base + v] - largest);
  }
  return largest + log(reduceSum(lane, sum));
}

fn blockPosition(group: vec3<u32>, groups: vec3<u32>) -> u32 {
  return group.x + group.y * groups.x;
}

@compute @workgroup_size(LANES)
fn nll(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
       @builtin(local_invocation_index) lane: u32) {
  let p = blockPosition(group, groups);
  if (p >= params.positions) {
    return;
  }
  let base = p * params.vocab;
  let logNormalizer = modelLogNormalizer(lane, base);
  let position = params.positionOffset + p;
  if (lane == 0u) {
    scores[2u * position] = logNormalizer - logits[base + targets[position]];
  }
}

@compute @workgroup_size(LANES)
fn nllKl(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
         @builtin(local_invocation_index) lane: u32) {
  let p = blockPosition(group, groups);
  if (p >= params.positions) {
    return;
  }
  let base = p * params.vocab;
  let logNormalizer = modelLogNormalizer(lane, base);
  let refNormalizer = refLogNormalizer(lane, base);
  var divergence = 0.0;
  for (var v = lane; v < params.vocab; v += LANES) {
    let refLogProbability = refLogits[base + v] - refNormalizer;
    divergence += exp(refLogProbability) * (refLogProbability - (logits[base + v] - logNormalizer));
  }
  divergence = reduceSum(lane, divergence);
  let position = params.positionOffset + p;
  if (lane == 0u) {
    scores[2u * position] = logNormalizer - logits[base + targets[position]];
    scores[2u * position + 1u] = divergence;
  }
}
