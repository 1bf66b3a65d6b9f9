// Reassembles the elements of a `planes` tensor (spec/eqz.md §"1 planes") from its decoded byte planes, and
// converts them to the requested output dtype. One invocation writes one u32 output word: 1 element of a
// 4-byte output, 2 of a 2-byte one. Plane k of element e is byte e of plane k, the planes `planeWords` u32 apart.

// #include decode-float.wgsl

const SOURCE_BF16 = 0u;
const SOURCE_F16 = 1u;
const SOURCE_F32 = 2u;
/** Any other 2- or 4-byte dtype: merged, never converted. */
const SOURCE_OTHER = 3u;

const OUTPUT_SOURCE = 0u;
const OUTPUT_F32 = 1u;
const OUTPUT_BF16 = 2u;
const OUTPUT_F16 = 3u;

override SOURCE_KIND: u32 = SOURCE_BF16;
/** Bytes per source element: 2 or 4. */
override SOURCE_WIDTH: u32 = 2u;
override OUTPUT_KIND: u32 = OUTPUT_SOURCE;
override OUTPUT_WIDTH: u32 = select(select(2u, 4u, OUTPUT_KIND == OUTPUT_F32), SOURCE_WIDTH, OUTPUT_KIND == OUTPUT_SOURCE);
override ELEMENTS_PER_WORD: u32 = 4u / OUTPUT_WIDTH;

struct Job {
  /** Elements in this job. */
  elements: u32,
  /** u32 words from one plane to the next in `planes`. */
  planeWords: u32,
  /** Workgroups per row of the 2-D dispatch. */
  dispatchWidth: u32,
  /** u32 index in `output` of the first output word. */
  outputBase: u32,
}

@group(0) @binding(0) var<storage, read> planes: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;
@group(0) @binding(2) var<uniform> job: Job;

fn planeByte(plane: u32, element: u32) -> u32 {
  return (planes[plane * job.planeWords + (element >> 2u)] >> ((element & 3u) << 3u)) & 0xFFu;
}

/** The element's source bits from its plane bytes (the inverse of the spec's plane split). */
fn sourceBits(element: u32) -> u32 {
  let exponent = planeByte(0u, element);
  let signAndHigh = planeByte(1u, element);
  if (SOURCE_WIDTH == 2u) {
    return (exponent << 7u) | ((signAndHigh & 0x80u) << 8u) | (signAndHigh & 0x7Fu);
  }
  return (exponent << 23u) | ((signAndHigh & 0x80u) << 24u) | ((signAndHigh & 0x7Fu) << 16u)
    | (planeByte(2u, element) << 8u) | planeByte(3u, element);
}

fn f32BitsOf(bits: u32) -> u32 {
  if (SOURCE_KIND == SOURCE_BF16) {
    return bits << 16u;
  }
  if (SOURCE_KIND == SOURCE_F16) {
    return f32FromF16(bits);
  }
  return bits;
}

fn outputBits(bits: u32) -> u32 {
  if (OUTPUT_KIND == OUTPUT_SOURCE) {
    return bits;
  }
  let value = f32BitsOf(bits);
  if (OUTPUT_KIND == OUTPUT_F32) {
    return value;
  }
  if (OUTPUT_KIND == OUTPUT_BF16) {
    return bf16FromF32(value);
  }
  return f16FromF32(value);
}

@compute @workgroup_size(256)
fn merge(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) local: u32) {
  let wordIndex = (workgroup.y * job.dispatchWidth + workgroup.x) * 256u + local;
  let first = wordIndex * ELEMENTS_PER_WORD;
  if (first >= job.elements) {
    return;
  }
  var word = 0u;
  for (var i = 0u; i < ELEMENTS_PER_WORD; i += 1u) {
    if (first + i < job.elements) {
      word |= outputBits(sourceBits(first + i)) << (i * OUTPUT_WIDTH * 8u);
    }
  }
  output[job.outputBase + wordIndex] = word;
}
