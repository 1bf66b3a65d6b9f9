import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { EqzReader } from '../src/container/reader.js';
import { bufferSource } from '../src/container/sources.js';
import { EqzError } from '../src/errors.js';
import type { Manifest } from '../scripts/make-vectors.js';
import { initCodec, parseRansLayout, parseStreamHeader } from '../src/codec/index.js';
import { acquireGpu, type GpuContext, type SoftwareAdapter } from '../src/gpu/device.js';
import { GpuDecoder, type GpuDecodeRequest } from '../src/gpu/decode.js';
import { autoChunksPerGroup, planDecode, type PlanLimits } from '../src/gpu/decode-plan.js';
import {
  compareWithCpu, e4m3Codes, int8Codes, planesRequest, quantizedRequest, randomElements, rowScales, selfCheckRequests,
  syntheticEntry,
} from '../src/gpu/decode-selfcheck.js';

beforeAll(initCodec);

async function expectMatchesCpu(decoder: GpuDecoder, requests: GpuDecodeRequest[]): Promise<void> {
  expect(await compareWithCpu(decoder, requests)).toEqual([]);
}

/** A copy of `payload` with the u32 at `offset` replaced. */
function withU32(payload: Uint8Array, offset: number, value: number): Uint8Array {
  const copy = payload.slice();
  new DataView(copy.buffer).setUint32(offset, value, true);
  return copy;
}

const ADAPTERS: SoftwareAdapter[] = ['gles', 'swiftshader'];

const vectorsDir = new URL('../spec/vectors/', import.meta.url).pathname;
const manifest = JSON.parse(await readFile(join(vectorsDir, 'manifest.json'), 'utf8')) as Manifest;

/** The GPU decode requests of a vector file's tensors (nvfp4 excepted: the GPU decoder leaves it to the CPU). */
async function vectorRequests(file: string): Promise<GpuDecodeRequest[]> {
  const reader = await EqzReader.open(bufferSource(await readFile(join(vectorsDir, file))));
  const requests: GpuDecodeRequest[] = [];
  for (const entry of reader.tensors) {
    if (entry.encoding === 'nvfp4') continue;
    requests.push({ entry, payload: await reader.readPayload(entry), payloadOffset: reader.payloadOffset(entry) });
  }
  return requests;
}

