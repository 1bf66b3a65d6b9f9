/**
 * `npm run bench:quant` — rate–distortion and speed of the quantizers (src/quant).
 *
 * For each data set (the two LMs' *_proj linears, the 2-D weights of the other shared weight files, synthetic
 * LLM-like tensors): bits/param with everything stored counted (payload header, raw scales, the coded stream as
 * our rANS stores it) and, as issue 7 counts it, order-0 entropy of the codes + scales; rel L1 and rel L2
 * against the original weights, over the whole set. Methods:
 * - anchors: round-to-nearest INT4/3/2 per channel (codes in the int8 encoding) and per group of 128 (a BF16
 *   scale per group counted), absmax FP8; the reference optimizer at the paper's λ presets and at `--bits`
 *   2, 3, 4 (one λ for the whole set, as the paper uses it);
 * - the default, rd-search, at its λ presets and at `--bits` 2, 2.5, 3, 3.5, 4 with one λ for the set
 *   (rate curves + lambdaForTotalBits, as the converter does);
 * then the anchors' lower convex hull (mixing methods across tensors reaches any point between two: bits and
 * squared error add up) read at 2.5…4 bits beside the default.
 * Throughput: params/s of each optimizer on the adapter in use (printed), and with --full the issue's shapes.
 *
 * The reference optimizer runs its L-BFGS to convergence (≤ 500 iterations) everywhere. On a software adapter
 * small work runs on the CPU path (quantizeTensor's choice: faster there, and rd-search's results are identical).
 *
 * Options: --full (issue 7's synthetic shapes 4096×4096 and 4096×14336 instead of 256×4096 and 128×14336 — rows
 * are independent draws, so fewer rows measure the same distribution — and the throughput shapes up to
 * 8192×28672: for the GPU machine), --device auto|gpu|cpu (cpu with no EQZ_SOFTWARE_ADAPTER set: no WebGPU at
 * all, the TypeScript path), --only <text> (data sets whose name contains it), --throughput-only, --json <file>.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { entropyBitsPerSymbol } from '../src/codec/frequencies.js';
import { acquireGpu, type GpuContext } from '../src/gpu/device.js';
import { castCode, codeValue, roundScale, type QuantFormat } from '../src/quant/grid.js';
import {
  dequantize, lambdaForTotalBits, measureRateCurve, quantizeTensor, REFERENCE_PRESETS, SEARCH_PRESETS, searchSettings,
  type QuantizeOptions, type QuantizedTensor, type RateCurve,
} from '../src/quant/index.js';
import { codedStreamBytes, histogram } from '../src/quant/rate.js';
import { describeCast } from '../src/quant/result.js';
import { referenceObjective } from '../src/quant/reference.js';
import { SearchSession } from '../src/quant/search.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { toFloat32 } from '../src/tensor/dtype.js';
import { syntheticWeights } from '../src/tensor/synthetic.js';


/** ../shared/data beside the project (or $EQZ_SHARED_DATA, e.g. a copy carried to the GPU machine). */
const DATA = process.env.EQZ_SHARED_DATA ?? new URL('../../../shared/data/', import.meta.url).pathname;

interface Matrix {
  name: string;
  rows: number;
  cols: number;
  weights: Float32Array;
}

interface DataSet {
  name: string;
  tensors: Matrix[];
}

/** One method's result over a data set. */
interface Point {
  method: string;
  /** Everything stored, per parameter. */
  bits: number;
  /** Order-0 entropy of the codes + scales, per parameter (issue 7's count). */
  entropyBits: number;
  relL1: number;
  relL2: number;
  seconds: number;
}

/** Sums over a data set's tensors. */
class Tally {
  private bits = 0;
  private entropyBits = 0;
  private params = 0;
  private absError = 0;
  private sqError = 0;
  private absNorm = 0;
  private sqNorm = 0;

  add(tensor: Matrix, decoded: Float32Array, storedBits: number, codes: Uint8Array, scaleBits: number): void {
    this.bits += storedBits;
    this.entropyBits += entropyBitsPerSymbol(histogram(codes)) * codes.length + scaleBits;
    this.params += tensor.weights.length;
    tensor.weights.forEach((w, i) => {
      const e = decoded[i]! - w;
      this.absError += Math.abs(e);
      this.sqError += e * e;
      this.absNorm += Math.abs(w);
      this.sqNorm += w * w;
    });
  }

