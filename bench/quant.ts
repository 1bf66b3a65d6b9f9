/**
 * `npm run bench:quant` — rate–distortion and speed of the quantizers: the default (`eqz convert --bits`) against
 * issue 7's anchors, on the same tensors, by our own code.
 *
 * For each data set (the two LMs' *_proj linears, the 2-D weights of the other shared weight files, synthetic
 * LLM-like tensors): bits/param with everything stored counted (payload header, parameters, the coded stream as our
 * rANS stores it) and, as issue 7 counts it, order-0 entropy of the codes + the per-group parameters; rel L1 and
 * rel L2 against the original weights over the whole set; for the LMs also the mean KL(original ‖ quantized) per
 * token and the perplexity over the shared token file (src/eval, CPU backend: the original's logits are computed
 * once and every point is scored against them). Methods:
 * - anchors: round-to-nearest INT4/3/2 per channel and per group of 128 (BF16 scales), absmax FP8, HQQ INT4/INT3
 *   (groups of 64), NF4 (blocks of 64), NVFP4 absmax (bench/anchors.ts), the reference optimizer at the paper's
 *   λ presets and at 2, 3, 4 bits (one λ for the whole set, as the paper uses it);
 * - the default: what `eqz convert <input> -o x.eqz --bits b` writes, run in-process with the CLI's defaults and
 *   read back from the .eqz (so any change to the converter's quantizer shows here), for b = 2 … 4; its bits/param
 *   are the set's stored payload bytes (`eqz inspect`'s quantized total) × 8 / params.
 * Then the anchors' envelope: the lower convex hull of their (bits, metric) points — mixing two methods across
 * tensors reaches any point between them — read at each default point's bits, for rel L2 and KL, with stored bits
 * and under issue 7's count (beside the envelope the issue published).
 * Throughput: params/s of each optimizer on the adapter in use (printed), and with --full the issue's shapes.
 *
 * The reference optimizer runs its L-BFGS to convergence (≤ 500 iterations) everywhere. On a software adapter
 * small work runs on the CPU path (quantizeTensor's choice: faster there, and rd-search's results are identical).
 *
 * Options: --full (issue 7's synthetic shapes 4096×4096 and 4096×14336 instead of 256×4096 and 128×14336 — rows
 * are independent draws, so fewer rows measure the same distribution — and the throughput shapes up to
 * 8192×28672: for the GPU machine), --device auto|gpu|cpu (cpu with no EQZ_SOFTWARE_ADAPTER set: no WebGPU for the
 * anchors, the TypeScript path; the converter runs on the software adapter), --only <text> (data sets whose name
 * contains it), --eval-tokens <N> (score only the first N tokens of each token file; default all),
 * --throughput-only, --json <file> (every point, envelope and throughput row).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main as eqzCli } from '../src/cli/main.js';
import { initCodec } from '../src/codec/index.js';
import { fileSource } from '../src/container/file-source.js';
import { EqzReader } from '../src/container/reader.js';
import type { TensorEntry } from '../src/container/table.js';
import { decodePayload } from '../src/decode/tensor.js';
import { decodeScaledPayload } from '../src/encodings/scaled.js';
import { referenceEvaluator, type EvaluationResult, type ReferenceEvaluator } from '../src/eval/evaluate.js';
import { readTokenFile } from '../src/eval/tokens.js';
import { openWeightSource, weightSourceFromModelFolder, type ClosableWeightSource } from '../src/eval/weight-sources.js';
import type { WeightSource } from '../src/eval/weights.js';
import { acquireGpu, type GpuContext } from '../src/gpu/device.js';
import { writeModel } from '../src/io/model-folder.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { decodeNvfp4Payload } from '../src/nvfp4/payload.js';
import { unpackCodes } from '../src/nvfp4/e2m1.js';
import type { QuantFormat } from '../src/quant/grid.js';
import {
  dequantize, quantizeTensor, REFERENCE_PRESETS, SEARCH_PRESETS, searchSettings, type QuantizeOptions, type QuantizedTensor,
} from '../src/quant/index.js';
import { referenceObjective } from '../src/quant/reference.js';
import { SearchSession } from '../src/quant/search.js';
import { fromFloat32, toFloat32 } from '../src/tensor/dtype.js';
import { syntheticWeights } from '../src/tensor/synthetic.js';
import { entropyAndParameterBits, hqq, nf4, nvfp4Absmax, roundToNearest, type AnchorTensor } from './anchors.js';

/** ../shared/data beside the project (or $EQZ_SHARED_DATA, e.g. a copy carried to the GPU machine). */
const DATA = process.env.EQZ_SHARED_DATA ?? new URL('../../../shared/data/', import.meta.url).pathname;

