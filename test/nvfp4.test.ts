import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { encodeStream, initCodec } from '../src/codec/index.js';
import { EqzError } from '../src/errors.js';
import { openModel, writeModel, type ModelSource } from '../src/io/model-folder.js';
import type { SafetensorsEntry } from '../src/io/safetensors.js';
import {
  E2M1_MAGNITUDES, NVFP4_BLOCK, absMax, absmaxGlobalScale, castE2M1, decodeNvfp4Payload, dequantizeNvfp4,
  detectCompressedTensors, encodeNvfp4Payload, exportNvfp4Folder, exportNvfp4WithTemplate, fp8ChannelQuantizationConfig,
  findNvfp4LambdaForBits, fusedGroups, groupFp8ChannelModules, measureNvfp4RateCurve, groupNvfp4Modules, ignoreList, nvfp4FromModuleBytes, nvfp4ModuleTensors,
  nvfp4QuantizationConfig, quantizeAbsmaxNvfp4, quantizeNvfp4, roundE2M1Magnitude, shareGlobalScales,
  withQuantizationConfig, EXPORT_REPORT, type Nvfp4Module, type Nvfp4Tensor, type TensorInfo,
} from '../src/nvfp4/index.js';
import { toFloat32 } from '../src/tensor/dtype.js';
import { syntheticWeights } from '../src/tensor/synthetic.js';
import { SHARED_DATA, tempDir } from './helpers.js';

const BABYLLAMA = join(SHARED_DATA, 'models/babyllama-tok105');

async function eqzError(work: (() => unknown) | Promise<unknown>): Promise<EqzError> {
  try {
    await (typeof work === 'function' ? work() : work);
  } catch (error) {
    expect(error).toBeInstanceOf(EqzError);
    return error as EqzError;
  }
  throw new Error('expected an EqzError');
}

// ---- An independent dequantizer, written from the formula of spec §7.6 and §7.2 (no code shared with src/). ----

function f32bits(x: number): number {
  return new Uint32Array(Float32Array.of(x).buffer)[0]!;
}

/** E4M3 value of a byte: sign, 4-bit exponent (bias 7), 3-bit mantissa; exponent 0 is subnormal (m/8 · 2^-6). */
function e4m3(byte: number): number {
  const sign = byte & 0x80 ? -1 : 1;
  const e = (byte >> 3) & 15;
  const m = byte & 7;
  return sign * (e === 0 ? (m / 8) * 2 ** -6 : (1 + m / 8) * 2 ** (e - 7));
}

function e2m1(code: number): number {
  return (code & 8 ? -1 : 1) * [0, 0.5, 1, 1.5, 2, 3, 4, 6][code & 7]!;
}

function toBf16(u: number): number {
  return Math.floor((u + 0x7fff + ((u >>> 16) & 1)) / 65536) & 0xffff;
}

function toF16(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a >= 0x477ff000) return sign | 0x7c00;
  if (a >= 0x38800000) {
    const b = a - 0x38000000;
    return sign | Math.floor((b + 0x0fff + (Math.floor(b / 8192) & 1)) / 8192);
  }
  const e = a >>> 23;
  const m = (a & 0x7fffff) | 0x800000;
  const shift = 126 - e;
  if (shift > 24) return sign;
  return sign | Math.floor((m + 2 ** (shift - 1) - 1 + (Math.floor(m / 2 ** shift) & 1)) / 2 ** shift);
}

/** Output bits of element i: y = RNE_T(mul32(e2m1 × e4m3, RNE_f32(1/g))). */
function independentDequantize(t: Nvfp4Tensor, dtype: 'F32' | 'BF16' | 'F16'): number[] {
  const m = Math.fround(1 / t.globalScale);
  const out: number[] = [];
  for (let i = 0; i < t.rows * t.cols; i++) {
    const code = i % 2 === 0 ? t.packed[i >> 1]! & 15 : t.packed[i >> 1]! >> 4;
    const scale = t.blockScales[Math.floor(i / 16)]!;
    const u = f32bits(Math.fround(e2m1(code) * e4m3(scale) * m));
    out.push(dtype === 'F32' ? u : dtype === 'BF16' ? toBf16(u) : toF16(u));
  }
  return out;
}

function outputWords(bytes: Uint8Array, dtype: 'F32' | 'BF16' | 'F16'): number[] {
  return dtype === 'F32' ? [...new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4)] : [...new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2)];
}