  addQuantized(tensor: Matrix, result: QuantizedTensor): void {
    const decoded = dequantize(result.codes, result.scales, tensor.rows, tensor.cols, result.format);
    this.add(tensor, decoded, result.bitsPerParam * tensor.weights.length, result.codes, 16 * tensor.rows);
  }

  point(method: string, seconds: number): Point {
    return {
      method, bits: this.bits / this.params, entropyBits: this.entropyBits / this.params,
      relL1: this.absError / this.absNorm, relL2: Math.sqrt(this.sqError / this.sqNorm), seconds,
    };
  }
}

async function timed<T>(work: () => Promise<T>): Promise<[T, number]> {
  const start = performance.now();
  const value = await work();
  return [value, (performance.now() - start) / 1000];
}

/** Round-to-nearest b-bit symmetric codes (±(2^(b−1) − 1)) with a BF16 scale per group of `group` weights of a row. */
function roundToNearest(tensor: Matrix, bits: number, group: number, tally: Tally): void {
  const qmax = 2 ** (bits - 1) - 1;
  const { rows, cols, weights } = tensor;
  if (group >= cols) {
    const scales = new Float32Array(rows);
    for (let r = 0; r < rows; r++) {
      const absMax = weights.subarray(r * cols, (r + 1) * cols).reduce((m, w) => Math.max(m, Math.abs(w)), 0);
      scales[r] = absMax > 0 ? roundScale(absMax / qmax, 'BF16') : 1;
    }
    tally.addQuantized(tensor, describeCast(weights, rows, cols, 'int8', scales, 'BF16'));
    return;
  }
  const codes = new Uint8Array(weights.length);
  const decoded = new Float32Array(weights.length);
  let groups = 0;
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < cols; g += group) {
      const start = r * cols + g;
      const end = r * cols + Math.min(g + group, cols);
      let absMax = 0;
      for (let i = start; i < end; i++) absMax = Math.max(absMax, Math.abs(weights[i]!));
      const scale = absMax > 0 ? roundScale(absMax / qmax, 'BF16') : 1;
      for (let i = start; i < end; i++) {
        codes[i] = castCode('int8', Math.fround(weights[i]! / scale));
        decoded[i] = Math.fround(codeValue('int8', codes[i]!) * scale);
      }
      groups++;
    }
  }
  const storedBits = 8 * (8 + codedStreamBytes(histogram(codes), codes.length)) + 16 * groups;
  tally.add(tensor, decoded, storedBits, codes, 16 * groups);
}

async function anchors(set: DataSet): Promise<Point[]> {
  const points: Point[] = [];
  for (const bits of [4, 3, 2]) {
    for (const group of [Infinity, 128]) {
      const tally = new Tally();
      const [, seconds] = await timed(async () => set.tensors.forEach((tensor) => roundToNearest(tensor, bits, group, tally)));
      points.push(tally.point(`RTN INT${bits} ${group === Infinity ? 'per channel' : 'per group of 128'}`, seconds));
    }
  }
  const absmax = new Tally();
  const [, seconds] = await timed(async () => {
    for (const tensor of set.tensors) {
      absmax.addQuantized(tensor, await quantizeTensor(tensor.weights, tensor.rows, tensor.cols, {
        format: 'fp8-e4m3', optimizer: 'absmax', scaleDtype: 'BF16',
      }));
    }
  });
  points.push(absmax.point('absmax FP8', seconds));
  return points;
}

/** Quantizes every tensor of the set with `options` (λ per tensor from `lambdaOf`). */
async function quantizeSet(set: DataSet, options: QuantizeOptions, method: string): Promise<Point> {
  const tally = new Tally();
  const [, seconds] = await timed(async () => {
    for (const tensor of set.tensors) {
      tally.addQuantized(tensor, await quantizeTensor(tensor.weights, tensor.rows, tensor.cols, { ...options, name: tensor.name }));
    }
  });
  return tally.point(method, seconds);
}

/** The reference optimizer with one λ for the whole set, λ bisected (geometrically) until the set hits `bits` ± 0.05. */
async function referenceAtBits(set: DataSet, base: QuantizeOptions, bits: number): Promise<Point> {
  let low = 1;
  let high = 200;
  let best: Point | undefined;
  let seconds = 0;
  for (let trial = 0; trial < 10; trial++) {
    const lambda = Math.sqrt(low * high);
    const point = await quantizeSet(set, { ...base, lambda, lr: lambda > 30 ? 0.25 : 1 }, `reference --bits ${bits}`);
    seconds += point.seconds;
    if (!best || Math.abs(point.bits - bits) < Math.abs(best.bits - bits)) best = point;
    if (Math.abs(point.bits - bits) <= 0.05) break;
    if (point.bits > bits) low = lambda;
    else high = lambda;
  }
  return { ...best!, seconds };
}

