/**
 * The `eqz` command line: convert, inspect, validate. Each command is a thin layer over the library; errors on bad
 * input print one line (code, what, tensor, byte offset) and exit with status 1.
 */
import { stat } from 'node:fs/promises';
import yargs from 'yargs';
import { EqzError } from '../errors.js';
import { fileSource } from '../container/file-source.js';
import { EqzReader } from '../container/reader.js';
import { numElements, type MetadataValue } from '../container/table.js';
import { ValueType } from '../container/format.js';
import { decodeTensor } from '../decode/tensor.js';
import { encodeModel } from '../convert/encode.js';
import { decodeModel } from '../convert/decode.js';
import { losslessEncoder } from '../convert/encoders.js';
import { Progress, formatSeconds } from './progress.js';
import { VERSION } from '../version.js';
import { acquireGpu, type GpuContext } from '../gpu/device.js';
import { evaluate } from '../eval/evaluate.js';
import { readTokenFile } from '../eval/tokens.js';
import { openWeightSource } from '../eval/weight-sources.js';

type Output = { log: (line: string) => void; error: (line: string) => void };

const isEqz = (path: string): boolean => path.toLowerCase().endsWith('.eqz');
const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(2)} MB`;

async function convert(argv: { input: string; output: string; lossless: boolean; dtype?: string; force: boolean; alignment: number }, out: Output): Promise<number> {
  if (isEqz(argv.input)) {
    if (isEqz(argv.output)) throw new Error('both input and output are .eqz files: convert goes from safetensors/folder to .eqz or back');
    let progress: Progress | undefined;
    const result = await decodeModel(argv.input, argv.output, {
      dtype: argv.dtype?.toUpperCase() as 'F32' | 'F16' | 'BF16' | undefined,
      overwrite: argv.force,
      onProgress: (done, total, bytes) => {
        progress ??= new Progress('decode', total, { unit: 'tensors/s' });
        progress.update(done, `${done}/${total} tensors, ${mb(bytes)}`);
      },
    });
    progress?.done();
    out.log(`wrote ${argv.output}: ${result.tensors} tensors, ${mb(result.bytes)} in ${formatSeconds(result.seconds)}`);
    return 0;
  }
  if (!isEqz(argv.output)) throw new Error(`output "${argv.output}" must end in .eqz when the input is a safetensors file or folder`);
  if (!argv.lossless) throw new Error('choose how to store the weights: --lossless (more modes come with quantization)');
  if (!argv.force && await stat(argv.output).then(() => true, () => false)) {
    throw new Error(`${argv.output} exists (use --force to replace it)`);
  }
  let progress: Progress | undefined;
  const summary = await encodeModel(argv.input, argv.output, {
    encodeTensor: losslessEncoder(),
    alignment: argv.alignment,
    producer: `eqz ${VERSION}`,
    onProgress: (p) => {
      progress ??= new Progress('encode', p.sourceBytesTotal, { unit: 'MB/s', unitScale: 1e6 });
      progress.update(p.sourceBytesDone, `${p.tensorsDone}/${p.tensorsTotal} tensors, ratio ${(p.storedBytes / Math.max(1, p.sourceBytesDone)).toFixed(3)}`);
    },
  });
  progress?.done();
  const bits = (summary.fileBytes * 8) / Math.max(1, summary.params);
  out.log(`wrote ${argv.output}: ${summary.tensors.length} tensors, ${summary.params} params, ${mb(summary.sourceBytes)} → ${mb(summary.fileBytes)} `
    + `(ratio ${(summary.fileBytes / Math.max(1, summary.sourceBytes)).toFixed(4)}, ${bits.toFixed(3)} bits/param) in ${formatSeconds(summary.seconds)}`);
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
  totals: { params: number; storedBytes: number; bitsPerParam: number; fileBytes: number };
}> {
  const reader = await EqzReader.open(await fileSource(path));
  try {
    const tensors = reader.tensors.map((t) => {
      const params = numElements(t.shape);
      return { name: t.name, shape: t.shape, dtype: t.dtype, encoding: t.encoding, storedBytes: t.size, bitsPerParam: params ? (t.size * 8) / params : 0 };
    });
    const params = tensors.reduce((sum, t) => sum + numElements(t.shape), 0);
    const storedBytes = tensors.reduce((sum, t) => sum + t.storedBytes, 0);
    return {
      version: reader.version,
      metadata: Object.fromEntries([...reader.metadata].map(([key, value]) => [key, jsonValue(value)])),
      tensors,
      totals: { params, storedBytes, bitsPerParam: params ? (storedBytes * 8) / params : 0, fileBytes: reader.source.size },
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
      .option('lossless', { type: 'boolean', default: false, describe: 'store every tensor losslessly (exponent planes rANS-coded where that is smaller, else raw)' })
      .option('dtype', { choices: ['f32', 'f16', 'bf16'], describe: 'from .eqz: output dtype of floating-point tensors (default: each tensor\'s source dtype)' })
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