beforeAll(async () => {
  await initCodec();
});

describe('E2M1 rounding', () => {
  it('rounds to the nearest magnitude with ties to the even index, as compressed-tensors casts', () => {
    const cases: Array<[number, number]> = [
      [0, 0], [0.1, 0], [0.25, 0], [0.2500001, 1], [0.5, 1], [0.7499999, 1], [0.75, 2], [1.25, 2], [1.2500001, 3],
      [1.5, 3], [1.75, 4], [2.5, 4], [2.5000002, 5], [3, 5], [3.4999998, 5], [3.5, 6], [5, 6], [5.0000005, 7], [6, 7], [1e30, 7],
    ];
    for (const [x, index] of cases) {
      expect(roundE2M1Magnitude(x), `|x| = ${x}`).toBe(index);
      expect(castE2M1(x)).toBe(index);
      expect(castE2M1(-x)).toBe(x === 0 ? 0 : 8 | index);
    }
  });

  it('agrees with a brute-force nearest search (ties to the even index) on a dense grid', () => {
    for (let k = 0; k <= 7 * 512; k++) {
      const x = k / 512;
      let best = 0;
      for (let i = 1; i < 8; i++) {
        const d = Math.abs(x - E2M1_MAGNITUDES[i]!);
        const b = Math.abs(x - E2M1_MAGNITUDES[best]!);
        if (d < b || (d === b && i % 2 === 0)) best = i;
      }
      expect(roundE2M1Magnitude(x), `x = ${x}`).toBe(best);
    }
  });

  it('gives −0 for a negative value that rounds to zero, and +0 with positiveZero or for −0 itself', () => {
    expect(castE2M1(-0.1)).toBe(8);
    expect(castE2M1(-0.1, true)).toBe(0);
    expect(castE2M1(-0)).toBe(0);
    expect(castE2M1(-0.3, true)).toBe(9);
  });
});

describe('nvfp4 dequantization', () => {
  it('reproduces the worked example of spec §7.6', () => {
    const packed = new Uint8Array(8);
    packed[0] = 0x0b;
    const tensor: Nvfp4Tensor = { packed, blockScales: Uint8Array.of(0x3c), globalScale: new Float32Array(new Uint32Array([0x45662312]).buffer)[0]!, rows: 1, cols: 16 };
    expect(f32bits(Math.fround(1 / tensor.globalScale))).toBe(0x398e627f);
    expect(new Uint32Array(dequantizeNvfp4(tensor, 'F32').buffer)[0]).toBe(0xba202ecf);
    expect(new Uint16Array(dequantizeNvfp4(tensor, 'BF16').buffer)[0]).toBe(0xba20);
  });

  it('matches an independent dequantizer bit for bit on every code × scale pair at extreme global scales', () => {
    // 256 scales × 16 codes: every E4M3 byte but the NaNs, negatives and subnormals included.
    const scales = Array.from({ length: 256 }, (_, s) => s).filter((s) => (s & 0x7f) !== 0x7f);
    for (const globalScale of [2 ** -32, 3e-7, 1, 3682.19, 12345.678, 2 ** 32]) {
      const tensor: Nvfp4Tensor = {
        packed: new Uint8Array(scales.length * 8), blockScales: Uint8Array.from(scales), globalScale: Math.fround(globalScale), rows: scales.length, cols: 16,
      };
      for (let b = 0; b < scales.length; b++) for (let j = 0; j < 8; j++) tensor.packed[b * 8 + j] = (2 * j) | ((2 * j + 1) << 4);
      for (const dtype of ['F32', 'BF16', 'F16'] as const) {
        expect(outputWords(dequantizeNvfp4(tensor, dtype), dtype)).toEqual(independentDequantize(tensor, dtype));
      }
    }
  });
});