describe.each(ADAPTERS)('GPU decode on the %s software adapter', (adapter) => {
  let gpu: GpuContext;
  let decoder: GpuDecoder;

  beforeAll(async () => {
    gpu = await acquireGpu('cpu', adapter);
    decoder = await GpuDecoder.create(gpu);
  });

  it('picks the kernel the adapter supports', () => {
    expect(decoder.kernel).toBe(adapter === 'gles' ? 'portable' : 'narrow');
  });

  it('decodes every encoding and output bit-exactly, all tensors in one call', async () => {
    // fp8-e4m3 to BF16 / F16 / F32 and codes + scales; F16 subnormals and overflow; int8 with rows shorter than a
    // lane row and a partial last row and chunk; one symbol; a one-symbol alphabet; stored; empty; planes of
    // 1, 2 and 4 bytes, as they are and converted; raw converted.
    await expectMatchesCpu(decoder, selfCheckRequests());
  });

  it('decodes the same with more dtypes and conversions, tensors one per call', async () => {
    for (const request of [
      planesRequest('f16', 'F16', 9_000, 11),
      planesRequest('i32', 'I32', 1_000, 14),
      planesRequest('f32-to-f16', 'F32', 4_099, 17, 'F16'),
      planesRequest('bf16-to-f16', 'BF16', 4_099, 18, 'F16'),
      planesRequest('empty-planes', 'BF16', 0, 9),
      quantizedRequest('int8-f16', 'int8', 'F16', [1, 4129], int8Codes(4129, 3), 'source', {}, Float32Array.of(2 ** -20)),
      quantizedRequest('stored-codes', 'fp8-e4m3', 'BF16', [3, 3], e4m3Codes(9, 8), 'codes', { mode: 'stored' }),
    ]) {
      await expectMatchesCpu(decoder, [request]);
    }
  });

  // Other pipelines: compiled in milliseconds on GLES, about ten seconds each on SwiftShader.
  it.runIf(adapter === 'gles')('gives the same bytes with decode tables in a storage buffer and fewer chunks per workgroup', async () => {
    for (const options of [{ table: 'storage', chunksPerWorkgroup: 'auto' }, { chunksPerWorkgroup: 3 }] as const) {
      const variant = await GpuDecoder.create(gpu, options);
      await expectMatchesCpu(variant, [
        quantizedRequest('bf16', 'fp8-e4m3', 'BF16', [20, 1000], e4m3Codes(20_000, 20), 'source', { chunkLog2: 12 }),
        planesRequest('f32', 'F32', 5_000, 21),
      ]);
    }
  });

  it('splits work over several dispatches and scratch rounds under small binding limits', async () => {
    // 64 KiB bindings: the fp8 tensor's 160 KB of BF16 and the stored one's 108 KB of F32 need several
    // dispatches; the planes tensors (48 KB of planes each) take turns in the 64 KiB scratch buffer.
    const small = await GpuDecoder.create(gpu, { maxBindingBytes: 64 * 1024, scratchBytes: 64 * 1024 });
    const requests = [
      quantizedRequest('fp8', 'fp8-e4m3', 'BF16', [40, 2000], e4m3Codes(80_000, 22), 'source', { chunkLog2: 12 }),
      planesRequest('f32-a', 'F32', 12_000, 23),
      planesRequest('f32-b', 'F32', 12_000, 24),
      quantizedRequest('stored', 'int8', 'F32', [9, 3000], int8Codes(27_000, 25), 'source', { mode: 'stored' }),
    ];
    const job = await small.prepare(requests);
    expect(job.dispatchCount).toBeGreaterThan(6);
    job.destroyInputs();
    job.destroyOutputs();
    await expectMatchesCpu(small, requests);
  });

  it('decodes every conformance vector to its listed sha256', async () => {
    for (const vector of manifest.valid) {
      const requests = await vectorRequests(vector.file);
      const tensors = await decoder.decodeToBuffers(requests);
      for (const [i, request] of requests.entries()) {
        const hash = createHash('sha256').update(await decoder.readBack(tensors[i]!)).digest('hex');
        expect(hash, `${vector.file} ${request.entry.name}`).toBe(vector.tensors.find((t) => t.name === request.entry.name)!.sha256);
      }
    }
  });

  it('rejects the invalid conformance vectors whose payloads are bad with their error class', async () => {
    let checked = 0;
    for (const vector of manifest.invalid) {
      // Container-level faults (header, table, checksums) are the reader's; only payload faults reach the GPU.
      const requests = await vectorRequests(vector.file).catch(() => undefined);
      if (!requests) continue;
      const error = await decoder.decodeToBuffers(requests).then(() => undefined, (e: unknown) => e);
      if (vector.file.includes('nvfp4')) continue;
      expect(error, vector.file).toBeInstanceOf(EqzError);
      expect((error as EqzError).code, vector.file).toBe(vector.error);
      checked++;
    }
    expect(checked).toBeGreaterThanOrEqual(9);
  });

  it('reports corrupt chunks as CorruptStream naming the tensor and chunk', async () => {
    const request = quantizedRequest('victim', 'fp8-e4m3', 'BF16', [8, 4096], e4m3Codes(32_768, 25), 'source', { chunkLog2: 12 });
    const streamAt = 8 + 8 * 4;
    const stream = request.payload.subarray(streamAt);
    const layout = parseRansLayout(stream, parseStreamHeader(stream));
    const bystander = quantizedRequest('bystander', 'fp8-e4m3', 'BF16', [4, 4096], e4m3Codes(16_384, 26), 'source', { chunkLog2: 12 });
    const corruptions: [Uint8Array, RegExp][] = [
      [withU32(request.payload, streamAt + layout.statesOffset + 3 * 128 + 8, 5), /chunk 3: a lane state is below 2\^16/],
      [withU32(request.payload, streamAt + layout.statesOffset + 5 * 128, 0x12345678), /chunk 5:/],
      [withU32(request.payload, streamAt + layout.wordsOffset + 2 * layout.wordStarts[2]! + 40, 0xdeadbeef), /chunk 2:/],
    ];
    for (const [payload, message] of corruptions) {
      const failed = decoder.decodeToBuffers([bystander, { ...request, payload, payloadOffset: 1000 }]);
      await expect(failed).rejects.toMatchObject({ code: 'CorruptStream', tensor: 'victim' });
      await expect(failed).rejects.toThrow(message);
    }
    // Failures leave the decoder sound.
    await expectMatchesCpu(decoder, [bystander]);
  });

  it('rejects E4M3 NaN codes as InvalidValue, in rANS and stored streams', async () => {
    for (const mode of ['rans', 'stored'] as const) {
      const codes = e4m3Codes(10_000, 27);
      codes[7777] = 0xff;
      await expect(decoder.decodeToBuffers([quantizedRequest('nan', 'fp8-e4m3', 'BF16', [10, 1000], codes, 'source', { mode })]))
        .rejects.toMatchObject({ code: 'InvalidValue', tensor: 'nan' });
    }
  });

  it('rejects malformed payloads on the host before any GPU work', async () => {
    const request = quantizedRequest('bad', 'fp8-e4m3', 'BF16', [4, 100], e4m3Codes(400, 28), 'source');
    await expect(decoder.decodeToBuffers([{ ...request, payload: withU32(request.payload, 0, 7) }]))
      .rejects.toMatchObject({ code: 'Malformed', tensor: 'bad' });
    await expect(decoder.decodeToBuffers([{ ...request, payload: request.payload.subarray(0, request.payload.length - 4) }]))
      .rejects.toMatchObject({ code: 'Malformed', tensor: 'bad' });
    await expect(decoder.decodeToBuffers([{ ...request, payload: withU32(request.payload, 8, 0x7fc00000) }]))
      .rejects.toMatchObject({ code: 'InvalidValue', tensor: 'bad' });
    await expect(decoder.decodeToBuffers([{ entry: syntheticEntry('nvfp4', 'BF16', 'nvfp4', [16, 16]), payload: randomElements(16, 4, 1) }]))
      .rejects.toMatchObject({ code: 'UnknownEncoding', tensor: 'nvfp4' });
  });
});

