#!/usr/bin/env node
// Fuzzes the coded-stream and planes decoders with mutated valid inputs: bit flips, truncations, random
// frequency tables, states, word counts and header fields, spliced and random bytes. Every case must end in
// an EqzError or in a decode that stays within its bounds (a mutated stream that is still valid may decode
// to other symbols: the container's checksum catches that) — never another exception, a crash or a hang.
//
//   npm run build && node scripts/fuzz-codec.mjs [cases=100000] [seed=1]
//
// test/codec-fuzz.test.ts runs a smaller share through the TypeScript sources with runFuzz().
import { pathToFileURL } from 'node:url';

/** xorshift32: enough for choosing mutations, deterministic per seed. */
function generator(seed) {
  let state = seed >>> 0 || 1;
  const next = () => {
    state ^= state << 13; state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5; state >>>= 0;
    return state;
  };
  return { u32: next, below: (n) => next() % n, chance: (p) => next() / 4294967296 < p };
}

/** Symbols with mean about `spread`, capped to the alphabet. */
function symbols(random, count, spread, alphabet) {
  const out = new Uint8Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.min(alphabet - 1, Math.floor(-Math.log(1 - random.u32() / 4294967296) * spread));
  return out;
}

/** Valid inputs to mutate: streams of every shape, and planes payloads. */
function corpus(codec, random) {
  const streams = [];
  const shapes = [
    [1, 2, 8, 'rans', 12], [33, 2, 8, 'rans', 12], [4097, 3, 8, 'rans', 12], [20000, 1, 8, 'rans', 12],
    [9000, 0.3, 8, 'rans', 12], [5000, 6, 8, 'rans', 13], [3000, 2, 4, 'rans', 12], [777, 1, 4, 'rans', 12],
    [5000, 0, 8, 'rans', 12], [100, 2, 8, 'stored'], [101, 2, 4, 'stored'], [0, 1, 8, 'stored'], [60000, 1.5, 8, 'auto'],
  ];
  for (const [count, spread, bits, mode, chunkLog2] of shapes) {
    const data = symbols(random, count, spread, 1 << bits);
    streams.push({ kind: 'stream', bytes: codec.encodeStream(data, { mode, symbolBits: bits, chunkLog2 }), count });
  }
  for (const [dtype, width, count] of [['BF16', 2, 3000], ['F32', 4, 1000], ['F16', 2, 33]]) {
    const elements = new Uint8Array(count * width);
    const view = new DataView(elements.buffer);
    for (let i = 0; i < count; i++) {
      const value = (random.u32() % 2000 - 1000) / 3000;
      if (width === 4) view.setFloat32(i * 4, value, true);
      else view.setUint16(i * 2, new Uint32Array(new Float32Array([value]).buffer)[0] >>> 16, true);
    }
    streams.push({ kind: 'planes', bytes: codec.encodePlanes(elements, dtype), dtype, width, count });
  }
  return streams;
}

/** Offsets of the rANS parts of a stream, when it parses (mutations aim at them). */
function layoutOf(codec, bytes) {
  try {
    const header = codec.parseStreamHeader(bytes);
    return header.mode === 'rans' ? codec.parseRansLayout(bytes, header) : undefined;
  } catch {
    return undefined;
  }
}

const MUTATIONS = {
  'bit flips': (bytes, random) => {
    const out = bytes.slice();
    for (let n = 1 + random.below(8); n > 0; n--) if (out.length) out[random.below(out.length)] ^= 1 << random.below(8);
    return out;
  },
  truncation: (bytes, random) => bytes.slice(0, random.below(bytes.length + 1)),
  'random table': (bytes, random) => {
    const out = bytes.slice();
    const end = Math.min(out.length, 24 + 32 + 2 * 256);
    for (let n = 1 + random.below(6); n > 0; n--) if (end > 24) out[24 + random.below(end - 24)] = random.u32() & 0xff;
    return out;
  },
  'random states': (bytes, random, layout) => {
    const out = bytes.slice();
    if (!layout) return MUTATIONS['bit flips'](bytes, random);
    const view = new DataView(out.buffer);
    for (let n = 1 + random.below(4); n > 0; n--) {
      const at = layout.statesOffset + 4 * random.below(layout.chunkCount * 32);
      view.setUint32(at, random.chance(0.5) ? random.u32() : view.getUint32(at, true) + random.below(9) - 4, true);
    }
    return out;
  },
  'random word counts': (bytes, random, layout) => {
    const out = bytes.slice();
    if (!layout) return MUTATIONS.truncation(bytes, random);
    const view = new DataView(out.buffer);
    const at = layout.wordCountsOffset + 4 * random.below(layout.chunkCount);
    view.setUint32(at, random.chance(0.5) ? random.u32() : view.getUint32(at, true) + random.below(5) - 2, true);
    return out;
  },
  'random header': (bytes, random) => {
    const out = bytes.length >= 24 ? bytes.slice() : new Uint8Array(24);
    const view = new DataView(out.buffer);
    switch (random.below(6)) {
      case 0: out[0] = random.below(3); break;
      case 1: out[1] = [4, 8, random.u32() & 0xff][random.below(3)]; break;
      case 2: out[2] = random.below(7); out[3] = random.below(27); break;
      case 3: view.setUint32(8, random.u32() >>> random.below(32), true); view.setUint32(12, random.chance(0.8) ? 0 : random.u32(), true); break;
      case 4: view.setUint32(16, (random.u32() >>> random.below(32)) & ~3, true); view.setUint32(20, random.chance(0.9) ? 0 : random.u32(), true); break;
      default: view.setUint32(4, random.u32(), true);
    }
    return out;
  },
  'spliced words': (bytes, random, layout) => {
    const out = bytes.slice();
    const from = layout ? layout.wordsOffset : 24;
    for (let n = 1 + random.below(16); n > 0 && out.length > from; n--) out[from + random.below(out.length - from)] = random.u32() & 0xff;
    return out;
  },
  'random bytes': (bytes, random) => {
    const out = new Uint8Array(random.below(512));
    for (let i = 0; i < out.length; i++) out[i] = random.u32() & 0xff;
    if (out.length >= 4 && random.chance(0.7)) out.set(bytes.subarray(0, 4));
    return out;
  },
};