/** λ grid of the rate curves: the part of RATE_CURVE_LAMBDAS that spans 2 to 4 bits/param (about 1.5 … 5.5). */
const CURVE_LAMBDAS = Array.from({ length: 9 }, (_, i) => 2 ** (i - 10));

/** The default with one λ for the set, chosen from rate curves to hit each of `targets`. */
async function defaultAtBits(set: DataSet, base: QuantizeOptions, targets: number[]): Promise<Point[]> {
  const [curves, curveSeconds] = await timed(async () => {
    const list: RateCurve[] = [];
    for (const tensor of set.tensors) list.push(await measureRateCurve(tensor.weights, tensor.rows, tensor.cols, base, CURVE_LAMBDAS));
    return list;
  });
  const points: Point[] = [];
  for (const target of targets) {
    const lambda = lambdaForTotalBits(curves, target);
    const point = await quantizeSet(set, { ...base, lambda }, `rd-search --bits ${target}`);
    points.push({ ...point, seconds: point.seconds + curveSeconds / targets.length });
  }
  return points;
}

/** The lower convex hull of (bits, relL2²) over `points`, read at `bits` (linear between hull vertices). */
function envelopeAt(points: Point[], bits: number): number {
  const sorted = points.map((p) => [p.bits, p.relL2 ** 2] as const).sort((a, b) => a[0] - b[0]);
  const hull: (readonly [number, number])[] = [];
  for (const p of sorted) {
    while (hull.length >= 2) {
      const [a, b] = [hull[hull.length - 2]!, hull[hull.length - 1]!];
      if ((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) <= 0) hull.pop();
      else break;
    }
    hull.push(p);
  }
  if (bits <= hull[0]![0] || bits >= hull[hull.length - 1]![0]) return NaN;
  for (let i = 1; i < hull.length; i++) {
    const [a, b] = [hull[i - 1]!, hull[i]!];
    if (bits <= b[0]) return Math.sqrt(a[1] + ((bits - a[0]) / (b[0] - a[0])) * (b[1] - a[1]));
  }
  return NaN;
}

function table(title: string, points: Point[]): void {
  console.log(`\n### ${title}\n`);
  console.log('| method | bits/param (stored) | entropy + scales | rel L1 | rel L2 | seconds |');
  console.log('|---|---|---|---|---|---|');
  for (const p of points) {
    console.log(`| ${p.method} | ${p.bits.toFixed(3)} | ${p.entropyBits.toFixed(3)} | ${p.relL1.toFixed(4)} | ${p.relL2.toFixed(4)} | ${p.seconds.toFixed(1)} |`);
  }
}

function envelopeTable(anchorPoints: Point[], defaults: Point[]): void {
  console.log('\n| rate | anchors\' envelope rel L2 (stored bits) | rd-search rel L2 at its bits | default vs envelope |');
  console.log('|---|---|---|---|');
  for (const p of defaults) {
    const envelope = envelopeAt(anchorPoints, p.bits);
    const change = Number.isNaN(envelope) ? 'outside the anchors' : `${(100 * (p.relL2 / envelope - 1)).toFixed(1)} %`;
    console.log(`| ${p.method.replace('rd-search ', '')} → ${p.bits.toFixed(3)} | ${envelope.toFixed(4)} | ${p.relL2.toFixed(4)} | ${change} |`);
  }
}

/** The kept 2-D float tensors of a safetensors file; none (with a note) when the file is not there. */
async function loadSafetensors(path: string, keep: (name: string, shape: number[]) => boolean): Promise<Matrix[]> {
  if (!existsSync(path)) {
    console.log(`(${path} not found: skipped)`);
    return [];
  }
  const file = await SafetensorsFile.open(path);
  try {
    const tensors: Matrix[] = [];
    for (const entry of file.tensors) {
      if (!['F32', 'F16', 'BF16'].includes(entry.dtype) || entry.shape.length !== 2 || !keep(entry.name, entry.shape)) continue;
      const weights = toFloat32(await file.read(entry), entry.dtype);
      tensors.push({ name: entry.name, rows: entry.shape[0]!, cols: entry.shape[1]!, weights });
    }
    return tensors;
  } finally {
    await file.close();
  }
}