describe('GPU decode fallback', () => {
  it('falls back to the narrow kernel when subgroups are too small for the wide one', async () => {
    const gpu = await acquireGpu('cpu', 'swiftshader');
    const decoder = await GpuDecoder.create(gpu, { kernel: 'wide' });
    await expectMatchesCpu(decoder, [
      quantizedRequest('fp8', 'fp8-e4m3', 'BF16', [10, 1000], e4m3Codes(10_000, 30), 'codes', { chunkLog2: 12 }),
    ]);
    expect(decoder.kernel).toBe('narrow');
  });
});

describe('GPU decode planning', () => {
  const limits = (maxBindingBytes: number): PlanLimits => ({
    maxBindingBytes, maxBufferBytes: 2 ** 30, scratchBytes: maxBindingBytes, chunksPerGroup: 8, maxChunksPerGroup: 8,
  });
  const noRaw = (): Uint8Array => new Uint8Array(0);

  it('keeps every dispatch binding within the limit and every chunk exactly once', () => {
    const requests = [
      quantizedRequest('a', 'fp8-e4m3', 'BF16', [64, 4096], e4m3Codes(64 * 4096, 40), 'source', { chunkLog2: 12 }),
      quantizedRequest('b', 'fp8-e4m3', 'F32', [16, 4096], e4m3Codes(16 * 4096, 41), 'source', { chunkLog2: 13 }, rowScales(16, 1)),
    ];
    for (const limit of [48 * 1024, 200 * 1024, 2 ** 30]) {
      const plan = planDecode(requests, limits(limit), noRaw);
      const dispatches = plan.rounds.flatMap((round) => round.decodes);
      for (const dispatch of dispatches) {
        expect(dispatch.dataSize).toBeLessThanOrEqual(limit);
        expect(dispatch.outputSize).toBeLessThanOrEqual(limit);
        expect(dispatch.outputOffset % 256).toBe(0);
      }
      expect(plan.chunks.length).toBe(64 + 8);
      expect(new Set(plan.chunks).size).toBe(plan.chunks.length);
      // One dispatch per pipeline (BF16, F32) when nothing limits them.
      if (limit < 2 ** 30) expect(dispatches.length).toBeGreaterThan(2);
      else expect(dispatches.length).toBe(2);
    }
  });

  it('spreads few chunks one per workgroup and shares workgroups when chunks abound', () => {
    expect([1, 64, 1023, 1024, 2048, 4096, 100_000].map((chunks) => autoChunksPerGroup(chunks))).toEqual([1, 1, 1, 2, 4, 8, 8]);
    expect(autoChunksPerGroup(100_000, 4)).toBe(4);
  });

  it('refuses a chunk that cannot fit a binding', () => {
    const request = quantizedRequest('big', 'fp8-e4m3', 'F32', [16, 4096], e4m3Codes(16 * 4096, 42), 'source', { chunkLog2: 16 });
    expect(() => planDecode([request], limits(64 * 1024), noRaw)).toThrow(/binding limit/);
  });
});