interface Matrix {
  name: string;
  rows: number;
  cols: number;
  weights: Float32Array;
}

/** A shared LM whose *_proj linears are a data set: every point of it is also scored by KL and perplexity. */
interface LanguageModel {
  /** The Hugging Face folder `eqz convert` reads. */
  folder: string;
  original: ClosableWeightSource;
  evaluator: ReferenceEvaluator;
  /** What transformers computes on the token file (its JSON description), for comparison. */
  transformersPerplexity?: number;
}

interface DataSet {
  name: string;
  tensors: Matrix[];
  model?: LanguageModel;
}

/** One method's result over a data set. */
interface Point {
  method: string;
  /** Everything stored, per parameter. */
  bits: number;
  /** Order-0 entropy of the codes + the per-group parameters, per parameter (issue 7's count). */
  entropyBits: number;
  relL1: number;
  relL2: number;
  /** Seconds the quantization took. */
  seconds: number;
  /** Mean KL(original ‖ quantized) per token, nats (LMs only). */
  kl?: number;
  perplexity?: number;
  evalSeconds?: number;
  /** Lines the converter printed (default points only): the λ it chose, protected layers. */
  converterReport?: string[];
}

/** A point and the dequantized tensors it was measured on (kept for the LMs' evaluation only). */
interface Measured {
  point: Point;
  decoded: Map<string, Float32Array>;
}

/** Sums over a data set's tensors. */
class Tally {
  readonly decoded = new Map<string, Float32Array>();
  private bits = 0;
  private entropyBits = 0;
  private params = 0;
  private absError = 0;
  private sqError = 0;
  private absNorm = 0;
  private sqNorm = 0;

  constructor(private readonly keepDecoded: boolean) {}

  add(tensor: Matrix, stored: AnchorTensor): void {
    this.bits += stored.storedBits;
    this.entropyBits += entropyAndParameterBits(stored);
    this.params += tensor.weights.length;
    const { weights } = tensor;
    for (let i = 0; i < weights.length; i++) {
      const w = weights[i]!;
      const e = stored.decoded[i]! - w;
      this.absError += Math.abs(e);
      this.sqError += e * e;
      this.absNorm += Math.abs(w);
      this.sqNorm += w * w;
    }
    if (this.keepDecoded) this.decoded.set(tensor.name, stored.decoded);
  }

  measured(method: string, seconds: number): Measured {
    const point = {
      method, bits: this.bits / this.params, entropyBits: this.entropyBits / this.params,
      relL1: this.absError / this.absNorm, relL2: Math.sqrt(this.sqError / this.sqNorm), seconds,
    };
    return { point, decoded: this.decoded };
  }
}

/** A result of src/quant as an anchor: its decoding, codes, stored bits, and a 16-bit scale per row. */
function fromQuantized(tensor: Matrix, result: QuantizedTensor): AnchorTensor {
  return {
    decoded: dequantize(result.codes, result.scales, tensor.rows, tensor.cols, result.format),
    codes: result.codes,
    storedBits: result.bitsPerParam * tensor.weights.length,
    parameterBits: 16 * tensor.rows,
  };
}

/** Quantizes every tensor of the set with `quantize` and sums up (seconds: the quantization only). */
async function measure(set: DataSet, method: string, quantize: (tensor: Matrix) => AnchorTensor | Promise<AnchorTensor>): Promise<Measured> {
  const tally = new Tally(set.model !== undefined);
  let seconds = 0;
  for (const tensor of set.tensors) {
    const start = performance.now();
    const stored = await quantize(tensor);
    seconds += (performance.now() - start) / 1000;
    tally.add(tensor, stored);
  }
  return tally.measured(method, seconds);
}

