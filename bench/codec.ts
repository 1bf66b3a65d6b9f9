/**
 * Codec benchmark: eqz's WASM rANS codec against fflate (deflate 6/9, inflate) and the zstd command (-3, -19, -d)
 * on the same bytes, printed as one table, then the lossless-BF16 size over ../shared/data.
 *
 *   npm run bench:codec            (builds the WASM module and the TypeScript first)
 *
 * Data sets: FP8 E4M3 codes of synthetic heavy-tailed weights quantized per output channel at about 2, 3 and 4
 * bits of entropy; the real F32/F16 weights of ../shared/data rounded to BF16 (one planes payload per tensor, as
 * the container stores them); a synthetic LLM-like BF16 matrix. Throughput is MB/s of uncompressed bytes, best of
 * several runs, wall clock, one thread unless the column says otherwise. zstd runs as a separate process on a
 * temporary file, and its figures include process start and file I/O: nothing is subtracted.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { deflateSync, inflateSync } from 'fflate';
import {
  decodePlanes, decodeStream, encodeLossless, encodeStream, entropyBitsPerSymbol, initCodec,
} from '../src/codec/index.js';
import { CodecPool } from '../src/codec/pool.js';
import type { Dtype } from '../src/container/format.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { castE4M3 } from '../src/quant/grid.js';
import { fromFloat32, toFloat32 } from '../src/tensor/dtype.js';
import { syntheticWeights } from '../src/tensor/synthetic.js';

const DATA = resolve(process.env.EQZ_DATA ?? '../shared/data');

/** A benchmark input: the tensors of one data set, coded tensor by tensor like the container does. */
interface DataSet {
  name: string;
  kind: 'fp8' | 'bf16';
  tensors: Uint8Array[];
  /** The file each tensor came from (real data). */
  sources?: string[];
}

function totalBytes(set: DataSet): number {
  return set.tensors.reduce((sum, t) => sum + t.length, 0);
}

function concatenated(set: DataSet): Uint8Array {
  const out = new Uint8Array(totalBytes(set));
  let at = 0;
  for (const t of set.tensors) {
    out.set(t, at);
    at += t.length;
  }
  return out;
}

function histogram(bytes: Uint8Array, stride = 1): Float64Array {
  const counts = new Float64Array(256);
  for (let i = 0; i < bytes.length; i += stride) counts[bytes[i]!]!++;
  return counts;
}

/** FP8 E4M3 codes of 2048 × 4096 synthetic weights, per-row scales tuned so the codes carry ~`bits` of entropy. */
function fp8DataSet(bits: number, seed: number): DataSet {
  const rows = 2048;
  const cols = 4096;
  const weights = syntheticWeights(rows, cols, { seed });
  const rowMax = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) rowMax[r] = Math.max(rowMax[r]!, Math.abs(weights[r * cols + c]!));
  }
  const quantize = (stretch: number, step: number): Uint8Array => {
    const codes = new Uint8Array(Math.ceil(weights.length / step));
    for (let i = 0, k = 0; i < weights.length; i += step, k++) {
      const scale = (rowMax[Math.floor(i / cols)]! / 448) * stretch;
      codes[k] = castE4M3(weights[i]! / scale);
    }
    return codes;
  };
  // Coarser scales (a larger stretch) leave fewer distinct codes: bisect log(stretch) on a 1/31 sample.
  let low = 0;
  let high = 40;
  for (let step = 0; step < 30; step++) {
    const middle = (low + high) / 2;
    if (entropyBitsPerSymbol(histogram(quantize(Math.exp(middle), 31))) > bits) low = middle;
    else high = middle;
  }
  return { name: `FP8 E4M3 ~${bits} bit`, kind: 'fp8', tensors: [quantize(Math.exp((low + high) / 2), 1)] };
}

function safetensorsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return safetensorsFiles(path);
    return name.endsWith('.safetensors') ? [path] : [];
  });
}

async function realBf16DataSet(): Promise<DataSet> {
  const tensors: Uint8Array[] = [];
  const sources: string[] = [];
  for (const path of safetensorsFiles(DATA).sort()) {
    const file = await SafetensorsFile.open(path);
    try {
      for (const tensor of file.tensors) {
        if (tensor.dtype !== 'F32' && tensor.dtype !== 'F16') continue;
        tensors.push(fromFloat32(toFloat32(await file.read(tensor), tensor.dtype), 'BF16'));
        sources.push(path.slice(DATA.length + 1));
      }
    } finally {
      await file.close();
    }
  }
  return { name: 'BF16 real (shared/data)', kind: 'bf16', tensors, sources };
}

