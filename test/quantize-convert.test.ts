// eqz convert with quantization, end to end on a real model: the rate asked for is the rate stored, decoding
// follows the spec's formula bit for bit, and the CPU and both software-adapter paths write identical files.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { acquireGpu } from '../src/gpu/device.js';
import { openModel, writeModel } from '../src/io/model-folder.js';
import { encodeModel } from '../src/convert/encode.js';
import { quantizingEncoder, sharedHeadsImportance } from '../src/convert/quantize.js';
import { EqzReader } from '../src/container/reader.js';
import { fileSource } from '../src/container/file-source.js';
import { initCodec, decodeStream } from '../src/codec/index.js';
import { E4M3_VALUES, fromFloat32, toFloat32 } from '../src/tensor/dtype.js';
import { openEqz } from '../src/decoder.js';
import { eqz, SHARED_DATA, tempDir } from './helpers.js';

const dir = await tempDir();
const model = join(SHARED_DATA, 'models', 'stories260K');


/** The spec §7.5 dequantization written out independently: scale_dtype BF16, E4M3 codes. */
function independentDequantize(payload: Uint8Array, rows: number, cols: number): Float32Array {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  expect(view.getUint32(0, true)).toBe(2); // BF16 scales
  const scales = Array.from({ length: rows }, (_, r) => new Float32Array(new Uint32Array([view.getUint16(8 + 2 * r, true) << 16]).buffer)[0]!);
  const codes = decodeStream(payload.subarray((8 + 2 * rows + 3) & ~3)).symbols;
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < out.length; i++) out[i] = Math.fround(E4M3_VALUES[codes[i]!]! * scales[Math.floor(i / cols)]!);
  return out;
}

describe('sharedHeadsImportance', () => {
  it('weighs key and value projections by the query heads each serves, nothing else', () => {
    const gqa = sharedHeadsImportance({ num_attention_heads: 32, num_key_value_heads: 8 });
    expect(gqa('model.layers.0.self_attn.k_proj.weight')).toBe(4);
    expect(gqa('model.layers.0.self_attn.v_proj.weight')).toBe(4);
    expect(gqa('model.layers.0.self_attn.q_proj.weight')).toBe(1);
    expect(gqa('model.layers.0.mlp.up_proj.weight')).toBe(1);
    expect(sharedHeadsImportance({ num_attention_heads: 8 })('model.layers.0.self_attn.k_proj.weight')).toBe(1);
    expect(sharedHeadsImportance({ num_attention_heads: 8, num_key_value_heads: 3 })('a.k_proj.weight')).toBe(1);
    expect(sharedHeadsImportance(undefined)('a.k_proj.weight')).toBe(1);
  });
});