describe('nvfp4 payload', () => {
  const rows = 96;
  const cols = 256;
  let tensor: Nvfp4Tensor;
  beforeAll(() => {
    const q = quantizeAbsmaxNvfp4(syntheticWeights(rows, cols, { seed: 5 }), rows, cols);
    tensor = { ...q, rows, cols };
  });

  it('round-trips bit for bit with nibble, byte and automatic code packing, auto keeping the smaller', () => {
    const sizes: Record<string, number> = {};
    for (const codePacking of ['nibble', 'byte', 'auto'] as const) {
      const payload = encodeNvfp4Payload(tensor, { codePacking });
      sizes[codePacking] = payload.length;
      const decoded = decodeNvfp4Payload(payload, rows, cols);
      expect(Buffer.from(decoded.packed).equals(Buffer.from(tensor.packed))).toBe(true);
      expect(Buffer.from(decoded.blockScales).equals(Buffer.from(tensor.blockScales))).toBe(true);
      expect(decoded.globalScale).toBe(tensor.globalScale);
      if (codePacking !== 'auto') expect(decoded.codePacking).toBe(codePacking);
    }
    expect(sizes.auto).toBe(Math.min(sizes.nibble!, sizes.byte!));
    expect(sizes.auto).toBeLessThan((rows * cols) / 2 + (rows * cols) / 16);
  });

  it('rejects every truncation, trailing bytes and a wrong shape as Malformed', () => {
    const payload = encodeNvfp4Payload(tensor);
    for (let length = 0; length < payload.length; length += length < 64 ? 1 : 37) {
      const error = decodeError(payload.subarray(0, length), rows, cols);
      expect(error.code, `prefix of ${length} bytes`).toBe('Malformed');
    }
    const longer = new Uint8Array(payload.length + 4);
    longer.set(payload);
    expect(decodeError(longer, rows, cols)).toMatchObject({ code: 'Malformed', offset: payload.length });
    expect(decodeError(payload, rows + 1, cols).code).toBe('Malformed');
    expect(decodeError(payload, rows, cols + 16).code).toBe('Malformed');
    expect(decodeError(payload, rows, cols - 8).code).toBe('Malformed');
  });

  it('rejects bad header fields and NaN block scales', () => {
    const payload = encodeNvfp4Payload(tensor);
    const patched = (at: number, bytes: number[]) => {
      const copy = payload.slice();
      copy.set(bytes, at);
      return copy;
    };
    const f32 = (x: number) => [...new Uint8Array(Float32Array.of(x).buffer)];
    for (const bad of [NaN, Infinity, 0, -1, 2 ** 33, 2 ** -33]) {
      expect(decodeError(patched(0, f32(bad)), rows, cols), `global scale ${bad}`).toMatchObject({ code: 'InvalidValue', offset: 0 });
    }
    expect(decodeError(patched(4, [2]), rows, cols)).toMatchObject({ code: 'Malformed', offset: 4 });
    expect(decodeError(patched(6, [1]), rows, cols)).toMatchObject({ code: 'Malformed', offset: 6 });
    // A valid layout around a NaN block scale: the encoder refuses to write one, so assemble it here.
    const scales = tensor.blockScales.slice();
    scales[37] = 0xff;
    const scaleStream = encodeStream(scales);
    const codeStream = encodeStream(tensor.packed);
    const nan = new Uint8Array(8 + scaleStream.length + codeStream.length);
    nan.set(payload.subarray(0, 4));
    nan[4] = 1;
    nan.set(scaleStream, 8);
    nan.set(codeStream, 8 + scaleStream.length);
    const error = decodeError(nan, rows, cols);
    expect(error.code).toBe('InvalidValue');
    expect(error.message).toContain('row 2, block 5');
    expect(() => encodeNvfp4Payload({ ...tensor, blockScales: scales })).toThrow(/NaN/);
    expect(() => encodeNvfp4Payload({ ...tensor, globalScale: 0.1 })).toThrow(/not an f32/);
  });
});

function decodeError(payload: Uint8Array, rows: number, cols: number): EqzError {
  try {
    decodeNvfp4Payload(payload, rows, cols);
  } catch (error) {
    expect(error).toBeInstanceOf(EqzError);
    return error as EqzError;
  }
  throw new Error('the payload decoded');
}

