import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { EqzReader } from '../src/container/reader.js';
import { bufferSource } from '../src/container/sources.js';
import { EqzError } from '../src/errors.js';
import type { Manifest } from '../scripts/make-vectors.js';
import { initCodec, parseRansLayout, parseStreamHeader } from '../src/codec/index.js';
import { decodePayload } from '../src/decode/tensor.js';
import { encodeNvfp4Payload, quantizeAbsmaxNvfp4, type Nvfp4Tensor } from '../src/nvfp4/index.js';
import { syntheticWeights } from '../src/tensor/synthetic.js';
import { eqz, tempDir } from './helpers.js';
import { acquireGpu, type GpuContext, type SoftwareAdapter } from '../src/gpu/device.js';
import { GpuDecoder, type GpuDecodeRequest } from '../src/gpu/decode.js';
import { autoChunksPerGroup, MAX_CHUNKS_PER_GROUP, planDecode, type PlanLimits } from '../src/gpu/decode-plan.js';
import {
  compareWithCpu, e4m3Codes, int8Codes, nvfp4Payload, nvfp4Request, planesRequest, quantizedRequest, randomNvfp4, rowScales,
  selfCheckRequests, syntheticEntry,
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

/** The GPU decode requests of a vector file's tensors. */
async function vectorRequests(file: string): Promise<GpuDecodeRequest[]> {
  const reader = await EqzReader.open(bufferSource(await readFile(join(vectorsDir, file))));
  const requests: GpuDecodeRequest[] = [];
  for (const entry of reader.tensors) {
    requests.push({ entry, payload: await reader.readPayload(entry), payloadOffset: reader.payloadOffset(entry) });
  }
  return requests;
}

/** The EqzError code the CPU decoder rejects `request` with (undefined if it decodes it). */
function cpuErrorCode(request: GpuDecodeRequest): string | undefined {
  const output = request.output ?? 'source';
  try {
    decodePayload(request.entry, request.payload, output === 'source' || output === 'codes' ? {} : { dtype: output });
    return undefined;
  } catch (error) {
    return (error as EqzError).code;
  }
}

/** The payload offset of an nvfp4 payload's code stream (after its header and block-scale stream). */
function codeStreamAt(payload: Uint8Array): number {
  return 8 + parseStreamHeader(payload.subarray(8)).byteLength;
}

/** Absmax NVFP4 (what llm-compressor writes) of LLM-like synthetic weights. */
function absmaxNvfp4(rows: number, cols: number, seed: number): Nvfp4Tensor {
  return { ...quantizeAbsmaxNvfp4(syntheticWeights(rows, cols, { seed }), rows, cols), rows, cols };
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

  it('refuses a device opened without bounds checks (files are untrusted)', async () => {
    const unchecked = await acquireGpu('cpu', adapter, { boundsChecks: false });
    expect(unchecked.boundsChecks).toBe(false);
    expect(gpu.boundsChecks).toBe(true);
    await expect(GpuDecoder.create(unchecked)).rejects.toThrow(/bounds checks/);
  });

  // Compiles every pipeline: about a minute on SwiftShader.
  it('decodes every encoding and output bit-exactly, all tensors in one call', async () => {
    // fp8-e4m3 to BF16 / F16 / F32 and codes + scales; F16 subnormals and overflow; int8 with rows shorter than a
    // lane row and a partial last row and chunk; one symbol; a one-symbol alphabet; stored; empty; planes of
    // 1, 2 and 4 bytes, as they are and converted; raw converted; nvfp4 of nibbles and bytes to each output.
    await expectMatchesCpu(decoder, selfCheckRequests());
  }, 300_000);

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
  it.runIf(adapter === 'gles')('gives the same bytes with decode tables in a storage buffer and other chunks per workgroup', async () => {
    // The most the device allows: beyond the 8 'auto' gives this kernel (20 chunks here), with workgroup arrays
    // sized to match.
    const most = Math.min(MAX_CHUNKS_PER_GROUP, Math.floor(gpu.device.limits.maxComputeInvocationsPerWorkgroup / 32));
    expect(most).toBeGreaterThan(8);
    for (const options of [{ table: 'storage', chunksPerWorkgroup: 'auto' }, { chunksPerWorkgroup: 3 }, { chunksPerWorkgroup: most }] as const) {
      const variant = await GpuDecoder.create(gpu, options);
      await expectMatchesCpu(variant, [
        quantizedRequest('bf16', 'fp8-e4m3', 'BF16', [20, 4000], e4m3Codes(80_000, 20), 'source', { chunkLog2: 12 }),
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
      expect(error, vector.file).toBeInstanceOf(EqzError);
      expect((error as EqzError).code, vector.file).toBe(vector.error);
      checked++;
    }
    expect(checked).toBeGreaterThanOrEqual(11);
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
      // The last chunk of the dispatch starting every lane at 2^16: each row takes a word per lane, far more than
      // the chunk has, so its lanes read past its words and past the end of the dispatch's data.
      [Array.from({ length: 32 }, (_, lane) => streamAt + layout.statesOffset + 7 * 128 + 4 * lane)
        .reduce((payload, at) => withU32(payload, at, 0x10000), request.payload), /chunk 7: the chunk needs more words than it has/],
    ];
    for (const [payload, message] of corruptions) {
      expect(cpuErrorCode({ ...request, payload })).toBe('CorruptStream');
      const failed = decoder.decodeToBuffers([bystander, { ...request, payload, payloadOffset: 1000 }]);
      await expect(failed).rejects.toMatchObject({ code: 'CorruptStream', tensor: 'victim' });
      await expect(failed).rejects.toThrow(message);
    }
    // Failures leave the decoder sound.
    await expectMatchesCpu(decoder, [bystander]);
  });

  it('rejects E4M3 NaN codes as InvalidValue, in rANS and stored streams, into every output', async () => {
    // Both NaN codes, at different rows of an output group, one in the chunk's last (partial) group.
    for (const [at, nan] of [[7777, 0xff], [9999, 0x7f], [4, 0x7f]] as const) {
      for (const mode of ['rans', 'stored'] as const) {
        for (const output of ['source', 'codes', 'F32'] as const) {
          const codes = e4m3Codes(10_000, 27);
          codes[at] = nan;
          await expect(decoder.decodeToBuffers([quantizedRequest('nan', 'fp8-e4m3', 'BF16', [10, 1000], codes, output, { mode })]))
            .rejects.toMatchObject({ code: 'InvalidValue', tensor: 'nan' });
        }
      }
    }
    // A chunk that does not decode wins over a NaN code earlier in its stream: the CPU decoder checks the codes
    // once the whole stream has decoded.
    const codes = e4m3Codes(10_000, 27);
    codes[5] = 0xff;
    const request = quantizedRequest('nan', 'fp8-e4m3', 'BF16', [10, 1000], codes, 'source', { chunkLog2: 12 });
    const streamAt = 8 + 10 * 4;
    const layout = parseRansLayout(request.payload.subarray(streamAt));
    const both = { ...request, payload: withU32(request.payload, streamAt + layout.statesOffset + 2 * 128, 5) };
    expect(cpuErrorCode(both)).toBe('CorruptStream');
    await expect(decoder.decodeToBuffers([both])).rejects.toMatchObject({ code: 'CorruptStream', tensor: 'nan' });
  });

  it('rejects malformed payloads on the host before any GPU work', async () => {
    const request = quantizedRequest('bad', 'fp8-e4m3', 'BF16', [4, 100], e4m3Codes(400, 28), 'source');
    await expect(decoder.decodeToBuffers([{ ...request, payload: withU32(request.payload, 0, 7) }]))
      .rejects.toMatchObject({ code: 'Malformed', tensor: 'bad' });
    await expect(decoder.decodeToBuffers([{ ...request, payload: request.payload.subarray(0, request.payload.length - 4) }]))
      .rejects.toMatchObject({ code: 'Malformed', tensor: 'bad' });
    await expect(decoder.decodeToBuffers([{ ...request, payload: withU32(request.payload, 8, 0x7fc00000) }]))
      .rejects.toMatchObject({ code: 'InvalidValue', tensor: 'bad' });
    await expect(decoder.decodeToBuffers([{ entry: syntheticEntry('raw', 'F32', 'raw', [4]), payload: new Uint8Array(16), output: 'BF16' }, {
      ...request, entry: { ...request.entry, encoding: 'unknown' as never },
    }])).rejects.toMatchObject({ code: 'UnknownEncoding', tensor: 'bad' });
  });

  it('decodes nvfp4 tensors of every packing and output bit-exactly, several per dispatch and beside fp8', async () => {
    // Absmax-quantized LLM-like weights (as llm-compressor writes them) in chunks of 2^12 symbols, so that a
    // tensor's chunks share dispatches and workgroups with other tensors' and the block-scale lookups cross chunks.
    const chunked = { chunkLog2: 12 };
    const weights = absmaxNvfp4(48, 1024, 50);
    const requests: GpuDecodeRequest[] = [];
    for (const packing of ['nibble', 'byte'] as const) {
      for (const output of ['BF16', 'F16', 'F32', 'codes'] as const) {
        requests.push(nvfp4Request(`${packing}-${output}`, 'BF16', weights, packing, output, chunked, chunked));
      }
    }
    requests.push(quantizedRequest('fp8', 'fp8-e4m3', 'BF16', [20, 1000], e4m3Codes(20_000, 51), 'source', chunked));
    await expectMatchesCpu(decoder, requests);
  });

  it('decodes nvfp4 odd shapes, empty tensors and the codec\'s own payloads', async () => {
    await expectMatchesCpu(decoder, [
      nvfp4Request('one-block', 'BF16', randomNvfp4(1, 16, 60), 'nibble'),
      nvfp4Request('one-block-byte', 'F32', randomNvfp4(1, 16, 61), 'byte', 'F16'),
      nvfp4Request('seven-rows', 'F16', randomNvfp4(7, 48, 62), 'byte', 'source', {}, { mode: 'rans' }),
      nvfp4Request('odd-chunk', 'BF16', randomNvfp4(13, 336, 63), 'nibble', 'F32', { chunkLog2: 12 }, { chunkLog2: 12 }),
      nvfp4Request('empty-rows', 'BF16', randomNvfp4(0, 64, 64), 'nibble'),
      nvfp4Request('empty-codes', 'BF16', randomNvfp4(0, 64, 64), 'byte', 'codes'),
      { entry: syntheticEntry('auto', 'BF16', 'nvfp4', [32, 512]), payload: encodeNvfp4Payload(absmaxNvfp4(32, 512, 65)) },
    ]);
  });

  it('splits nvfp4 work over dispatches under small binding limits', async () => {
    const small = await GpuDecoder.create(gpu, { maxBindingBytes: 64 * 1024 });
    const chunked = { chunkLog2: 12 };
    const requests = [
      nvfp4Request('nibble', 'BF16', randomNvfp4(64, 2048, 70), 'nibble', 'source', chunked, chunked),
      nvfp4Request('byte-f32', 'BF16', randomNvfp4(16, 2048, 71), 'byte', 'F32', chunked, chunked),
      nvfp4Request('stored', 'F16', randomNvfp4(20, 1024, 72), 'nibble', 'source', { mode: 'stored' }, { mode: 'stored' }),
    ];
    const job = await small.prepare(requests);
    // At least 4 + 2 + 1 for 256 KiB of BF16, 128 KiB of F32 and 40 KiB of F16 in 64 KiB bindings, and the block scales.
    expect(job.dispatchCount).toBeGreaterThanOrEqual(8);
    job.destroyInputs();
    job.destroyOutputs();
    await expectMatchesCpu(small, requests);
  });

  it('rejects bad nvfp4 payloads with the CPU decoder\'s error codes, on the host or from the kernels', async () => {
    const chunked = { chunkLog2: 12 };
    // 8192 blocks: the block-scale stream has two chunks, the code stream 32.
    const tensor = randomNvfp4(64, 2048, 80);
    const good = nvfp4Request('bad', 'BF16', tensor, 'nibble', 'source', chunked, chunked);
    const codesAt = codeStreamAt(good.payload);
    const scaleLayout = parseRansLayout(good.payload.subarray(8));
    const codeLayout = parseRansLayout(good.payload.subarray(codesAt));
    const withByte = (at: number, value: number): Uint8Array => {
      const copy = good.payload.slice();
      copy[at] = value;
      return copy;
    };
    const corruptScales = withU32(good.payload, 8 + scaleLayout.statesOffset + 128 + 8, 5);
    const nanScale = { ...tensor, blockScales: tensor.blockScales.slice() };
    nanScale.blockScales[5000] = 0xff;
    const nanRequest = nvfp4Request('bad', 'BF16', nanScale, 'nibble', 'source', chunked, chunked);
    const nanCodesAt = codeStreamAt(nanRequest.payload);
    const nanAndCorrupt = withU32(nanRequest.payload, nanCodesAt + parseRansLayout(nanRequest.payload.subarray(nanCodesAt)).statesOffset, 5);
    const cases: [string, GpuDecodeRequest, string, RegExp?][] = [
      ['global scale NaN', { ...good, payload: withU32(good.payload, 0, 0x7fc00000) }, 'InvalidValue'],
      ['global scale 0', { ...good, payload: withU32(good.payload, 0, 0) }, 'InvalidValue'],
      ['global scale 2^33', { ...good, payload: withU32(good.payload, 0, 0x50000000) }, 'InvalidValue'],
      ['code_packing 2', { ...good, payload: withByte(4, 2) }, 'Malformed'],
      ['reserved byte', { ...good, payload: withByte(6, 1) }, 'Malformed'],
      ['24 columns', { ...good, entry: { ...good.entry, shape: [128, 24] } }, 'Malformed'],
      ['rank 3', { ...good, entry: { ...good.entry, shape: [64, 2, 1024] } }, 'Malformed'],
      ['dtype I32', { ...good, entry: { ...good.entry, dtype: 'I32' } }, 'UnsupportedDtype'],
      ['code stream of bytes for nibbles', { ...good, payload: withByte(4, 1) }, 'Malformed'],
      ['trailing bytes', { ...good, payload: Uint8Array.from([...good.payload, 0, 0, 0, 0]) }, 'Malformed'],
      ['truncated', { ...good, payload: good.payload.subarray(0, good.payload.length - 4) }, 'Malformed'],
      ['corrupt block-scale chunk', { ...good, payload: corruptScales }, 'CorruptStream', /block-scale stream chunk 1:/],
      ['corrupt code chunk', { ...good, payload: withU32(good.payload, codesAt + codeLayout.statesOffset + 7 * 128, 0x12345678) },
        'CorruptStream', /code stream chunk 7:/],
      // The CPU decodes the block scales before the codes: their failure is the one reported.
      ['corrupt in both', { ...good, payload: withU32(corruptScales, codesAt + codeLayout.statesOffset, 0x12345678) },
        'CorruptStream', /block-scale stream chunk 1:/],
      ['NaN block scale', nvfp4Request('bad', 'BF16', nanScale, 'byte', 'F32', chunked, chunked), 'InvalidValue', /block-scale stream chunk 1:/],
      ['NaN block scale, stored', nvfp4Request('bad', 'BF16', nanScale, 'nibble', 'codes', { mode: 'stored' }), 'InvalidValue', /block-scale stream/],
      // The block scales are checked before the codes are decoded.
      ['NaN block scale, corrupt code chunk', { ...nanRequest, payload: nanAndCorrupt }, 'InvalidValue', /block-scale stream chunk 1:/],
    ];
    for (const [what, request, code, message] of cases) {
      expect(cpuErrorCode(request), what).toBe(code);
      const failed = decoder.decodeToBuffers([request]);
      await expect(failed, what).rejects.toMatchObject({ code, tensor: 'bad' });
      if (message) await expect(failed, what).rejects.toThrow(message);
    }
    await expectMatchesCpu(decoder, [good]);
  });
});

describe('GPU decode fallback', () => {
  it('falls back to the narrow kernel when subgroups are too small for the wide one', async () => {
    const gpu = await acquireGpu('cpu', 'swiftshader');
    const decoder = await GpuDecoder.create(gpu, { kernel: 'wide' });
    // The wide kernel's pipelines compile here (nvfp4's included), though only a GPU with subgroups of 32+ runs them.
    await expectMatchesCpu(decoder, [
      quantizedRequest('fp8', 'fp8-e4m3', 'BF16', [10, 1000], e4m3Codes(10_000, 30), 'codes', { chunkLog2: 12 }),
      nvfp4Request('nvfp4-bf16', 'BF16', randomNvfp4(4, 1024, 31), 'nibble'),
      nvfp4Request('nvfp4-codes', 'BF16', randomNvfp4(4, 1024, 32), 'nibble', 'codes'),
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
    expect([1, 64, 1023, 1024, 2048, 4096, 100_000].map((chunks) => autoChunksPerGroup(chunks))).toEqual([1, 1, 1, 2, 4, 8, 32]);
    expect(autoChunksPerGroup(100_000, 4)).toBe(4);
    expect(autoChunksPerGroup(100_000, 24)).toBe(16);
  });

  it('plans nvfp4 block scales first, reading them within the binding limit', () => {
    const chunked = { chunkLog2: 12 };
    const requests = [
      nvfp4Request('a', 'BF16', randomNvfp4(64, 4096, 90), 'nibble', 'source', chunked, chunked),
      quantizedRequest('b', 'fp8-e4m3', 'BF16', [16, 4096], e4m3Codes(16 * 4096, 91), 'source', chunked),
      nvfp4Request('c', 'F32', randomNvfp4(32, 4096, 92), 'byte', 'source', chunked, chunked),
      nvfp4Request('d', 'F32', randomNvfp4(32, 4096, 93), 'nibble', 'codes', chunked, chunked),
    ];
    for (const limit of [48 * 1024, 2 ** 30]) {
      const plan = planDecode(requests, limits(limit), noRaw);
      const [round] = plan.rounds;
      const blockScaleStreams = round!.decodes.flatMap((d) => d.chunks).filter((c) => c.stream.part === 'block-scale stream');
      // 16 + 8 + 8 blocks of 4096 scales; they take the lowest chunk ids.
      expect(blockScaleStreams.length).toBe(4 + 2 + 2);
      expect(plan.chunks.slice(0, 8)).toEqual(blockScaleStreams);
      expect(plan.chunks.length).toBe(8 + 64 + 16 + 16 + 32);
      const temporary = plan.arenas.filter((arena) => arena.temporary);
      expect(temporary.reduce((sum, arena) => sum + arena.size, 0)).toBe(64 * 256 + 32 * 256);
      for (const dispatch of round!.decodes) {
        expect(dispatch.dataSize).toBeLessThanOrEqual(limit);
        expect(dispatch.outputSize).toBeLessThanOrEqual(limit);
        const dequantizing = dispatch.pipeline.nvfp4Elements > 0;
        expect(dispatch.blockScales !== undefined).toBe(dequantizing);
        if (dispatch.blockScales) {
          expect(plan.arenas[dispatch.blockScales.arena]!.temporary).toBe(true);
          expect(dispatch.blockScales.offset % 256).toBe(0);
          expect(dispatch.blockScales.size).toBeLessThanOrEqual(limit);
        }
      }
    }
  });

  it('writes nvfp4 payloads as the codec does', () => {
    const tensor = randomNvfp4(8, 256, 94);
    for (const codePacking of ['nibble', 'byte'] as const) {
      expect(nvfp4Payload(tensor, codePacking)).toEqual(encodeNvfp4Payload(tensor, { codePacking }));
    }
  });

  it('refuses a chunk that cannot fit a binding', () => {
    const request = quantizedRequest('big', 'fp8-e4m3', 'F32', [16, 4096], e4m3Codes(16 * 4096, 42), 'source', { chunkLog2: 16 });
    expect(() => planDecode([request], limits(64 * 1024), noRaw)).toThrow(/binding limit/);
  });
});

describe('eqz convert --device cpu (the software WebGPU adapter)', () => {
  it('decodes every tensor of the conformance vectors, nvfp4 included, to the bytes the WASM decoder writes', async () => {
    const dir = await tempDir();
    const input = join(vectorsDir, 'valid', 'encodings.eqz');
    for (const dtype of ['bf16', 'f32']) {
      const onGpu = await eqz('convert', input, '-o', join(dir, `gpu-${dtype}`), '--dtype', dtype, '--device', 'cpu');
      expect(onGpu.status, onGpu.err).toBe(0);
      expect(onGpu.out).toContain('decoding on WebGPU');
      expect((await eqz('convert', input, '-o', join(dir, `wasm-${dtype}`), '--dtype', dtype, '--device', 'wasm')).status).toBe(0);
      expect(await readFile(join(dir, `gpu-${dtype}`, 'model.safetensors'))).toEqual(await readFile(join(dir, `wasm-${dtype}`, 'model.safetensors')));
    }
  });
});
