/**
 * The `eqz` command line: convert, inspect, validate. Each command is a thin layer over the library; errors on bad
 * input print one line (code, what, tensor, byte offset) and exit with status 1.
 */
import { stat } from 'node:fs/promises';
import yargs from 'yargs';
import { EqzError } from '../errors.js';
import { fileSource } from '../container/file-source.js';
import { EqzReader } from '../container/reader.js';
import { metaString, numElements, type MetadataValue } from '../container/table.js';
import { META, ValueType } from '../container/format.js';
import { decodeTensor } from '../decode/tensor.js';
import { encodeModel } from '../convert/encode.js';
import { decodeModel } from '../convert/decode.js';
import { losslessEncoder } from '../convert/encoders.js';
import { quantizingEncoder } from '../convert/quantize.js';
import { exportCompressedTensors } from '../convert/export.js';
import { GpuDecoder } from '../gpu/decode.js';
import { isNvfp4Checkpoint, NVFP4_SOURCE_FORMAT, nvfp4Combinations } from '../convert/import.js';
import type { TensorEncoder } from '../convert/encode.js';
import { Progress, formatSeconds } from './progress.js';
import { VERSION } from '../version.js';
import { acquireGpu, type GpuContext } from '../gpu/device.js';
import { evaluate } from '../eval/evaluate.js';
import { readTokenFile } from '../eval/tokens.js';
import { openWeightSource } from '../eval/weight-sources.js';

type Output = { log: (line: string) => void; error: (line: string) => void };