describe('global scales', () => {
  it('follows llm-compressor: 448·6 / max|W| in the weight dtype, shared (the smallest) by q/k/v and gate/up', () => {
    expect(absmaxGlobalScale(0.5)).toBe(Math.fround(5376));
    expect(absmaxGlobalScale(0.3)).toBe(Math.fround(2688 / 0.3));
    expect(absmaxGlobalScale(0.3, 'BF16')).toBe(Math.fround(8960));
    expect(absmaxGlobalScale(0)).toBe(1);
    const names = ['m.layers.0.self_attn.q_proj', 'm.layers.0.self_attn.k_proj', 'm.layers.0.self_attn.v_proj', 'm.layers.0.self_attn.o_proj',
      'm.layers.0.mlp.gate_proj', 'm.layers.0.mlp.up_proj', 'm.layers.0.mlp.down_proj', 'm.layers.1.self_attn.q_proj'];
    expect(fusedGroups(names)).toEqual([names.slice(0, 3), names.slice(4, 6)]);
    const shared = shareGlobalScales(new Map(names.map((name, i) => [name, 100 + i])));
    expect(names.map((name) => shared.get(name))).toEqual([100, 100, 100, 103, 104, 104, 106, 107]);
  });
});

// ---- compressed-tensors folders made from babyllama-tok105 ----

interface Fixture {
  folder: string;
  modules: Map<string, Nvfp4Tensor>;
  originals: Map<string, Float32Array>;
}

/** A compressed-tensors NVFP4 folder of babyllama-tok105 as llm-compressor writes it (absmax, fused global scales). */
async function makeFixture(root: string): Promise<Fixture> {
  const source = await openModel(BABYLLAMA);
  try {
    const linear = source.tensors.filter((t) => t.shape.length === 2 && t.name.endsWith('.weight') && !/embed/.test(t.name));
    const originals = new Map<string, Float32Array>();
    for (const t of linear) originals.set(t.name.slice(0, -7), toFloat32(await source.readTensor(t), t.dtype));
    const scales = shareGlobalScales(new Map([...originals].map(([module, w]) => [module, absmaxGlobalScale(absMax(w))])));
    const modules = new Map<string, Nvfp4Tensor>();
    const tensorBytes = new Map<string, Uint8Array>();
    const entries: SafetensorsEntry[] = [];
    for (const t of source.tensors) {
      const module = t.name.slice(0, -7);
      const weights = originals.get(module);
      if (weights === undefined) {
        entries.push(t);
        tensorBytes.set(t.name, await source.readTensor(t));
        continue;
      }
      const [rows, cols] = t.shape as [number, number];
      const q = quantizeAbsmaxNvfp4(weights, rows, cols, { globalScale: scales.get(module) });
      modules.set(module, { ...q, rows, cols });
      for (const part of nvfp4ModuleTensors(module, { ...q, rows, cols })) {
        entries.push(part);
        tensorBytes.set(part.name, part.bytes);
      }
    }
    const config = withQuantizationConfig(source.smallFiles.get('config.json')!, nvfp4QuantizationConfig(['lm_head']));
    const smallFiles = new Map(source.smallFiles);
    smallFiles.set('config.json', config);
    const folder = join(root, 'babyllama-nvfp4');
    await writeModel(folder, [], smallFiles, entries, (name) => tensorBytes.get(name)!);
    return { folder, modules, originals };
  } finally {
    await source.close();
  }
}

async function readAll(model: ModelSource): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const t of model.tensors) out.set(t.name, await model.readTensor(t));
  return out;
}