function syntheticBf16DataSet(): DataSet {
  return { name: 'BF16 synthetic LLM 4096x2048', kind: 'bf16', tensors: [fromFloat32(syntheticWeights(4096, 2048, { seed: 42 }), 'BF16')] };
}

/** Order-0 entropy of the data set in bits per element: of the codes (FP8), of both BF16 planes per tensor. */
function entropyBits(set: DataSet): number {
  let bits = 0;
  let elements = 0;
  for (const tensor of set.tensors) {
    if (set.kind === 'fp8') {
      bits += entropyBitsPerSymbol(histogram(tensor)) * tensor.length;
      elements += tensor.length;
      continue;
    }
    const count = tensor.length / 2;
    const exponent = new Float64Array(256);
    const rest = new Float64Array(256);
    for (let i = 0; i < count; i++) {
      const v = tensor[2 * i]! | (tensor[2 * i + 1]! << 8);
      exponent[(v >> 7) & 0xff]!++;
      rest[((v >> 8) & 0x80) | (v & 0x7f)]!++;
    }
    bits += (entropyBitsPerSymbol(exponent) + entropyBitsPerSymbol(rest)) * count;
    elements += count;
  }
  return bits / elements;
}

/** Milliseconds of CPU time this process has used (all its threads). */
function cpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

/** Best wall-clock milliseconds of `runs` calls (after one warm-up call when `warm`). */
function best(runs: number, work: () => void, warm = true): number {
  return bestOf(runs, work, warm).wall;
}

/**
 * Best wall-clock and best CPU-time milliseconds of `runs` calls. On a machine shared with other work the CPU
 * time shows what the code costs when the scheduler takes the core away (single-threaded work only).
 */
function bestOf(runs: number, work: () => void, warm = true): { wall: number; cpu: number } {
  if (warm) work();
  let wall = Infinity;
  let cpu = Infinity;
  for (let i = 0; i < runs; i++) {
    const startCpu = cpuMs();
    const start = performance.now();
    work();
    wall = Math.min(wall, performance.now() - start);
    cpu = Math.min(cpu, cpuMs() - startCpu);
  }
  return { wall, cpu };
}

async function bestAsync(runs: number, work: () => Promise<unknown>): Promise<number> {
  await work();
  let fastest = Infinity;
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await work();
    fastest = Math.min(fastest, performance.now() - start);
  }
  return fastest;
}

const megabytesPerSecond = (bytes: number, ms: number): number => bytes / ms / 1000;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

interface Row {
  name: string;
  megabytes: number;
  entropy: number;
  sizeOverEntropy: number;
  eqzRatio: number;
  eqzEncode: number;
  eqzDecode: number;
  eqzDecode2: number;
  /** The same single-thread figures by CPU time instead of wall clock. */
  eqzEncodeCpu: number;
  eqzDecodeCpu: number;
  deflate6: [number, number];
  deflate9: [number, number];
  inflate: number;
  zstd3: [number, number];
  zstd19: [number, number];
  zstdDecode: number;
}

/** One tensor as eqz stores it: its raw bytes, or a coded payload (a stream for FP8 codes, planes for BF16). */
interface Coded {
  raw: boolean;
  payload: Uint8Array;
}

function dtypeOf(set: DataSet): Dtype {
  return set.kind === 'fp8' ? 'F8_E4M3' : 'BF16';
}