const QUANTIZED_ENCODINGS = ['fp8-e4m3', 'int8', 'nvfp4'];
const isEqz = (path: string): boolean => path.toLowerCase().endsWith('.eqz');
const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(2)} MB`;

interface ConvertArgs {
  input: string;
  output: string;
  lossless: boolean;
  bits?: number;
  lambda?: number;
  format: 'fp8' | 'int8' | 'auto' | 'nvfp4';
  optimizer: 'rd-search' | 'reference' | 'absmax';
  lr?: number;
  scaleDtype: 'bf16' | 'f16' | 'f32';
  include?: string[];
  exclude?: string[];
  protectOutliers: boolean;
  device: 'auto' | 'gpu' | 'cpu' | 'wasm';
  dtype?: string;
  template?: string;
  force: boolean;
  alignment: number;
}

async function decodeCommand(argv: ConvertArgs, out: Output): Promise<number> {
  if (isEqz(argv.output)) throw new Error('both input and output are .eqz files: convert goes from safetensors/folder to .eqz or back');
  if (argv.template && argv.dtype !== 'nvfp4') throw new Error('--template goes with --dtype nvfp4');
  if (argv.dtype === 'fp8' || argv.dtype === 'nvfp4') {
    const started = performance.now();
    await exportCompressedTensors(argv.input, argv.output, { format: argv.dtype, template: argv.template, overwrite: argv.force });
    out.log(`wrote ${argv.output}: compressed-tensors ${argv.dtype === 'fp8' ? 'FP8 per-channel (float-quantized)' : 'NVFP4 (nvfp4-pack-quantized)'} checkpoint in ${formatSeconds((performance.now() - started) / 1000)}`);
    return 0;
  }
  let progress: Progress | undefined;
  const decoderDevice = argv.device === 'auto' ? await acquireGpu('gpu').catch(() => undefined) : argv.device === 'wasm' ? undefined : await acquireGpu(argv.device);
  if (decoderDevice) out.log(`decoding on WebGPU: ${decoderDevice.description}`);
  const gpu = decoderDevice ? await GpuDecoder.create(decoderDevice) : undefined;
  const result = await decodeModel(argv.input, argv.output, {
    dtype: argv.dtype?.toUpperCase() as 'F32' | 'F16' | 'BF16' | undefined,
    overwrite: argv.force,
    gpu,
    onProgress: (done, total, bytes) => {
      progress ??= new Progress('decode', total, { unit: 'tensors/s' });
      progress.update(done, `${done}/${total} tensors, ${mb(bytes)}`);
    },
  });
  progress?.done();
  out.log(`wrote ${argv.output}: ${result.tensors} tensors, ${mb(result.bytes)} in ${formatSeconds(result.seconds)}`);
  return 0;
}

/** The per-tensor encoder the options ask for; for quantization, the WebGPU adapter used is reported. */
async function encoderFor(argv: ConvertArgs, out: Output): Promise<TensorEncoder> {
  const quantizing = argv.bits !== undefined || argv.lambda !== undefined;
  if (argv.lossless && quantizing) throw new Error('--lossless stores every tensor exactly: it cannot be combined with --bits or --lambda');
  if (!argv.lossless && !quantizing) throw new Error('choose how to store the weights: --lossless, --bits <average bits/param> or --lambda <trade-off>');
  if (argv.lossless) return losslessEncoder();
  if (argv.device === 'wasm') throw new Error('quantization runs on WebGPU: --device auto, gpu or cpu');
  // The optimizers' kernels index only in range by construction: they run without bounds clamping.
  const gpu = await acquireGpu(argv.device, undefined, { boundsChecks: false });
  out.log(`WebGPU adapter: ${gpu.description}`);
  return quantizingEncoder(argv.input, {
    format: argv.format === 'fp8' ? 'fp8-e4m3' : argv.format,
    optimizer: argv.optimizer,
    bits: argv.bits,
    lambda: argv.lambda,
    lr: argv.lr,
    scaleDtype: argv.scaleDtype.toUpperCase() as 'BF16' | 'F16' | 'F32',
    selection: { include: argv.include, exclude: argv.exclude },
    protectOutliers: argv.protectOutliers,
    gpu,
    report: (line) => out.log(line),
  });
}

async function convert(argv: ConvertArgs, out: Output): Promise<number> {
  if (isEqz(argv.input)) return decodeCommand(argv, out);
  if (!isEqz(argv.output)) throw new Error(`output "${argv.output}" must end in .eqz when the input is a safetensors file or folder`);
  if (!argv.force && await stat(argv.output).then(() => true, () => false)) {
    throw new Error(`${argv.output} exists (use --force to replace it)`);
  }
  const encodeTensor = await encoderFor(argv, out);
  let progress: Progress | undefined;
  const summary = await encodeModel(argv.input, argv.output, {
    encodeTensor,
    // NVFP4 checkpoints keep their quantization: each module is stored losslessly as one nvfp4 tensor.
    combine: (model) => (isNvfp4Checkpoint(model) ? { tensors: nvfp4Combinations(model), sourceFormat: NVFP4_SOURCE_FORMAT } : undefined),
    alignment: argv.alignment,
    producer: `eqz ${VERSION}`,
    metadata: argv.lossless ? undefined : new Map([
      [META.quantMethod, metaString(argv.format === 'nvfp4' ? 'nvfp4' : 'entquant')],
      [META.quantParams, metaString(JSON.stringify({
        format: argv.format, optimizer: argv.optimizer, bits: argv.bits ?? null, lambda: argv.lambda ?? null,
        scaleDtype: argv.scaleDtype, include: argv.include ?? null, exclude: argv.exclude ?? null, protectOutliers: argv.protectOutliers,
      }))],
    ]),
    onProgress: (p) => {
      progress ??= new Progress('encode', p.paramsTotal, { unit: 'Mparams/s', unitScale: 1e6 });
      progress.update(p.paramsDone, `${p.tensorsDone}/${p.tensorsTotal} tensors, ${(p.storedBytes * 8 / Math.max(1, p.paramsDone)).toFixed(3)} bits/param`);
    },
  });
  progress?.done();
  const bits = (summary.fileBytes * 8) / Math.max(1, summary.params);
  const quantized = summary.tensors.filter((t) => t.encoding === 'fp8-e4m3' || t.encoding === 'int8' || t.encoding === 'nvfp4');
  if (quantized.length > 0) {
    const params = quantized.reduce((sum, t) => sum + numElements(t.shape), 0);
    const stored = quantized.reduce((sum, t) => sum + t.storedBytes, 0);
    const measured = quantized.filter((t) => t.stats?.relL2 !== undefined);
    const measuredParams = measured.reduce((sum, t) => sum + numElements(t.shape), 0);
    const meanRelL2 = measured.reduce((sum, t) => sum + Number(t.stats!.relL2) * numElements(t.shape), 0) / Math.max(1, measuredParams);
    out.log(`quantized ${quantized.length} tensors (${params} params): ${((stored * 8) / params).toFixed(3)} bits/param`
      + (measured.length ? `, params-weighted mean rel L2 ${meanRelL2.toFixed(4)}` : '') + `; ${summary.tensors.length - quantized.length} tensors lossless`);
  }
  out.log(`wrote ${argv.output}: ${summary.tensors.length} tensors, ${summary.params} params, ${mb(summary.sourceBytes)} → ${mb(summary.fileBytes)} `
    + `(ratio ${(summary.fileBytes / Math.max(1, summary.sourceBytes)).toFixed(4)}, ${bits.toFixed(3)} bits/param in all) in ${formatSeconds(summary.seconds)}`);
  return 0;
}

function jsonValue(value: MetadataValue): unknown {
  if (value.type === ValueType.ARRAY && value.value instanceof Uint8Array) return { bytes: value.value.length };
  const plain = value.value;
  if (typeof plain === 'bigint') return plain.toString();
  if (Array.isArray(plain)) return plain.map((v) => (typeof v === 'bigint' ? v.toString() : v));
  return plain;
}

/** The `inspect --json` object (its shape is part of the CLI contract). */
export async function inspectFile(path: string): Promise<{
  version: number;
  metadata: Record<string, unknown>;
  tensors: { name: string; shape: number[]; dtype: string; encoding: string; storedBytes: number; bitsPerParam: number }[];
  totals: { params: number; storedBytes: number; bitsPerParam: number; fileBytes: number; quantized: { tensors: number; params: number; storedBytes: number; bitsPerParam: number } };
}> {
  const reader = await EqzReader.open(await fileSource(path));
  try {
    const tensors = reader.tensors.map((t) => {
      const params = numElements(t.shape);
      return { name: t.name, shape: t.shape, dtype: t.dtype, encoding: t.encoding, storedBytes: t.size, bitsPerParam: params ? (t.size * 8) / params : 0 };
    });
    const total = (list: typeof tensors) => {
      const params = list.reduce((sum, t) => sum + numElements(t.shape), 0);
      const storedBytes = list.reduce((sum, t) => sum + t.storedBytes, 0);
      return { params, storedBytes, bitsPerParam: params ? (storedBytes * 8) / params : 0 };
    };
    const quantized = tensors.filter((t) => QUANTIZED_ENCODINGS.includes(t.encoding));
    return {
      version: reader.version,
      metadata: Object.fromEntries([...reader.metadata].map(([key, value]) => [key, jsonValue(value)])),
      tensors,
      totals: { ...total(tensors), fileBytes: reader.source.size, quantized: { tensors: quantized.length, ...total(quantized) } },
    };
  } finally {
    await reader.close();
  }
}

async function inspect(argv: { file: string; json: boolean }, out: Output): Promise<number> {
  const info = await inspectFile(argv.file);
  if (argv.json) {
    out.log(JSON.stringify(info, null, 2));
    return 0;
  }
  out.log(`${argv.file}: .eqz version ${info.version}, ${info.tensors.length} tensors, ${info.totals.fileBytes} bytes`);
  for (const [key, value] of Object.entries(info.metadata)) {
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    out.log(`  ${key} = ${text.length > 100 ? `${text.slice(0, 97)}...` : text}`);
  }
  const rows = info.tensors.map((t) => [t.name, `[${t.shape.join(', ')}]`, t.dtype, t.encoding, String(t.storedBytes), t.bitsPerParam.toFixed(3)]);
  rows.push(['total', '', '', '', String(info.totals.storedBytes), info.totals.bitsPerParam.toFixed(3)]);
  const q = info.totals.quantized;
  if (q.tensors > 0) rows.push([`quantized (${q.tensors} tensors)`, '', '', '', String(q.storedBytes), q.bitsPerParam.toFixed(3)]);
  const header = ['name', 'shape', 'dtype', 'encoding', 'stored bytes', 'bits/param'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i >= 4 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ');
  out.log(line(header));
  for (const row of rows) out.log(line(row));
  return 0;
}

async function validate(argv: { file: string }, out: Output): Promise<number> {
  const reader = await EqzReader.open(await fileSource(argv.file));
  try {
    for (const entry of reader.tensors) await decodeTensor(reader, entry);
    out.log(`${argv.file}: valid (.eqz version ${reader.version}, ${reader.tensors.length} tensors, every checksum and payload checked)`);
    return 0;
  } finally {
    await reader.close();
  }
}

type EvalDevice = 'auto' | 'gpu' | 'cpu' | 'js';

/** The evaluation backend for `--device`: a WebGPU device, or plain TypeScript ('cpu' backend of evaluate). */
async function evalBackend(device: EvalDevice): Promise<'cpu' | GpuContext> {
  if (device === 'js') return 'cpu';
  if (device === 'auto') return acquireGpu('gpu').catch(() => 'cpu' as const);
  return acquireGpu(device);
}

async function evalCommand(argv: { model: string; tokens: string; ctx?: number; ref?: string; json: boolean; device: EvalDevice; maxWindows?: number }, out: Output): Promise<number> {
  const tokenFile = await readTokenFile(argv.tokens);
  const backend = await evalBackend(argv.device);
  const model = await openWeightSource(argv.model);
  const ref = argv.ref ? await openWeightSource(argv.ref) : undefined;
  const started = performance.now();
  let progress: Progress | undefined;
  try {
    const result = await evaluate(model, tokenFile.tokens, {
      ctx: argv.ctx ?? tokenFile.ctx,
      ref,
      backend,
      maxWindows: argv.maxWindows,
      onProgress: (done, total) => {
        progress ??= new Progress('eval', total, { unit: 'windows/s' });
        progress.update(done, `${done}/${total} windows`);
      },
    });
    progress?.done();
    const seconds = (performance.now() - started) / 1000;
    const report = {
      model: argv.model, tokensFile: argv.tokens, perplexity: result.perplexity, meanNll: result.meanNll, tokens: result.tokens,
      windows: result.windows, ctx: argv.ctx ?? tokenFile.ctx ?? null, klMean: result.klMean ?? null, ref: argv.ref ?? null,
      backend: result.backend, seconds,
    };
    if (argv.json) {
      out.log(JSON.stringify(report, null, 2));
    } else {
      out.log(`${argv.model}: perplexity ${result.perplexity.toFixed(4)} (mean NLL ${result.meanNll.toFixed(5)} nats) over ${result.tokens} tokens in ${result.windows} windows`);
      if (result.klMean !== undefined) out.log(`KL(ref ‖ model) ${result.klMean.toFixed(5)} nats/token against ${argv.ref}`);
      if (tokenFile.referencePerplexity !== undefined) out.log(`token file's reference perplexity (transformers, fp32): ${tokenFile.referencePerplexity}`);
      out.log(`backend: ${result.backend}; ${formatSeconds(seconds)}`);
    }
    return 0;
  } finally {
    await model.close();
    await ref?.close();
  }
}