/** `original` with the tensors of `replaced` swapped in (the quantized model, in memory). */
function withTensors(original: WeightSource, replaced: ReadonlyMap<string, Float32Array>): WeightSource {
  return {
    config: original.config,
    names: () => original.names(),
    shape: (name) => original.shape(name),
    loadF32: async (name) => replaced.get(name) ?? original.loadF32(name),
  };
}

/** Adds KL and perplexity of the model `open` gives against the set's original (nothing for a set that is no LM). */
async function scoreModel(set: DataSet, point: Point, open: () => Promise<WeightSource & { close?: () => Promise<void> }>): Promise<Point> {
  if (!set.model) return point;
  const start = performance.now();
  const source = await open();
  let result: EvaluationResult;
  try {
    result = await set.model.evaluator.evaluate(source);
  } finally {
    await source.close?.();
  }
  const scored = { ...point, kl: result.klMean, perplexity: result.perplexity, evalSeconds: (performance.now() - start) / 1000 };
  console.error(`  ${set.name}: ${point.method}: KL ${result.klMean!.toFixed(4)}, perplexity ${result.perplexity.toFixed(4)} (${scored.evalSeconds.toFixed(0)} s)`);
  return scored;
}

function scoreMeasured(set: DataSet, { point, decoded }: Measured): Promise<Point> {
  return scoreModel(set, point, async () => withTensors(set.model!.original, decoded));
}

/** The reference optimizer with one λ for the whole set, λ bisected (geometrically) until the set hits `bits` ± 0.05. */
async function referenceAtBits(set: DataSet, base: QuantizeOptions, bits: number): Promise<Measured> {
  let low = 1;
  let high = 200;
  let best: Measured | undefined;
  let seconds = 0;
  for (let trial = 0; trial < 10; trial++) {
    const lambda = Math.sqrt(low * high);
    const options = { ...base, lambda, lr: lambda > 30 ? 0.25 : 1 };
    const measured = await measure(set, `reference --bits ${bits}`, async (t) => fromQuantized(t, await quantizeTensor(t.weights, t.rows, t.cols, { ...options, name: t.name })));
    seconds += measured.point.seconds;
    if (!best || Math.abs(measured.point.bits - bits) < Math.abs(best.point.bits - bits)) best = measured;
    if (Math.abs(measured.point.bits - bits) <= 0.05) break;
    if (measured.point.bits > bits) low = lambda;
    else high = lambda;
  }
  return { point: { ...best!.point, seconds }, decoded: best!.decoded };
}

async function anchorPoints(set: DataSet, gpu: GpuContext | null): Promise<Point[]> {
  const points: Point[] = [];
  const add = async (method: string, quantize: (tensor: Matrix) => AnchorTensor | Promise<AnchorTensor>) => {
    points.push(await scoreMeasured(set, await measure(set, method, quantize)));
  };
  for (const bits of [4, 3, 2]) {
    for (const group of [Infinity, 128]) {
      await add(`RTN INT${bits} ${group === Infinity ? 'per channel' : 'per group of 128'}`, (t) => roundToNearest(t.weights, t.rows, t.cols, bits, group));
    }
  }
  await add('absmax FP8', async (t) => fromQuantized(t, await quantizeTensor(t.weights, t.rows, t.cols, {
    format: 'fp8-e4m3', optimizer: 'absmax', scaleDtype: 'BF16',
  })));
  for (const bits of [4, 3]) await add(`HQQ INT${bits} (groups of 64)`, (t) => hqq(t.weights, bits));
  await add('NF4 (blocks of 64)', (t) => nf4(t.weights));
  await add('NVFP4 absmax', (t) => nvfp4Absmax(t.weights, t.rows, t.cols));
  const referenceBase: QuantizeOptions = { format: 'fp8-e4m3', optimizer: 'reference', scaleDtype: 'BF16', gpu };
  for (const { lambda, lr } of Object.values(REFERENCE_PRESETS).reverse()) {
    await add(`reference FP8 λ ${lambda}${lr !== 1 ? `, lr ${lr}` : ''}`, async (t) => fromQuantized(t, await quantizeTensor(t.weights, t.rows, t.cols, {
      ...referenceBase, lambda, lr, name: t.name,
    })));
  }
  for (const bits of [4, 3, 2]) points.push(await scoreMeasured(set, await referenceAtBits(set, referenceBase, bits)));
  return points;
}