async function measure(set: DataSet, pool: CodecPool, scratch: string): Promise<Row> {
  const bytes = totalBytes(set);
  const dtype = dtypeOf(set);
  const elementBytes = set.kind === 'fp8' ? 1 : 2;

  // eqz: FP8 codes are one coded stream per tensor; BF16 tensors are planes payloads (or raw when not smaller).
  const encodeOne = (tensor: Uint8Array): Coded => {
    if (set.kind === 'fp8') return { raw: false, payload: encodeStream(tensor) };
    const { encoding, payload } = encodeLossless(tensor, dtype);
    return { raw: encoding === 'raw', payload };
  };
  let encoded: Coded[] = [];
  const eqzEncodeMs = bestOf(3, () => { encoded = set.tensors.map(encodeOne); });
  const outputs = set.tensors.map((t) => new Uint8Array(t.length));
  const decodeOne = (payload: Coded, index: number): void => {
    const into = outputs[index]!;
    if (payload.raw) into.set(payload.payload);
    else if (set.kind === 'fp8') decodeStream(payload.payload, { into });
    else decodePlanes(payload.payload, dtype, into.length / elementBytes, into);
  };
  const eqzDecodeMs = bestOf(5, () => encoded.forEach(decodeOne));
  set.tensors.forEach((t, i) => { if (!sameBytes(outputs[i]!, t)) throw new Error(`${set.name}: eqz round trip differs`); });
  const eqzBytes = encoded.reduce((sum, e) => sum + e.payload.length, 0);

  // The same decode on two worker threads, inputs and outputs in shared memory (as a reader would place them).
  const sharedPayloads = encoded.map((e) => {
    const copy = new Uint8Array(new SharedArrayBuffer(e.payload.length));
    copy.set(e.payload);
    return { raw: e.raw, payload: copy };
  });
  const sharedOutputs = set.tensors.map((t) => new Uint8Array(new SharedArrayBuffer(t.length)));
  const eqzDecode2Ms = await bestAsync(5, () => Promise.all(sharedPayloads.map((e, i) => {
    const into = sharedOutputs[i]!;
    if (e.raw) return into.set(e.payload);
    return set.kind === 'fp8' ? pool.decodeStream(e.payload, { into }) : pool.decodePlanes(e.payload, dtype, into.length / 2, into);
  })));
  set.tensors.forEach((t, i) => { if (!sameBytes(sharedOutputs[i]!, t)) throw new Error(`${set.name}: 2-thread round trip differs`); });

  // Peers compress the data set as one buffer (their best case: one dictionary across tensors).
  const whole = concatenated(set);
  const deflate = (level: 6 | 9): [number, number] => {
    let out = new Uint8Array(0);
    const ms = best(level === 6 ? 2 : 1, () => { out = deflateSync(whole, { level }); }, level === 6);
    return [whole.length / out.length, megabytesPerSecond(bytes, ms)];
  };
  const deflate6 = deflate(6);
  const deflate9 = deflate(9);
  const deflated = deflateSync(whole, { level: 6 });
  let inflated = new Uint8Array(0);
  const inflateMs = best(3, () => { inflated = inflateSync(deflated); });
  if (!sameBytes(inflated, whole)) throw new Error('inflate round trip differs');

  const input = join(scratch, 'input.bin');
  const packed = join(scratch, 'input.zst');
  const unpacked = join(scratch, 'output.bin');
  writeFileSync(input, whole);
  const zstd = (level: number, runs: number): [number, number] => {
    const ms = best(runs, () => { execFileSync('zstd', [`-${level}`, '-q', '-f', '-T1', '-o', packed, input]); }, false);
    return [whole.length / statSync(packed).size, megabytesPerSecond(bytes, ms)];
  };
  const zstd19 = zstd(19, 1);
  const zstd3 = zstd(3, 3);
  const zstdDecodeMs = best(3, () => { execFileSync('zstd', ['-d', '-q', '-f', '-o', unpacked, packed]); }, false);
  if (!sameBytes(readFileSync(unpacked), whole)) throw new Error('zstd round trip differs');

  const entropy = entropyBits(set);
  return {
    name: set.name,
    megabytes: bytes / 1e6,
    entropy,
    sizeOverEntropy: (eqzBytes * 8) / (entropy * (bytes / elementBytes)),
    eqzRatio: bytes / eqzBytes,
    eqzEncode: megabytesPerSecond(bytes, eqzEncodeMs.wall),
    eqzDecode: megabytesPerSecond(bytes, eqzDecodeMs.wall),
    eqzEncodeCpu: megabytesPerSecond(bytes, eqzEncodeMs.cpu),
    eqzDecodeCpu: megabytesPerSecond(bytes, eqzDecodeMs.cpu),
    eqzDecode2: megabytesPerSecond(bytes, eqzDecode2Ms),
    deflate6,
    deflate9,
    inflate: megabytesPerSecond(bytes, inflateMs),
    zstd3,
    zstd19,
    zstdDecode: megabytesPerSecond(bytes, zstdDecodeMs),
  };
}