/**
 * Runs `cases` mutated decodes. `codec` provides encodeStream, decodeStream, parseStreamHeader, parseRansLayout,
 * encodePlanes, decodePlanes and the EqzError class. Returns per-mutation outcome counts and the failures
 * (at most 20 kept), each with what went wrong and the input's bytes in hex.
 */
export function runFuzz(codec, { cases = 100000, seed = 1, progress } = {}) {
  const random = generator(seed);
  const inputs = corpus(codec, random);
  const names = Object.keys(MUTATIONS);
  const outcomes = Object.fromEntries(names.map((name) => [name, { rejected: 0, decoded: 0 }]));
  const failures = [];
  let failed = 0;
  let slowest = 0;
  for (let i = 0; i < cases; i++) {
    const input = inputs[random.below(inputs.length)];
    const name = names[random.below(names.length)];
    const layout = input.kind === 'stream' ? layoutOf(codec, input.bytes) : undefined;
    const mutated = MUTATIONS[name](input.bytes, random, layout);
    const started = performance.now();
    try {
      if (input.kind === 'planes') {
        const out = codec.decodePlanes(mutated, input.dtype, input.count);
        if (out.length !== input.count * input.width) throw new Error(`planes decoded ${out.length} bytes`);
      } else {
        const maxSymbols = 4 * input.count + 64;
        const { symbols, byteLength } = codec.decodeStream(mutated, { maxSymbols });
        if (symbols.length > maxSymbols) throw new Error(`${symbols.length} symbols past maxSymbols`);
        if (byteLength > mutated.length || byteLength % 4 !== 0) throw new Error(`byteLength ${byteLength} of ${mutated.length}`);
        if (mutated[1] === 4 && symbols.some((s) => s > 15)) throw new Error('nibble above 15');
      }
      outcomes[name].decoded++;
    } catch (error) {
      if (error instanceof codec.EqzError) {
        outcomes[name].rejected++;
      } else {
        failed++;
        if (failures.length < 20) {
          failures.push({ mutation: name, error: String(error?.stack ?? error), input: Buffer.from(mutated).toString('hex') });
        }
      }
    }
    const elapsed = performance.now() - started;
    slowest = Math.max(slowest, elapsed);
    if (elapsed > 2000) {
      failed++;
      failures.push({ mutation: name, error: `took ${elapsed.toFixed(0)} ms`, input: Buffer.from(mutated).toString('hex') });
    }
    if (progress && (i + 1) % 10000 === 0) progress(i + 1);
  }
  return { cases, outcomes, failed, failures, slowestMs: slowest };
}

async function main() {
  const cases = Number(process.argv[2] ?? 100000);
  const seed = Number(process.argv[3] ?? 1);
  const codec = await import('../dist/src/codec/index.js');
  const { EqzError } = await import('../dist/src/errors.js');
  await codec.initCodec();
  const started = performance.now();
  const result = runFuzz({ ...codec, EqzError }, { cases, seed, progress: (n) => process.stderr.write(`\r${n} cases`) });
  const seconds = (performance.now() - started) / 1000;
  process.stderr.write('\n');
  console.log(`${result.cases} cases in ${seconds.toFixed(1)} s (seed ${seed}); slowest case ${result.slowestMs.toFixed(1)} ms`);
  for (const [name, counts] of Object.entries(result.outcomes)) {
    console.log(`  ${name.padEnd(20)} rejected ${String(counts.rejected).padStart(7)}   decoded ${String(counts.decoded).padStart(7)}`);
  }
  console.log(`failures: ${result.failed}`);
  for (const failure of result.failures) console.log(failure);
  process.exitCode = result.failed === 0 ? 0 : 1;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