describe('compressed-tensors NVFP4 folders', () => {
  let root: string;
  let fixture: Fixture;
  beforeAll(async () => {
    root = await tempDir('eqz-nvfp4-');
    fixture = await makeFixture(root);
  });

  it('are recognized from config.json, grouped, and round-trip through the nvfp4 payload byte for byte', async () => {
    const model = await openModel(fixture.folder);
    try {
      const config = JSON.parse(new TextDecoder().decode(model.smallFiles.get('config.json')!));
      expect(config.dtype).toBe('bfloat16');
      expect(detectCompressedTensors(config)).toEqual({ scheme: 'nvfp4-pack-quantized', ignore: ['lm_head'], quantizedActivations: false });
      const { modules, others } = groupNvfp4Modules(model.tensors);
      expect(modules.map((m) => m.module).sort()).toEqual([...fixture.modules.keys()].sort());
      expect(others.every((name) => !name.includes('proj'))).toBe(true);
      const bytes = await readAll(model);
      let storedBytes = 0;
      let sourceBytes = 0;
      for (const module of modules) {
        const tensor = nvfp4FromModuleBytes(module, { packed: bytes.get(module.packed)!, scale: bytes.get(module.scale)!, globalScale: bytes.get(module.globalScale)! });
        const payload = encodeNvfp4Payload(tensor);
        storedBytes += payload.length;
        sourceBytes += bytes.get(module.packed)!.length + bytes.get(module.scale)!.length + 4;
        const back = nvfp4ModuleTensors(module.module, decodeNvfp4Payload(payload, module.rows, module.cols, { tensor: module.packed }));
        for (const part of back) expect(Buffer.from(part.bytes).equals(Buffer.from(bytes.get(part.name)!)), part.name).toBe(true);
      }
      expect(storedBytes).toBeLessThan(sourceBytes);
    } finally {
      await model.close();
    }
  });

  it('share one global scale across q/k/v and gate/up, and decode to what an independent dequantizer computes', async () => {
    for (const [module, tensor] of fixture.modules) {
      if (module.endsWith('k_proj') || module.endsWith('v_proj')) {
        expect(tensor.globalScale).toBe(fixture.modules.get(module.replace(/[kv]_proj$/, 'q_proj'))!.globalScale);
      }
      if (module.endsWith('up_proj')) expect(tensor.globalScale).toBe(fixture.modules.get(module.replace('up_proj', 'gate_proj'))!.globalScale);
      for (const dtype of ['F32', 'BF16'] as const) {
        expect(outputWords(dequantizeNvfp4(tensor, dtype), dtype)).toEqual(independentDequantize(tensor, dtype));
      }
    }
  });

  it('export without a template: the three tensors per module, quantization_config, ignore and the report', async () => {
    const source = await openModel(BABYLLAMA);
    const out = join(root, 'exported');
    try {
      const shapes = new Map([...fixture.modules].map(([module, t]) => [module, { rows: t.rows, cols: t.cols }]));
      await exportNvfp4Folder(out, {
        layout: source.files,
        smallFiles: source.smallFiles,
        tensors: source.tensors.filter((t) => !shapes.has(t.name.slice(0, -7))),
        modules: shapes,
        readTensor: (name) => source.readTensor(source.tensors.find((t) => t.name === name)!),
        loadModule: async (module) => ({ tensor: fixture.modules.get(module)!, original: fixture.originals.get(module) }),
      });
    } finally {
      await source.close();
    }
    const [made, exported] = await Promise.all([openModel(fixture.folder), openModel(out)]);
    try {
      const [a, b] = await Promise.all([readAll(made), readAll(exported)]);
      expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
      for (const [name, bytes] of a) expect(Buffer.from(b.get(name)!).equals(Buffer.from(bytes)), name).toBe(true);
      const config = JSON.parse(new TextDecoder().decode(exported.smallFiles.get('config.json')!));
      expect(config.quantization_config).toEqual(nvfp4QuantizationConfig(['lm_head']));
      expect([config.dtype, config.torch_dtype]).toEqual(['bfloat16', 'bfloat16']);
      const report = JSON.parse(new TextDecoder().decode(exported.smallFiles.get(EXPORT_REPORT)!));
      expect(report.layers).toHaveLength(fixture.modules.size);
      const q0 = report.layers.find((l: { layer: string }) => l.layer === 'model.layers.0.self_attn.q_proj');
      expect(q0.shape).toEqual([128, 128]);
      expect(q0.rel_l1).toBeGreaterThan(0.03);
      expect(q0.rel_l1).toBeLessThan(0.2);
      expect(q0.stored_bits_per_param).toBeGreaterThan(3.5);
      expect(q0.stored_bits_per_param).toBeLessThan(4.7);
      expect(q0.code_entropy_bits).toBeLessThan(4);
    } finally {
      await Promise.all([made.close(), exported.close()]);
    }
  });

  it('export with a template replaces the modules, copies everything else, and refuses a mismatched template', async () => {
    // Replace every module by a re-quantization (own global scales, +0 codes): other tensors and files come along.
    const requantized = new Map<string, Nvfp4Tensor>();
    for (const [module, original] of fixture.originals) {
      const { rows, cols } = fixture.modules.get(module)!;
      requantized.set(module, { ...quantizeAbsmaxNvfp4(original, rows, cols, { positiveZero: true }), rows, cols });
    }
    const shapes = new Map([...requantized].map(([module, t]) => [module, { rows: t.rows, cols: t.cols }]));
    const out = join(root, 'templated');
    await exportNvfp4WithTemplate(out, fixture.folder, shapes, async (module) => ({ tensor: requantized.get(module)! }));
    const [template, exported] = await Promise.all([openModel(fixture.folder), openModel(out)]);
    try {
      const [a, b] = await Promise.all([readAll(template), readAll(exported)]);
      expect(exported.files.map((f) => f.tensors)).toEqual(template.files.map((f) => f.tensors));
      for (const [name, bytes] of a) {
        const module = name.replace(/\.weight_(packed|scale|global_scale)$/, '');
        const expected = requantized.has(module) && module !== name
          ? nvfp4ModuleTensors(module, requantized.get(module)!).find((t) => t.name === name)!.bytes : bytes;
        expect(Buffer.from(b.get(name)!).equals(Buffer.from(expected)), name).toBe(true);
      }
      for (const [name, bytes] of template.smallFiles) expect(Buffer.from(exported.smallFiles.get(name)!).equals(Buffer.from(bytes))).toBe(true);
    } finally {
      await Promise.all([template.close(), exported.close()]);
    }

    const wrong = new Map(shapes);
    wrong.set('model.layers.1.mlp.down_proj', { rows: 128, cols: 368 });
    const failed = join(root, 'mismatch');
    const error = await eqzError(exportNvfp4WithTemplate(failed, fixture.folder, wrong, async (module) => ({ tensor: requantized.get(module)! })));
    expect(error).toMatchObject({ code: 'Malformed', tensor: 'model.layers.1.mlp.down_proj.weight_packed' });
    expect(existsSync(failed)).toBe(false);
    expect((await readdir(root)).filter((name) => name.startsWith('mismatch'))).toEqual([]);
    const unknown = await eqzError(exportNvfp4WithTemplate(failed, fixture.folder, new Map([['model.layers.9.mlp.up_proj', { rows: 352, cols: 128 }]]), async () => {
      throw new Error('not reached');
    }));
    expect(unknown).toMatchObject({ code: 'Malformed', tensor: 'model.layers.9.mlp.up_proj.weight_packed' });
    expect(existsSync(failed)).toBe(false);
  });
});