function printTable(rows: Row[]): void {
  const header = [
    'data set', 'MB', 'entropy b/elem', 'eqz size/entropy', 'eqz ratio', 'eqz enc MB/s', 'eqz dec MB/s',
    'eqz dec 2T MB/s', 'deflate-6 ratio', 'deflate-6 MB/s', 'deflate-9 ratio', 'deflate-9 MB/s', 'inflate MB/s',
    'zstd-3 ratio', 'zstd-3 MB/s', 'zstd-19 ratio', 'zstd-19 MB/s', 'zstd -d MB/s',
  ];
  const f = (x: number, digits: number): string => x.toFixed(digits);
  const lines = rows.map((r) => [
    r.name, f(r.megabytes, 1), f(r.entropy, 3), f(r.sizeOverEntropy, 4), f(r.eqzRatio, 3), f(r.eqzEncode, 0),
    f(r.eqzDecode, 0), f(r.eqzDecode2, 0), f(r.deflate6[0], 3), f(r.deflate6[1], 0), f(r.deflate9[0], 3),
    f(r.deflate9[1], 1), f(r.inflate, 0), f(r.zstd3[0], 3), f(r.zstd3[1], 0), f(r.zstd19[0], 3), f(r.zstd19[1], 1),
    f(r.zstdDecode, 0),
  ]);
  console.log(`| ${header.join(' | ')} |`);
  console.log(`|${header.map(() => '---').join('|')}|`);
  for (const line of lines) console.log(`| ${line.join(' | ')} |`);
  console.log('ratio = uncompressed / compressed; MB/s of uncompressed bytes; 2T = two worker threads.');
  console.log(`eqz single-thread by CPU time (enc / dec MB/s): ${rows.map((r) => `${r.name} ${r.eqzEncodeCpu.toFixed(0)} / ${r.eqzDecodeCpu.toFixed(0)}`).join('; ')}`);
}

/** Stored size of every tensor (raw or planes, whichever encodeLossless picks) as a fraction of the BF16 size. */
function losslessFraction(set: DataSet): { fraction: number; exponentFloor: number } {
  let stored = 0;
  let floorBits = 0;
  for (const tensor of set.tensors) {
    stored += encodeLossless(tensor, 'BF16').payload.length;
    const exponent = new Float64Array(256);
    for (let i = 0; i < tensor.length; i += 2) exponent[((tensor[i]! | (tensor[i + 1]! << 8)) >> 7) & 0xff]!++;
    floorBits += (entropyBitsPerSymbol(exponent) + 8) * (tensor.length / 2);
  }
  return { fraction: stored / totalBytes(set), exponentFloor: floorBits / 8 / totalBytes(set) };
}

async function main(): Promise<void> {
  await initCodec();
  const pool = await CodecPool.create(2);
  const scratch = mkdtempSync(join(tmpdir(), 'eqz-bench-'));
  try {
    const sets = [fp8DataSet(2, 1), fp8DataSet(3, 2), fp8DataSet(4, 3), await realBf16DataSet(), syntheticBf16DataSet()];
    const rows: Row[] = [];
    for (const set of sets) {
      process.stderr.write(`measuring ${set.name} ...\n`);
      rows.push(await measure(set, pool, scratch));
    }
    printTable(rows);
    console.log(`Load average (1/5/15 min) at the end: ${loadavg().map((l) => l.toFixed(2)).join(' / ')} on ${availableParallelism()} cores `
      + '(other processes compete for the CPU when it exceeds the core count).');
    console.log('');
    for (const set of sets.filter((s) => s.kind === 'bf16')) {
      const { fraction, exponentFloor } = losslessFraction(set);
      console.log(`Lossless BF16, ${set.name}: stored / BF16 size = ${fraction.toFixed(4)} `
        + `(order-0 exponent plane + raw sign/mantissa, no overhead: ${exponentFloor.toFixed(4)}; target ≤ 0.665)`);
      for (const source of new Set(set.sources ?? [])) {
        const part = { ...set, tensors: set.tensors.filter((_, i) => set.sources![i] === source) };
        const perFile = losslessFraction(part);
        console.log(`  ${source}: ${perFile.fraction.toFixed(4)} (floor ${perFile.exponentFloor.toFixed(4)}, `
          + `${part.tensors.length} tensors, ${(totalBytes(part) / 1e6).toFixed(2)} MB)`);
      }
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
    await pool.close();
  }
}

await main();
