// compressed-tensors checkpoints through eqz convert: NVFP4 quantized from full precision and exported, NVFP4
// folders stored losslessly and restored byte for byte, FP8 per-channel export — each checked by an independent
// dequantizer written here from the formulas (spec §7.5, §7.6).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openModel } from '../src/io/model-folder.js';
import { E4M3_VALUES, fromFloat32, toFloat32 } from '../src/tensor/dtype.js';
import { eqz, SHARED_DATA, tempDir } from './helpers.js';

const dir = await tempDir();


async function tensors(folder: string): Promise<Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>> {
  const model = await openModel(folder);
  const out = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
  for (const t of model.tensors) out.set(t.name, { dtype: t.dtype, shape: t.shape, bytes: await model.readTensor(t) });
  await model.close();
  return out;
}

const E2M1 = [0, 0.5, 1, 1.5, 2, 3, 4, 6];

describe('NVFP4 checkpoints', () => {
  const nvfp4Eqz = join(dir, 'b.eqz');
  const exported = join(dir, 'b-nvfp4');

  // The --bits search runs NVFP4 searches on the software adapter: about 100 s alone, more in a loaded run.
  it('quantize to 3 bits → export --dtype nvfp4: an independent dequantizer equals --dtype bf16', async () => {
    const model = join(SHARED_DATA, 'models', 'babyllama-tok105');
    expect((await eqz('convert', model, '-o', nvfp4Eqz, '--format', 'nvfp4', '--bits', '3', '--device', 'cpu')).status).toBe(0);
    const rate = JSON.parse((await eqz('inspect', nvfp4Eqz, '--json')).out).totals.quantized;
    expect(rate.tensors).toBe(35);
    expect(Math.abs(rate.bitsPerParam - 3)).toBeLessThan(0.25);
    expect((await eqz('convert', nvfp4Eqz, '-o', exported, '--dtype', 'nvfp4')).status).toBe(0);
    expect((await eqz('convert', nvfp4Eqz, '-o', join(dir, 'b-bf16'), '--dtype', 'bf16')).status).toBe(0);
    const config = JSON.parse(await readFile(join(exported, 'config.json'), 'utf8'));
    expect(config.quantization_config.format).toBe('nvfp4-pack-quantized');
    expect(config.torch_dtype).toBe('bfloat16');
    const packed = await tensors(exported);
    const reference = await tensors(join(dir, 'b-bf16'));
    let modules = 0;
    for (const [name, t] of packed) {
      if (!name.endsWith('.weight_packed')) continue;
      modules++;
      const module = name.slice(0, -'.weight_packed'.length);
      const [rows, half] = t.shape as [number, number];
      const cols = half * 2;
      const scales = packed.get(`${module}.weight_scale`)!.bytes;
      const global = new DataView(packed.get(`${module}.weight_global_scale`)!.bytes.buffer).getFloat32(0, true);
      const m = Math.fround(1 / global);
      const values = new Float32Array(rows * cols);
      for (let i = 0; i < values.length; i++) {
        const code = (t.bytes[i >> 1]! >> ((i & 1) * 4)) & 15;
        const e2m1 = (code & 8 ? -1 : 1) * E2M1[code & 7]!;
        values[i] = Math.fround(Math.fround(e2m1 * E4M3_VALUES[scales[Math.floor(i / 16)]!]!) * m);
      }
      expect(Buffer.from(fromFloat32(values, 'BF16')).equals(Buffer.from(reference.get(`${module}.weight`)!.bytes)), module).toBe(true);
    }
    expect(modules).toBe(35);
  }, 400_000);

  it('an NVFP4 folder → .eqz → folder is byte-identical per tensor, and the .eqz is smaller', async () => {
    const packed = join(dir, 'imported.eqz');
    expect((await eqz('convert', exported, '-o', packed, '--lossless')).status).toBe(0);
    const info = JSON.parse((await eqz('inspect', packed, '--json')).out);
    expect(info.tensors.filter((t: { encoding: string }) => t.encoding === 'nvfp4').length).toBe(35);
    const original = await tensors(exported);
    const sourceBytes = [...original.values()].reduce((sum, t) => sum + t.bytes.length, 0);
    expect(info.totals.fileBytes).toBeLessThan(sourceBytes);
    expect((await eqz('convert', packed, '-o', join(dir, 'restored'))).status).toBe(0);
    const restored = await tensors(join(dir, 'restored'));
    expect([...restored.keys()]).toEqual([...original.keys()]);
    for (const [name, t] of original) expect(Buffer.from(restored.get(name)!.bytes).equals(Buffer.from(t.bytes)), name).toBe(true);
    expect(await readFile(join(dir, 'restored', 'config.json'))).toEqual(await readFile(join(exported, 'config.json')));
  });

  it('export refuses a template whose shapes do not match, leaving nothing behind', async () => {
    const stories = join(dir, 's.eqz');
    expect((await eqz('convert', join(SHARED_DATA, 'models', 'stories260K'), '-o', stories, '--format', 'nvfp4', '--lambda', '0.01', '--device', 'cpu')).status).toBe(0);
    const result = await eqz('convert', stories, '-o', join(dir, 'mismatch'), '--dtype', 'nvfp4', '--template', exported);
    expect(result.status).toBe(1);
    expect(result.err).toMatch(/Malformed.*weight_packed/);
    await expect(readFile(join(dir, 'mismatch', 'config.json'))).rejects.toThrow();
  });
});

describe('FP8 per-channel export', () => {
  it('writes F8_E4M3 weights with [out, 1] scales whose product equals --dtype f32', async () => {
    const model = join(SHARED_DATA, 'models', 'stories260K');
    const packed = join(dir, 'fp8.eqz');
    expect((await eqz('convert', model, '-o', packed, '--bits', '4', '--device', 'cpu')).status).toBe(0);
    expect((await eqz('convert', packed, '-o', join(dir, 'fp8'), '--dtype', 'fp8')).status).toBe(0);
    expect((await eqz('convert', packed, '-o', join(dir, 'f32'), '--dtype', 'f32')).status).toBe(0);
    const config = JSON.parse(await readFile(join(dir, 'fp8', 'config.json'), 'utf8'));
    expect(config.quantization_config.format).toBe('float-quantized');
    const fp8 = await tensors(join(dir, 'fp8'));
    const f32 = await tensors(join(dir, 'f32'));
    let checked = 0;
    for (const [name, t] of fp8) {
      if (t.dtype !== 'F8_E4M3') continue;
      checked++;
      const scale = fp8.get(`${name}_scale`)!;
      expect(scale.shape).toEqual([t.shape[0], 1]);
      const scales = toFloat32(scale.bytes, scale.dtype as 'F32');
      const cols = t.shape[1]!;
      const values = Float32Array.from(t.bytes, (code, i) => E4M3_VALUES[code]! * scales[Math.floor(i / cols)]!);
      expect(Buffer.from(values.buffer).equals(Buffer.from(f32.get(name)!.bytes)), name).toBe(true);
    }
    expect(checked).toBeGreaterThan(30);
  });
});