/** The data sets whose name contains `only` (all when it is undefined); empty ones are dropped. */
async function dataSets(full: boolean, only: string | undefined): Promise<DataSet[]> {
  const sets: DataSet[] = [];
  for (const model of ['stories260K', 'babyllama-tok105']) {
    const tensors = await loadSafetensors(`${DATA}models/${model}/model.safetensors`, (name) => /_proj\.weight$/.test(name));
    sets.push({ name: `${model} (*_proj)`, tensors });
  }
  const files: Matrix[] = [];
  for (const file of ['faceres-deep-f32', 'ppocrv4-rec-f32', 'movenet-lightning-f16', 'silero-vad-v5']) {
    const tensors = await loadSafetensors(`${DATA}weights/${file}.safetensors`, (_, shape) => shape[0]! >= 2 && shape[1]! >= 2 && shape[0]! * shape[1]! >= 1024);
    files.push(...tensors.map((tensor) => ({ ...tensor, name: `${file}:${tensor.name}` })));
  }
  sets.push({ name: 'weight files (2-D weights)', tensors: files });
  const shapes: [number, number][] = full ? [[4096, 4096], [4096, 14336]] : [[256, 4096], [128, 14336]];
  for (const [rows, cols] of shapes) {
    const weights = syntheticWeights(rows, cols, { seed: rows + cols });
    sets.push({ name: `synthetic ${rows}×${cols} (Student-t ν=5, row spread, outlier rows)`, tensors: [{ name: 'synthetic', rows, cols, weights }] });
  }
  return sets.filter((set) => set.tensors.length > 0 && (only === undefined || set.name.includes(only)));
}

/** Median seconds of `repeats` runs of `work`, after warm-up runs for at least `warmUp` seconds (clocks ramp up). */
async function medianSeconds(work: () => Promise<unknown>, repeats: number, warmUp: number): Promise<number> {
  const start = performance.now();
  do await work(); while (performance.now() - start < warmUp * 1000);
  const seconds: number[] = [];
  for (let i = 0; i < repeats; i++) seconds.push((await timed(work))[1]);
  seconds.sort((a, b) => a - b);
  return seconds[Math.floor(repeats / 2)]!;
}

/** rd-search as the throughput table runs it: the 3-bit preset. */
const THROUGHPUT_OPTIONS: QuantizeOptions = { format: 'int8', optimizer: 'rd-search', scaleDtype: 'BF16', lambda: SEARCH_PRESETS[3] };

/** A rate in params/s, as G or M. */
function rate(perSecond: number): string {
  return perSecond >= 1e9 ? `${(perSecond / 1e9).toFixed(2)} G` : `${(perSecond / 1e6).toFixed(2)} M`;
}

/** Issue 7's reference figures (PyTorch, H100, λ 14.5, bf16) in params/s, for the shapes it names. */
const REFERENCE_TORCH: Record<string, number> = { '4096×4096': 149e6, '4096×14336': 281e6, '8192×28672': 360e6 };