describe('hostile compressed-tensors inputs', () => {
  const module = 'model.layers.0.mlp.down_proj';
  const good: TensorInfo[] = [
    { name: `${module}.weight_packed`, dtype: 'U8', shape: [8, 16] },
    { name: `${module}.weight_scale`, dtype: 'F8_E4M3', shape: [8, 2] },
    { name: `${module}.weight_global_scale`, dtype: 'F32', shape: [1] },
    { name: 'model.norm.weight', dtype: 'F32', shape: [32] },
  ];
  const without = (name: string) => good.filter((t) => t.name !== name);
  const replaced = (name: string, change: Partial<TensorInfo>) => good.map((t) => (t.name === name ? { ...t, ...change } : t));

  it('groups a valid module and names the tensor of every broken one', () => {
    expect(groupNvfp4Modules(good)).toEqual({
      modules: [{ module, packed: good[0]!.name, scale: good[1]!.name, globalScale: good[2]!.name, rows: 8, cols: 32 }],
      others: ['model.norm.weight'],
    });
    const cases: Array<[TensorInfo[], string]> = [
      [without(`${module}.weight_scale`), `${module}.weight_scale`],
      [without(`${module}.weight_global_scale`), `${module}.weight_global_scale`],
      [without(`${module}.weight_packed`), `${module}.weight_scale`],
      [replaced(`${module}.weight_scale`, { shape: [8, 4] }), `${module}.weight_scale`],
      [replaced(`${module}.weight_scale`, { dtype: 'F32' }), `${module}.weight_scale`],
      [replaced(`${module}.weight_global_scale`, { shape: [2] }), `${module}.weight_global_scale`],
      [replaced(`${module}.weight_global_scale`, { dtype: 'BF16' }), `${module}.weight_global_scale`],
      [replaced(`${module}.weight_packed`, { shape: [8, 12] }), `${module}.weight_packed`],
      [replaced(`${module}.weight_packed`, { dtype: 'I8' }), `${module}.weight_packed`],
    ];
    for (const [tensors, name] of cases) {
      let error: unknown;
      try {
        groupNvfp4Modules(tensors);
      } catch (caught) {
        error = caught;
      }
      expect(error, name).toBeInstanceOf(EqzError);
      expect(error).toMatchObject({ code: 'Malformed', tensor: name });
    }
  });

  it('rejects NaN block scales and bad global scales, naming the tensor', () => {
    const entry: Nvfp4Module = { module, packed: good[0]!.name, scale: good[1]!.name, globalScale: good[2]!.name, rows: 8, cols: 32 };
    const bytes = (scale: number[], global: number) => ({
      packed: new Uint8Array(128), scale: Uint8Array.from(scale), globalScale: new Uint8Array(Float32Array.of(global).buffer),
    });
    const scales = Array.from({ length: 16 }, () => 0x38);
    expect(nvfp4FromModuleBytes(entry, bytes(scales, 100)).globalScale).toBe(100);
    const nan = [...scales];
    nan[3] = 0x7f;
    for (const [input, name, code] of [
      [bytes(nan, 100), entry.scale, 'InvalidValue'], [bytes(scales, NaN), entry.globalScale, 'InvalidValue'],
      [bytes(scales, -2), entry.globalScale, 'InvalidValue'], [bytes(scales, 0), entry.globalScale, 'InvalidValue'],
      [bytes(scales.slice(1), 100), entry.scale, 'Malformed'],
    ] as const) {
      let error: unknown;
      try {
        nvfp4FromModuleBytes(entry, input);
      } catch (caught) {
        error = caught;
      }
      expect(error).toMatchObject({ code, tensor: name });
    }
  });

  it('detects the two schemes from config.json and refuses inconsistent ones', () => {
    expect(detectCompressedTensors({ quantization_config: nvfp4QuantizationConfig(['lm_head', 're:.*gate$']) }))
      .toEqual({ scheme: 'nvfp4-pack-quantized', ignore: ['lm_head', 're:.*gate$'], quantizedActivations: false });
    expect(detectCompressedTensors(fp8ChannelQuantizationConfig([]))).toMatchObject({ scheme: 'float-quantized' });
    expect(detectCompressedTensors({ model_type: 'llama' })).toBeNull();
    expect(detectCompressedTensors({ quantization_config: { quant_method: 'compressed-tensors', format: 'pack-quantized', config_groups: {} } })).toBeNull();
    const config = nvfp4QuantizationConfig([]) as { config_groups: { group_0: { weights: { group_size: number } } } };
    config.config_groups.group_0.weights.group_size = 32;
    expect(() => detectCompressedTensors(config)).toThrow(/group_size 16/);
    const w4a4 = nvfp4QuantizationConfig([]) as { config_groups: { group_0: Record<string, unknown> } };
    w4a4.config_groups.group_0.input_activations = { num_bits: 4, type: 'float', strategy: 'tensor_group', group_size: 16, dynamic: 'local' };
    expect(detectCompressedTensors(w4a4)?.quantizedActivations).toBe(true);
  });

  it('groups FP8 per-channel modules and lists the ignore set', () => {
    const tensors: TensorInfo[] = [
      { name: 'a.q_proj.weight', dtype: 'F8_E4M3', shape: [4, 8] }, { name: 'a.q_proj.weight_scale', dtype: 'BF16', shape: [4, 1] },
      { name: 'a.k_proj.weight', dtype: 'F8_E4M3', shape: [4, 8] }, { name: 'a.k_proj.weight_scale', dtype: 'BF16', shape: [4, 2] },
    ];
    expect(() => groupFp8ChannelModules(tensors)).toThrow(/a.k_proj.weight_scale/);
    expect(groupFp8ChannelModules(tensors.slice(0, 2)).modules).toEqual([{ module: 'a.q_proj', weight: 'a.q_proj.weight', scale: 'a.q_proj.weight_scale', rows: 4, cols: 8, scaleDtype: 'BF16' }]);
    const model: TensorInfo[] = [
      { name: 'model.embed_tokens.weight', dtype: 'F32', shape: [10, 32] }, { name: 'model.layers.0.mlp.up_proj.weight', dtype: 'F32', shape: [64, 32] },
      { name: 'model.layers.0.mlp.down_proj.weight', dtype: 'F32', shape: [32, 60] }, { name: 'model.norm.weight', dtype: 'F32', shape: [32] },
    ];
    expect(ignoreList(model, new Set(['model.layers.0.mlp.up_proj']))).toEqual(['lm_head', 'model.layers.0.mlp.down_proj']);
  });
});