/** The codes of a quantized .eqz tensor and the bits of its scales, for issue 7's count. */
function storedCodes(entry: TensorEntry, payload: Uint8Array): { codes: Uint8Array; parameterBits: number } {
  const [rows, cols] = entry.shape as [number, number];
  if (entry.encoding === 'nvfp4') {
    const tensor = decodeNvfp4Payload(payload, rows, cols, { tensor: entry.name });
    return { codes: unpackCodes(tensor.packed), parameterBits: 8 * tensor.blockScales.length + 32 };
  }
  const scaled = decodeScaledPayload(payload, entry.encoding as 'fp8-e4m3' | 'int8', entry.shape);
  return { codes: scaled.codes, parameterBits: rows * (scaled.scaleDtype === 'F32' ? 32 : 16) };
}

const QUANTIZED_ENCODINGS: readonly string[] = ['fp8-e4m3', 'int8', 'nvfp4'];

/**
 * The set's tensors as `eqz convert` stored them in `path`: decoded, with their stored bits (the payload's size)
 * and codes. Tensors the converter left lossless count with their lossless size; they are listed in the note.
 */
async function readConverted(set: DataSet, path: string, method: string, seconds: number): Promise<{ measured: Measured; lossless: string[] }> {
  const reader = await EqzReader.open(await fileSource(path));
  const tally = new Tally(false);
  const lossless: string[] = [];
  try {
    for (const tensor of set.tensors) {
      const entry = reader.tensor(tensor.name);
      if (!entry) throw new Error(`${path} has no tensor ${tensor.name}`);
      const payload = await reader.readPayload(entry);
      const decoded = toFloat32(decodePayload(entry, payload, { dtype: 'F32' }), 'F32');
      const quantized = QUANTIZED_ENCODINGS.includes(entry.encoding);
      if (!quantized) lossless.push(tensor.name);
      // A lossless tensor has no codes: it counts at its stored size under both accountings.
      const { codes, parameterBits } = quantized ? storedCodes(entry, payload) : { codes: new Uint8Array(0), parameterBits: 8 * entry.size };
      tally.add(tensor, { decoded, codes, storedBits: 8 * entry.size, parameterBits });
    }
  } finally {
    await reader.close();
  }
  return { measured: tally.measured(method, seconds), lossless };
}

/** Where `eqz convert` reads the set from: the LM's folder, or the set's tensors written to one F32 safetensors file. */
async function converterInput(set: DataSet, directory: string): Promise<{ input: string; selection: string[] }> {
  if (set.model) return { input: set.model.folder, selection: [] };
  const input = join(directory, 'set.safetensors');
  const byName = new Map(set.tensors.map((t) => [t.name, t]));
  await writeModel(input, [], new Map(), set.tensors.map((t) => ({ name: t.name, dtype: 'F32', shape: [t.rows, t.cols] })),
    (name) => fromFloat32(byName.get(name)!.weights, 'F32'));
  // The tensors of these sets are not named like linear weights: quantize every one of them.
  return { input, selection: ['--include', '*'] };
}