describe('eqz convert --bits on stories260K', () => {
  it('hits the rate, and --dtype bf16 decodes per the spec formula', async () => {
    const packed = join(dir, 's3.eqz');
    const result = await eqz('convert', model, '-o', packed, '--bits', '3', '--device', 'cpu');
    expect(result.status, result.err).toBe(0);
    const info = JSON.parse((await eqz('inspect', packed, '--json')).out);
    expect(Math.abs(info.totals.quantized.bitsPerParam - 3)).toBeLessThan(0.25);
    expect(info.totals.quantized.tensors).toBe(35); // 5 layers × 7 linears; embedding and norms stay lossless
    expect(info.metadata['eqz.quant.method']).toBe('entquant');

    const back = join(dir, 's3-bf16');
    expect((await eqz('convert', packed, '-o', back, '--dtype', 'bf16', '--device', 'wasm')).status).toBe(0);
    // The WebGPU decoder (software adapter here) writes the same bytes as the WASM one.
    const onGpu = join(dir, 's3-bf16-gpu');
    const gpuRun = await eqz('convert', packed, '-o', onGpu, '--dtype', 'bf16', '--device', 'cpu');
    expect(gpuRun.out).toContain('decoding on WebGPU');
    expect(await readFile(join(onGpu, 'model.safetensors'))).toEqual(await readFile(join(back, 'model.safetensors')));
    const restored = await openModel(back);
    const reader = await EqzReader.open(await fileSource(packed));
    await initCodec();
    for (const entry of reader.tensors) {
      const tensor = restored.tensors.find((t) => t.name === entry.name)!;
      expect(tensor.dtype).toBe('BF16');
      const bytes = await restored.readTensor(tensor);
      if (entry.encoding === 'fp8-e4m3') {
        const [rows, cols] = entry.shape as [number, number];
        const expected = fromFloat32(independentDequantize(await reader.readPayload(entry), rows, cols), 'BF16');
        expect(Buffer.from(bytes).equals(Buffer.from(expected)), entry.name).toBe(true);
      }
    }
    await reader.close();
    await restored.close();
    expect(JSON.parse(await readFile(join(back, 'config.json'), 'utf8'))).toEqual(JSON.parse(await readFile(join(model, 'config.json'), 'utf8')));
  });

  it('--format auto stores each tensor on the grid it chose, decoding to the error the quantizer reported', async () => {
    const packed = join(dir, 'auto.eqz');
    expect((await eqz('convert', model, '-o', packed, '--bits', '4', '--format', 'auto', '--device', 'cpu')).status).toBe(0);
    const file = await openEqz(new Uint8Array(await readFile(packed)));
    const stats = JSON.parse(String(file.reader.metadata.get('eqz.stats')!.value)) as Record<string, { relL2: number; importance?: number }>;
    // 8 query heads share 4 key/value heads: k_proj and v_proj errors weigh twice under the model-wide λ.
    expect(stats['model.layers.2.self_attn.k_proj.weight']!.importance).toBe(2);
    expect(stats['model.layers.2.self_attn.v_proj.weight']!.importance).toBe(2);
    expect(stats['model.layers.2.self_attn.q_proj.weight']!.importance).toBeUndefined();
    const original = await openModel(model);
    const grids = new Set<string>();
    for (const entry of file.tensors.filter((t) => t.encoding === 'int8' || t.encoding === 'fp8-e4m3')) {
      grids.add(entry.encoding);
      const decoded = toFloat32(await file.decode(entry.name, { dtype: 'F32' }), 'F32');
      const source = original.tensors.find((t) => t.name === entry.name)!;
      const weights = toFloat32(await original.readTensor(source), source.dtype);
      let error = 0;
      let norm = 0;
      for (let i = 0; i < weights.length; i++) {
        error += (decoded[i]! - weights[i]!) ** 2;
        norm += weights[i]! ** 2;
      }
      expect(Math.sqrt(error / norm), entry.name).toBeCloseTo(stats[entry.name]!.relL2, 6);
    }
    // Both grids win somewhere on this model, so a mix-up between them would show.
    expect([...grids].sort()).toEqual(['fp8-e4m3', 'int8']);
    await file.close();
    await original.close();
  });

  it('keeps a non-contiguous shard layout (layers interleaved across shards) through quantization', async () => {
    const source = await openModel(model);
    const names = source.tensors.map((t) => t.name);
    const layout = [0, 1].map((shard) => ({
      name: `model-0000${shard + 1}-of-00002.safetensors`, metadata: null, tensors: names.filter((_, i) => i % 2 === shard),
    }));
    const weightMap = Object.fromEntries(layout.flatMap((f) => f.tensors.map((n) => [n, f.name])));
    const smallFiles = new Map(source.smallFiles);
    smallFiles.set('model.safetensors.index.json', new TextEncoder().encode(JSON.stringify({ metadata: { total_size: 1040128 }, weight_map: weightMap })));
    const sharded = join(dir, 'interleaved');
    await writeModel(sharded, layout, smallFiles, source.tensors, (name) => source.readTensor(source.tensors.find((t) => t.name === name)!));
    const packed = join(dir, 'interleaved.eqz');
    expect((await eqz('convert', sharded, '-o', packed, '--lambda', '0.02', '--device', 'cpu')).status).toBe(0);
    const back = join(dir, 'interleaved-bf16');
    expect((await eqz('convert', packed, '-o', back, '--dtype', 'bf16')).status).toBe(0);
    const restored = await openModel(back);
    expect(restored.files.map((f) => [f.name, f.tensors])).toEqual(layout.map((f) => [f.name, f.tensors]));
    const index = JSON.parse(new TextDecoder().decode(restored.smallFiles.get('model.safetensors.index.json')));
    expect(index.weight_map).toEqual(weightMap);
    expect(index.metadata.total_size).toBe(restored.tensors.reduce((sum, t) => sum + t.byteLength, 0));
    const reader = await EqzReader.open(await fileSource(packed));
    await initCodec();
    const quantized = reader.tensors.filter((t) => t.encoding === 'fp8-e4m3');
    expect(quantized.length).toBe(35);
    for (const entry of quantized) {
      const [rows, cols] = entry.shape as [number, number];
      const expected = fromFloat32(independentDequantize(await reader.readPayload(entry), rows, cols), 'BF16');
      const tensor = restored.tensors.find((t) => t.name === entry.name)!;
      expect(Buffer.from(await restored.readTensor(tensor)).equals(Buffer.from(expected)), entry.name).toBe(true);
    }
    await reader.close();
    await restored.close();
    await source.close();
  });

  it('names the tensor holding a NaN weight and leaves no output', async () => {
    const source = await openModel(model);
    const poisoned = join(dir, 'poisoned');
    const victim = 'model.layers.2.mlp.up_proj.weight';
    await writeModel(poisoned, source.files, source.smallFiles, source.tensors, async (name) => {
      const bytes = new Uint8Array(await source.readTensor(source.tensors.find((t) => t.name === name)!));
      if (name === victim) new DataView(bytes.buffer).setFloat32(40, NaN, true);
      return bytes;
    });
    await source.close();
    const result = await eqz('convert', poisoned, '-o', join(dir, 'poisoned.eqz'), '--lambda', '0.02', '--device', 'cpu');
    expect(result.status).toBe(1);
    expect(result.err).toContain(victim);
    expect(result.err).toContain('InvalidValue');
    await expect(readFile(join(dir, 'poisoned.eqz'))).rejects.toThrow();
  });

  it('writes identical files on the CPU path and on both software adapters', async () => {
    const files: Buffer[] = [];
    const unchecked = { boundsChecks: false };
    const devices = [null, await acquireGpu('cpu', 'gles', unchecked), await acquireGpu('cpu', 'swiftshader', unchecked)];
    for (const [i, gpu] of devices.entries()) {
      const out = join(dir, `same-${i}.eqz`);
      const encodeTensor = await quantizingEncoder(model, {
        format: 'fp8-e4m3', optimizer: 'rd-search', lambda: 0.02, scaleDtype: 'BF16', selection: { include: ['model.layers.0.*_proj.weight', 'model.layers.4.mlp.*'] },
        protectOutliers: true, gpu, report: () => undefined,
      });
      const summary = await encodeModel(model, out, { encodeTensor, producer: 'test' });
      expect(summary.tensors.filter((t) => t.encoding === 'fp8-e4m3').length).toBe(10);
      files.push(await readFile(out));
    }
    expect(files[1]!.equals(files[0]!)).toBe(true);
    expect(files[2]!.equals(files[0]!)).toBe(true);
  });
});