describe('quantizeNvfp4 on babyllama-tok105', () => {
  it('rd-search beats absmax at λ = 0 and trades error for rate as λ grows; reference follows its λ too', async () => {
    const model = await openModel(BABYLLAMA);
    let weights: Float32Array;
    try {
      const t = model.tensors.find((x) => x.name === 'model.layers.1.mlp.gate_proj.weight')!;
      weights = toFloat32(await model.readTensor(t), t.dtype);
    } finally {
      await model.close();
    }
    const [rows, cols] = [352, 128];
    const absmax = await quantizeNvfp4(weights, rows, cols, { optimizer: 'absmax' });
    const best = await quantizeNvfp4(weights, rows, cols, { optimizer: 'rd-search', lambda: 0 });
    const cheap = await quantizeNvfp4(weights, rows, cols, { optimizer: 'rd-search', lambda: 0.05 });
    expect(best.relL2).toBeLessThan(absmax.relL2 * 0.95);
    expect(cheap.bitsPerParam).toBeLessThan(best.bitsPerParam - 0.3);
    expect(cheap.relL2).toBeGreaterThan(best.relL2);
    const payload = encodeNvfp4Payload({ ...cheap, rows, cols });
    expect(payload.length).toBe(cheap.payloadBytes);
    const referenceLow = await quantizeNvfp4(weights, rows, cols, { optimizer: 'reference', lambda: 0.02 });
    const referenceHigh = await quantizeNvfp4(weights, rows, cols, { optimizer: 'reference', lambda: 0.2 });
    expect(referenceHigh.bitsPerParam).toBeLessThan(referenceLow.bitsPerParam - 0.5);
    expect(referenceLow.relL1).toBeLessThan(referenceHigh.relL1);
    // At (no more than) the reference's rate, ours has less error in both norms.
    let matched = best;
    for (const lambda of [0.002, 0.005, 0.01, 0.02]) {
      matched = await quantizeNvfp4(weights, rows, cols, { optimizer: 'rd-search', lambda });
      if (matched.bitsPerParam <= referenceLow.bitsPerParam) break;
    }
    expect(matched.bitsPerParam).toBeLessThanOrEqual(referenceLow.bitsPerParam);
    expect(matched.relL2).toBeLessThan(referenceLow.relL2);
    expect(matched.relL1).toBeLessThan(referenceLow.relL1);
    expect(absmax.bitsPerParam).toBeLessThan(4.5);
    await expect(quantizeNvfp4(weights, rows, 120, { optimizer: 'absmax' })).rejects.toThrow(/multiple of 16|352, 120/);
  });
});