async function throughput(gpu: GpuContext | null, full: boolean): Promise<void> {
  console.log(`\n## Throughput (${gpu ? gpu.description : 'CPU, TypeScript path'})\n`);
  console.log('Scale optimization only (tensor resident on the device; codes not read back); median of 5 runs after warming up.\n');
  console.log('| optimizer | shape | params/s | PyTorch reference on an H100 (issue 7) |');
  console.log('|---|---|---|---|');
  const shapes: [number, number][] = full ? [[4096, 4096], [4096, 14336], [8192, 28672]] : gpu ? [[1024, 4096]] : [[256, 4096]];
  for (const [rows, cols] of shapes) {
    const weights = syntheticWeights(Math.min(rows, 1024), cols, { seed: 5 });
    const tiled = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) tiled.set(weights.subarray((r % 1024) * cols, (r % 1024 + 1) * cols), r * cols);
    const shape = `${rows}×${cols}`;
    for (const format of ['int8', 'fp8-e4m3'] as QuantFormat[]) {
      const session = await SearchSession.open(tiled, rows, cols, gpu);
      const settings = searchSettings({ ...THROUGHPUT_OPTIONS, format }, format);
      const seconds = await medianSeconds(() => session.run(settings, false), 5, gpu && !gpu.software ? 2 : 0);
      session.release();
      const torch = REFERENCE_TORCH[shape];
      console.log(`| rd-search ${format} | ${shape} | ${rate(rows * cols / seconds)} | ${torch ? `${rate(torch)} (ours ×${(rows * cols / seconds / torch).toFixed(1)})` : ''} |`);
    }
    if (gpu?.software) {
      // The TypeScript path beside the software adapter, on the first 256 rows.
      const cpuRows = Math.min(rows, 256);
      const session = await SearchSession.open(tiled.subarray(0, cpuRows * cols), cpuRows, cols, null);
      const settings = searchSettings(THROUGHPUT_OPTIONS, 'int8');
      const seconds = await medianSeconds(() => session.run(settings, false), 3, 0);
      console.log(`| rd-search int8, CPU (TypeScript) path | ${cpuRows}×${cols} | ${rate(cpuRows * cols / seconds)} | |`);
    }
    const referenceRows = gpu && !gpu.software ? rows : Math.min(rows, 256);
    const referenceWeights = tiled.subarray(0, referenceRows * cols);
    const objective = await referenceObjective(referenceWeights, referenceRows, cols, {
      format: 'fp8-e4m3', lambda: REFERENCE_PRESETS[3].lambda, scaleDtype: 'BF16', gpu,
    });
    const theta = new Float64Array(referenceRows).fill(-8);
    const seconds = await medianSeconds(() => objective.evaluate(theta), 5, gpu && !gpu.software ? 1 : 0);
    objective.release();
    console.log(`| reference: one loss + gradient evaluation (L-BFGS makes 1–2 per iteration) | ${referenceRows}×${cols} | ${rate(referenceRows * cols / seconds)} | |`);
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const full = argv.includes('--full');
  const deviceArg = argv[argv.indexOf('--device') + 1];
  const device = argv.includes('--device') ? deviceArg as 'auto' | 'gpu' | 'cpu' : 'auto';
  const jsonPath = argv.includes('--json') ? argv[argv.indexOf('--json') + 1] : undefined;
  const only = argv.includes('--only') ? argv[argv.indexOf('--only') + 1] : undefined;
  const rateDistortion = !argv.includes('--throughput-only');
  const gpu = device === 'cpu' && !process.env.EQZ_SOFTWARE_ADAPTER ? null : await acquireGpu(device === 'cpu' ? 'cpu' : device);
  console.log(`# bench:quant — ${gpu ? gpu.description : 'CPU (TypeScript path)'}${full ? ', full shapes' : ''}`);
  if (rateDistortion) {
    console.log('\nBits count everything stored (payload header, BF16 scales, coded stream); "entropy + scales" is issue 7\'s');
    console.log('count (order-0 entropy of the codes + 16 bits per scale). rel L1/L2 over the whole set.');
  }
  const results: Record<string, Point[]> = {};
  for (const set of rateDistortion ? await dataSets(full, only) : []) {
    const referenceBase: QuantizeOptions = { format: 'fp8-e4m3', optimizer: 'reference', scaleDtype: 'BF16', gpu };
    const searchBase: QuantizeOptions = { format: 'int8', optimizer: 'rd-search', scaleDtype: 'BF16', gpu };
    const points = await anchors(set);
    for (const { lambda, lr } of Object.values(REFERENCE_PRESETS).reverse()) {
      points.push(await quantizeSet(set, { ...referenceBase, lambda, lr }, `reference FP8 λ ${lambda}${lr !== 1 ? `, lr ${lr}` : ''}`));
    }
    for (const bits of [4, 3, 2]) points.push(await referenceAtBits(set, referenceBase, bits));
    const anchorPoints = [...points];
    for (const lambda of Object.values(SEARCH_PRESETS).reverse()) points.push(await quantizeSet(set, { ...searchBase, lambda }, `rd-search λ ${lambda}`));
    const defaults = await defaultAtBits(set, searchBase, [4, 3.5, 3, 2.5, 2]);
    points.push(...defaults);
    const params = set.tensors.reduce((n, t) => n + t.weights.length, 0);
    table(`${set.name}: ${set.tensors.length} tensors, ${params} params`, points);
    envelopeTable(anchorPoints, defaults);
    results[set.name] = points;
  }
  await throughput(gpu, full);
  if (jsonPath) writeFileSync(jsonPath, JSON.stringify({ device: gpu?.description ?? 'cpu', results }, null, 1));
  gpu?.device.destroy();
}

await main();