/** Runs the CLI on `args`; resolves to the exit status. */
export async function main(args: string[], out: Output = { log: console.log, error: console.error }): Promise<number> {
  let status = 0;
  const run = (command: (argv: never, out: Output) => Promise<number>) => async (argv: unknown) => {
    status = await command(argv as never, out);
  };
  const parser = yargs(args)
    .scriptName('eqz')
    .usage('$0 <command> [options]\n\nEntropy-coded weight compression (EntQuant) and the .eqz container.')
    .command('convert <input>', 'convert safetensors/Hugging Face folder ⇄ .eqz (the direction follows from the paths)', (y) => y
      .positional('input', { type: 'string', demandOption: true, describe: 'a .safetensors file, a Hugging Face model folder, or an .eqz file' })
      .option('output', { alias: 'o', type: 'string', demandOption: true, describe: 'an .eqz file, or (from .eqz) a .safetensors file or a folder' })
      .option('lossless', { type: 'boolean', default: false, describe: 'to .eqz: store every tensor exactly (exponent planes rANS-coded where smaller, else raw)' })
      .option('bits', { type: 'number', describe: 'to .eqz: quantize, aiming at this average stored bits/param over the quantized tensors (scales, tables and headers counted)' })
      .option('lambda', { type: 'number', describe: 'to .eqz: quantize with this rate–distortion trade-off instead (the optimizer\'s λ; larger = fewer bits)' })
      .option('format', { choices: ['fp8', 'int8', 'auto', 'nvfp4'] as const, default: 'fp8' as const, describe: 'quantized values: FP8 E4M3 or INT8 with one scale per output channel (auto: per tensor, whichever costs less), or NVFP4 (E2M1 in blocks of 16 with FP8 block scales)' })
      .option('optimizer', { choices: ['rd-search', 'reference', 'absmax'] as const, default: 'rd-search' as const, describe: 'how scales are chosen: rd-search = exact per-channel rate–distortion search (default); reference = the EntQuant paper\'s L-BFGS on an L1 entropy proxy; absmax = plain absmax scales' })
      .option('lr', { type: 'number', describe: 'reference optimizer: L-BFGS learning rate (default 1; 0.25 for the 2-bit preset)' })
      .option('scale-dtype', { choices: ['bf16', 'f16', 'f32'] as const, default: 'bf16' as const, describe: 'how per-channel scales are stored' })
      .option('include', { type: 'string', array: true, describe: 'quantize only tensors matching these globs (* any run of characters); default: 2-D *.weight tensors except embeddings, lm_head and norms' })
      .option('exclude', { type: 'string', array: true, describe: 'never quantize tensors matching these globs' })
      .option('protect-outliers', { type: 'boolean', default: true, describe: 'store layers holding super weights (extreme outliers) with plain absmax FP8; --no-protect-outliers turns this off' })
      .option('device', { choices: ['auto', 'gpu', 'cpu', 'wasm'] as const, default: 'auto' as const, describe: 'where to compute. gpu = hardware WebGPU adapter; cpu = software WebGPU adapter (Mesa, or SwiftShader with EQZ_SOFTWARE_ADAPTER=swiftshader); wasm = no WebGPU (decoding only). auto: quantization uses gpu if present, else cpu; decoding uses gpu if present, else wasm' })
      .option('dtype', { choices: ['f32', 'f16', 'bf16', 'fp8', 'nvfp4'], describe: 'from .eqz: output dtype of floating-point tensors (default: each tensor\'s source dtype; quantized tensors are dequantized to it). fp8 / nvfp4 write a compressed-tensors checkpoint (vLLM) with the quantized tensors as stored' })
      .option('template', { type: 'string', describe: 'with --dtype nvfp4: an NVFP4 compressed-tensors folder whose files, sharding and other tensors are copied, its quantized modules replaced' })
      .option('alignment', { type: 'number', default: 256, describe: 'to .eqz: payload alignment in bytes (power of two, 8..65536)' })
      .option('force', { alias: 'f', type: 'boolean', default: false, describe: 'replace an existing output' }),
    run(convert as never))
    .command('inspect <file>', 'show the header, metadata and tensor table of an .eqz file', (y) => y
      .positional('file', { type: 'string', demandOption: true })
      .option('json', { type: 'boolean', default: false, describe: 'print one JSON object: { version, metadata, tensors, totals }' }),
    run(inspect as never))
    .command('validate <file>', 'check structure and checksums and decode every tensor; exit 0 when valid, 1 when not', (y) => y
      .positional('file', { type: 'string', demandOption: true }),
    run(validate as never))
    .command('eval <model>', 'perplexity of a Llama-family model over a token file, and KL against a reference', (y) => y
      .positional('model', { type: 'string', demandOption: true, describe: 'a Hugging Face model folder or an .eqz file (evaluated on its decoded weights)' })
      .option('tokens', { type: 'string', demandOption: true, describe: 'token ids, little-endian uint16 (.u16); a .json beside it gives ctx and the reference perplexity' })
      .option('ctx', { type: 'number', describe: 'window length (default: the token file\'s ctx, else max_position_embeddings); windows do not overlap' })
      .option('ref', { type: 'string', describe: 'reference model (folder or .eqz): also report mean KL(ref ‖ model) per token, nats' })
      .option('device', { choices: ['auto', 'gpu', 'cpu', 'js'] as const, default: 'auto' as const, describe: 'gpu: hardware WebGPU; cpu: software WebGPU adapter; js: TypeScript on the CPU, no WebGPU; auto: gpu if present, else js' })
      .option('max-windows', { type: 'number', describe: 'evaluate only the first N windows (quick checks)' })
      .option('json', { type: 'boolean', default: false, describe: 'print one JSON object' }),
    run(evalCommand as never))
    .demandCommand(1, 'name a command: convert, inspect, validate or eval')
    .strict()
    .version(VERSION)
    .help()
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .fail((message, error) => {
      throw error ?? new UsageError(message);
    });
  try {
    await parser.parseAsync();
    return status;
  } catch (error) {
    if (error instanceof UsageError) {
      out.error(`eqz: ${error.message}\nRun eqz --help for usage.`);
      return 2;
    }
    out.error(`eqz: ${error instanceof EqzError || error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
}

class UsageError extends Error {}