describe('rate targeting', () => {
  it('finds the λ for a target rate and measures a rate curve that falls with λ', async () => {
    const rows = 64;
    const cols = 256;
    const weights = syntheticWeights(rows, cols, { seed: 41 });
    const found = await findNvfp4LambdaForBits(weights, rows, cols, 3.2, {});
    expect(Math.abs(found.result.bitsPerParam - 3.2)).toBeLessThan(0.05);
    const curve = await measureNvfp4RateCurve(weights, rows, cols, {}, [2 ** -10, 2 ** -6, 2 ** -3]);
    expect(curve.params).toBe(rows * cols);
    expect(curve.bits[0]! / curve.params).toBeGreaterThan(curve.bits[2]! / curve.params + 1);
    expect(curve.bits[1]!).toBeLessThan(curve.bits[0]!);
  });
});

describe('report file', () => {
  it('holds valid JSON beside the weights', async () => {
    const root = await tempDir('eqz-nvfp4-report-');
    const fixture = await makeFixture(root);
    const shapes = new Map([[[...fixture.modules.keys()][0]!, { rows: 128, cols: 128 }]]);
    const out = join(root, 'one');
    await exportNvfp4WithTemplate(out, fixture.folder, shapes, async (module) => ({ tensor: fixture.modules.get(module)!, stats: { mse: 1e-5 } }));
    const report = JSON.parse(await readFile(join(out, EXPORT_REPORT), 'utf8'));
    expect(report.layers).toHaveLength(1);
    expect(report.layers[0].mse).toBe(1e-5);
    expect(report.aggregate.weighted_mse).toBe(1e-5);
    expect(report.template).toBe(fixture.folder);
  });
});