/** The default at each of `targets`: `eqz convert --bits target` with every other option left at its default. */
async function defaultPoints(set: DataSet, device: string, targets: number[]): Promise<Point[]> {
  const directory = await mkdtemp(join(tmpdir(), 'eqz-bench-quant-'));
  try {
    const { input, selection } = await converterInput(set, directory);
    const points: Point[] = [];
    for (const target of targets) {
      const output = join(directory, `bits-${target}.eqz`);
      const lines: string[] = [];
      const start = performance.now();
      const status = await eqzCli(['convert', input, '-o', output, '--bits', String(target), '--device', device, '--force', ...selection], {
        log: (line) => lines.push(line), error: (line) => lines.push(line),
      });
      const seconds = (performance.now() - start) / 1000;
      if (status !== 0) throw new Error(`eqz convert --bits ${target} failed on ${set.name}:\n${lines.join('\n')}`);
      const { measured, lossless } = await readConverted(set, output, `eqz convert --bits ${target}`, seconds);
      const report = lines.filter((line) => !line.startsWith('wrote ') && !line.startsWith('WebGPU adapter'));
      if (lossless.length > 0) report.push(`left lossless (counted at their stored size): ${lossless.join(', ')}`);
      // Scored as `eqz eval x.eqz` reads it: the decoded file, lossless tensors included.
      points.push(await scoreModel(set, { ...measured.point, converterReport: report }, () => openWeightSource(output)));
      await rm(output, { force: true });
    }
    return points;
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}

/** The lower convex hull of `points` (x, y), read at `x` (linear between hull vertices); NaN outside their x range. */
function hullAt(points: readonly (readonly [number, number])[], x: number): number {
  const sorted = points.filter(([, y]) => Number.isFinite(y)).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const hull: (readonly [number, number])[] = [];
  for (const p of sorted) {
    while (hull.length >= 2) {
      const [a, b] = [hull[hull.length - 2]!, hull[hull.length - 1]!];
      if ((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) <= 0) hull.pop();
      else break;
    }
    hull.push(p);
  }
  if (hull.length < 2 || x < hull[0]![0] || x > hull[hull.length - 1]![0]) return NaN;
  for (let i = 1; i < hull.length; i++) {
    const [a, b] = [hull[i - 1]!, hull[i]!];
    if (x <= b[0]) return a[1] + ((x - a[0]) / (b[0] - a[0])) * (b[1] - a[1]);
  }
  return NaN;
}

type Metric = 'relL2' | 'kl';
type Accounting = 'bits' | 'entropyBits';

/** The anchors' envelope of `metric` over `accounting`, read at `x`. */
function envelopeAt(anchors: readonly Point[], accounting: Accounting, metric: Metric, x: number): number {
  return hullAt(anchors.map((p) => [p[accounting], p[metric] ?? NaN] as const), x);
}

/** `value` against `envelope` in %, or why there is no comparison. */
function versus(value: number | undefined, envelope: number): string {
  if (value === undefined) return '';
  return Number.isNaN(envelope) ? 'outside the anchors' : `${(100 * (value / envelope - 1)).toFixed(1)} %`;
}

const fixed = (value: number | undefined, digits: number) => (value === undefined || Number.isNaN(value) ? '—' : value.toFixed(digits));

/** The envelope issue 7 published, at 2.5 / 3 / 3.5 / 4 bits (order-0 entropy + scales). */
const ISSUE_RATES = [2.5, 3, 3.5, 4];
const ISSUE_ENVELOPE: Record<string, { relL2: number[]; kl: number[] }> = {
  stories260K: { relL2: [0.2455, 0.1731, 0.1206, 0.0840], kl: [1.87, 0.889, 0.302, 0.130] },
  'babyllama-tok105': { relL2: [0.2419, 0.1656, 0.1149, 0.0802], kl: [0.556, 0.2245, 0.0956, 0.0397] },
};

/** One row of the default-vs-envelope comparison, as printed and written to JSON. */
interface EnvelopeRow {
  method: string;
  accounting: Accounting;
  bits: number;
  relL2: number;
  relL2Envelope: number;
  kl?: number;
  klEnvelope?: number;
}

function pointTable(title: string, points: Point[], withEval: boolean): void {
  console.log(`\n### ${title}\n`);
  const evalHeader = withEval ? ' KL | perplexity |' : '';
  console.log(`| method | bits/param (stored) | entropy + scales | rel L1 | rel L2 |${evalHeader} seconds |`);
  console.log(`|---|---|---|---|---|${withEval ? '---|---|' : ''}---|`);
  for (const p of points) {
    const evaluation = withEval ? ` ${fixed(p.kl, 4)} | ${fixed(p.perplexity, 4)} |` : '';
    console.log(`| ${p.method} | ${p.bits.toFixed(3)} | ${p.entropyBits.toFixed(3)} | ${p.relL1.toFixed(4)} | ${p.relL2.toFixed(4)} |${evaluation} ${p.seconds.toFixed(1)} |`);
  }
}

/** The default at its bits beside the anchors' envelope there, under `accounting`. */
function envelopeRows(anchors: Point[], defaults: Point[], accounting: Accounting, withEval: boolean): EnvelopeRow[] {
  const label = accounting === 'bits' ? 'stored bits' : 'entropy + scales';
  console.log(`\n| default (${label}) | bits | rel L2 | envelope rel L2 | default vs envelope |${withEval ? ' KL | envelope KL | default vs envelope |' : ''}`);
  console.log(`|---|---|---|---|---|${withEval ? '---|---|---|' : ''}`);
  return defaults.map((p) => {
    const x = p[accounting];
    const row: EnvelopeRow = { method: p.method, accounting, bits: x, relL2: p.relL2, relL2Envelope: envelopeAt(anchors, accounting, 'relL2', x) };
    let line = `| ${p.method} | ${x.toFixed(3)} | ${p.relL2.toFixed(4)} | ${fixed(row.relL2Envelope, 4)} | ${versus(p.relL2, row.relL2Envelope)} |`;
    if (withEval) {
      row.kl = p.kl;
      row.klEnvelope = envelopeAt(anchors, accounting, 'kl', x);
      line += ` ${fixed(p.kl, 4)} | ${fixed(row.klEnvelope, 4)} | ${versus(p.kl, row.klEnvelope)} |`;
    }
    console.log(line);
    return row;
  });
}

/** Our anchors' envelope under issue 7's count at its four rates, beside the one it published. */
function issueEnvelopeTable(model: string, anchors: Point[]): { rate: number; relL2: number; kl: number; issueRelL2: number; issueKl: number }[] {
  const published = ISSUE_ENVELOPE[model]!;
  console.log(`\nAnchors' envelope under issue 7's count (entropy + scales) at its rates, beside the envelope it published:\n`);
  console.log('| rate | rel L2 (ours) | rel L2 (issue 7) | KL (ours) | KL (issue 7) |');
  console.log('|---|---|---|---|---|');
  return ISSUE_RATES.map((rate, i) => {
    const row = {
      rate, relL2: envelopeAt(anchors, 'entropyBits', 'relL2', rate), kl: envelopeAt(anchors, 'entropyBits', 'kl', rate),
      issueRelL2: published.relL2[i]!, issueKl: published.kl[i]!,
    };
    console.log(`| ${rate} | ${fixed(row.relL2, 4)} | ${row.issueRelL2} | ${fixed(row.kl, 4)} | ${row.issueKl} |`);
    return row;
  });
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

/** The shared LM `name`, its token file (the first `evalTokens` tokens) and the original's logits over it. */
async function languageModel(name: string, evalTokens: number | undefined): Promise<LanguageModel> {
  const folder = `${DATA}models/${name}`;
  const tokenFile = await readTokenFile(`${DATA}text/tinystories-sample.${name}.tokens.u16`);
  const tokens = evalTokens === undefined ? tokenFile.tokens : tokenFile.tokens.subarray(0, evalTokens);
  const original = await weightSourceFromModelFolder(folder);
  const start = performance.now();
  const evaluator = await referenceEvaluator(original, tokens, { ctx: tokenFile.ctx });
  console.error(`  ${name}: original's logits over ${evaluator.reference.tokens} predicted tokens in ${((performance.now() - start) / 1000).toFixed(0)} s`);
  return { folder, original, evaluator, transformersPerplexity: evalTokens === undefined ? tokenFile.referencePerplexity : undefined };
}

/** The data sets whose name contains `only` (all when it is undefined); empty ones are dropped. */
async function dataSets(full: boolean, only: string | undefined, evalTokens: number | undefined): Promise<DataSet[]> {
  const wanted = (name: string) => only === undefined || name.includes(only);
  const sets: DataSet[] = [];
  for (const model of ['stories260K', 'babyllama-tok105']) {
    const name = `${model} (*_proj)`;
    const path = `${DATA}models/${model}/model.safetensors`;
    if (!wanted(name) || !existsSync(path)) continue;
    const tensors = await loadSafetensors(path, (tensor) => /_proj\.weight$/.test(tensor));
    sets.push({ name, tensors, model: await languageModel(model, evalTokens) });
  }
  if (wanted('weight files (2-D weights)')) {
    const files: Matrix[] = [];
    for (const file of ['faceres-deep-f32', 'ppocrv4-rec-f32', 'movenet-lightning-f16', 'silero-vad-v5']) {
      const tensors = await loadSafetensors(`${DATA}weights/${file}.safetensors`, (_, shape) => shape[0]! >= 2 && shape[1]! >= 2 && shape[0]! * shape[1]! >= 1024);
      files.push(...tensors.map((tensor) => ({ ...tensor, name: `${file}:${tensor.name}` })));
    }
    sets.push({ name: 'weight files (2-D weights)', tensors: files });
  }
  const shapes: [number, number][] = full ? [[4096, 4096], [4096, 14336]] : [[256, 4096], [128, 14336]];
  for (const [rows, cols] of shapes) {
    const name = `synthetic ${rows}×${cols} (Student-t ν=5, row spread, outlier rows)`;
    if (!wanted(name)) continue;
    const weights = syntheticWeights(rows, cols, { seed: rows + cols });
    sets.push({ name, tensors: [{ name: 'synthetic.weight', rows, cols, weights }] });
  }
  return sets.filter((set) => set.tensors.length > 0);
}

/** Median seconds of `repeats` runs of `work`, after warm-up runs for at least `warmUp` seconds (clocks ramp up). */
async function medianSeconds(work: () => Promise<unknown>, repeats: number, warmUp: number): Promise<number> {
  const timed = async () => {
    const start = performance.now();
    await work();
    return (performance.now() - start) / 1000;
  };
  const start = performance.now();
  do await work(); while (performance.now() - start < warmUp * 1000);
  const seconds: number[] = [];
  for (let i = 0; i < repeats; i++) seconds.push(await timed());
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

/** One throughput measurement, as printed and written to JSON. */
interface ThroughputRow {
  optimizer: string;
  shape: string;
  paramsPerSecond: number;
}

async function throughput(gpu: GpuContext | null, full: boolean): Promise<ThroughputRow[]> {
  const rows: ThroughputRow[] = [];
  const report = (optimizer: string, shape: string, paramsPerSecond: number) => {
    rows.push({ optimizer, shape, paramsPerSecond });
    const torch = REFERENCE_TORCH[shape];
    const beside = optimizer.startsWith('rd-search') && !optimizer.includes('CPU') && torch ? `${rate(torch)} (ours ×${(paramsPerSecond / torch).toFixed(1)})` : '';
    console.log(`| ${optimizer} | ${shape} | ${rate(paramsPerSecond)} | ${beside} |`);
  };
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
      report(`rd-search ${format}`, shape, rows * cols / seconds);
    }
    if (gpu?.software) {
      // The TypeScript path beside the software adapter, on the first 256 rows.
      const cpuRows = Math.min(rows, 256);
      const session = await SearchSession.open(tiled.subarray(0, cpuRows * cols), cpuRows, cols, null);
      const settings = searchSettings(THROUGHPUT_OPTIONS, 'int8');
      const seconds = await medianSeconds(() => session.run(settings, false), 3, 0);
      report('rd-search int8, CPU (TypeScript) path', `${cpuRows}×${cols}`, cpuRows * cols / seconds);
    }
    const referenceRows = gpu && !gpu.software ? rows : Math.min(rows, 256);
    const referenceWeights = tiled.subarray(0, referenceRows * cols);
    const objective = await referenceObjective(referenceWeights, referenceRows, cols, {
      format: 'fp8-e4m3', lambda: REFERENCE_PRESETS[3].lambda, scaleDtype: 'BF16', gpu,
    });
    const theta = new Float64Array(referenceRows).fill(-8);
    const seconds = await medianSeconds(() => objective.evaluate(theta), 5, gpu && !gpu.software ? 1 : 0);
    objective.release();
    report('reference: one loss + gradient evaluation (L-BFGS makes 1–2 per iteration)', `${referenceRows}×${cols}`, referenceRows * cols / seconds);
  }
  return rows;
}

/** The value after `flag` on the command line, if the flag is there. */
function option(argv: string[], flag: string): string | undefined {
  const at = argv.indexOf(flag);
  return at >= 0 ? argv[at + 1] : undefined;
}

/** Default points at these --bits targets. */
const DEFAULT_TARGETS = [4, 3.5, 3, 2.5, 2];

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const full = argv.includes('--full');
  const device = (option(argv, '--device') ?? 'auto') as 'auto' | 'gpu' | 'cpu';
  const jsonPath = option(argv, '--json');
  const only = option(argv, '--only');
  const evalTokensText = option(argv, '--eval-tokens');
  const evalTokens = evalTokensText === undefined ? undefined : Number(evalTokensText);
  if (evalTokens !== undefined && !(Number.isInteger(evalTokens) && evalTokens >= 2)) throw new Error(`--eval-tokens needs an integer ≥ 2, got ${evalTokensText}`);
  const rateDistortion = !argv.includes('--throughput-only');
  await initCodec();
  const gpu = device === 'cpu' && !process.env.EQZ_SOFTWARE_ADAPTER ? null : await acquireGpu(device === 'cpu' ? 'cpu' : device, undefined, { boundsChecks: false });
  console.log(`# bench:quant — ${gpu ? gpu.description : 'CPU (TypeScript path)'}${full ? ', full shapes' : ''}`);
  if (rateDistortion) {
    console.log('\nBits count everything stored (payload header, scales and zero points, the coded stream); "entropy + scales"');
    console.log('is issue 7\'s count (order-0 entropy of the codes + 16 bits per scale or zero point; NF4: its F32 absmax;');
    console.log('NVFP4: 8 bits per block of 16 + the F32 global scale). rel L1/L2 over the whole set. KL = mean KL(original ‖');
    console.log('quantized) per token in nats and perplexity over the LM\'s token file, by src/eval on the CPU (the original\'s');
    console.log('logits computed once). Envelope = lower convex hull of the anchors\' (bits, metric) points.');
  }
  const results: Record<string, unknown> = {};
  for (const set of rateDistortion ? await dataSets(full, only, evalTokens) : []) {
    const withEval = set.model !== undefined;
    const anchors = await anchorPoints(set, gpu);
    const defaults = await defaultPoints(set, device, DEFAULT_TARGETS);
    const params = set.tensors.reduce((n, t) => n + t.weights.length, 0);
    pointTable(`${set.name}: ${set.tensors.length} tensors, ${params} params`, [...anchors, ...defaults], withEval);
    const model = set.model;
    if (model) {
      const reference = model.evaluator.reference;
      console.log(`\nOriginal (F32): perplexity ${reference.perplexity.toFixed(4)} over ${reference.tokens} predicted tokens`
        + (model.transformersPerplexity !== undefined ? ` (transformers, fp32: ${model.transformersPerplexity.toFixed(4)})` : ''));
    }
    for (const p of defaults) for (const line of p.converterReport ?? []) console.log(`- ${p.method}: ${line}`);
    const stored = envelopeRows(anchors, defaults, 'bits', withEval);
    const counted = envelopeRows(anchors, defaults, 'entropyBits', withEval);
    const modelName = set.name.replace(/ \(\*_proj\)$/, '');
    const issue = withEval && ISSUE_ENVELOPE[modelName] ? issueEnvelopeTable(modelName, anchors) : undefined;
    results[set.name] = {
      params, anchors, defaults, envelope: { stored, entropyAndScales: counted, issueRates: issue },
      originalPerplexity: model?.evaluator.reference.perplexity, evalTokens: model?.evaluator.reference.tokens,
    };
    await model?.original.close();
  }
  const throughputRows = await throughput(gpu, full);
  if (jsonPath) writeFileSync(jsonPath, JSON.stringify({ device: gpu?.description ?? 'cpu', evalBackend: 'cpu', results, throughput: throughputRows }, null, 1));
  gpu?.device.destroy();
}

await main();
