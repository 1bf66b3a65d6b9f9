/**
 * WebGPU plumbing of the quantizers: their WGSL kernels compiled once per device, buffers pooled per device
 * and size (a model's tensors repeat a handful of shapes, so the pool turns allocation into reuse), readback,
 * and the row chunking that keeps every storage binding within the adapter's limit (the GLES software adapter
 * allows 128 MiB).
 */
import { readWgsl } from '../gpu/wgsl-files.js';

const moduleCache = new WeakMap<GPUDevice, Map<string, Promise<GPUShaderModule>>>();
const pipelineCache = new WeakMap<GPUDevice, Map<string, Promise<GPUComputePipeline>>>();

function cached<T>(cache: WeakMap<GPUDevice, Map<string, Promise<T>>>, device: GPUDevice, key: string, make: () => Promise<T>): Promise<T> {
  let byKey = cache.get(device);
  if (!byKey) {
    byKey = new Map();
    cache.set(device, byKey);
  }
  let value = byKey.get(key);
  if (!value) {
    value = make();
    value.catch(() => byKey.delete(key));
    byKey.set(key, value);
  }
  return value;
}

/**
 * wgsl/`file` compiled once per device. (One module per file matters beyond speed: Dawn deduplicates identical
 * modules, and compiling the same source twice concurrently has crashed its GL backend here.)
 */
function shaderModule(device: GPUDevice, file: string): Promise<GPUShaderModule> {
  return cached(moduleCache, device, file, async () => {
    const module = device.createShaderModule({ label: file, code: readWgsl(file) });
    const errors = (await module.getCompilationInfo()).messages.filter((message) => message.type === 'error');
    if (errors.length > 0) {
      throw new Error(`${file} does not compile: ${errors.map((e) => `${e.lineNum}:${e.linePos} ${e.message}`).join('; ')}`);
    }
    return module;
  });
}

/** The compute pipeline of `entryPoint` in wgsl/`file`, created once per device. */
export function pipeline(device: GPUDevice, file: string, entryPoint: string): Promise<GPUComputePipeline> {
  return cached(pipelineCache, device, `${file}#${entryPoint}`, async () => {
    const module = await shaderModule(device, file);
    return device.createComputePipelineAsync({ label: `${file} ${entryPoint}`, layout: 'auto', compute: { module, entryPoint } });
  });
}

const bufferPools = new WeakMap<GPUDevice, Map<string, GPUBuffer[]>>();

function poolOf(device: GPUDevice, size: number, usage: number): GPUBuffer[] {
  let pools = bufferPools.get(device);
  if (!pools) {
    pools = new Map();
    bufferPools.set(device, pools);
  }
  const key = `${usage}:${size}`;
  let pool = pools.get(key);
  if (!pool) {
    pool = [];
    pools.set(key, pool);
  }
  return pool;
}

/** Most idle buffers kept per (size, usage); more are destroyed on release. */
const POOL_DEPTH = 4;

/** A buffer of at least `size` bytes (rounded up to 256) from the device's pool, or a new one. */
export function acquireBuffer(device: GPUDevice, size: number, usage: number): GPUBuffer {
  const rounded = Math.max(256, Math.ceil(size / 256) * 256);
  return poolOf(device, rounded, usage).pop() ?? device.createBuffer({ size: rounded, usage });
}

/** Returns buffers to their pools (destroying those beyond the pool depth). */
export function releaseBuffers(device: GPUDevice, buffers: readonly GPUBuffer[]): void {
  for (const buffer of buffers) {
    const pool = poolOf(device, buffer.size, buffer.usage);
    if (pool.length < POOL_DEPTH) pool.push(buffer);
    else buffer.destroy();
  }
}

/**
 * Copies `size` bytes of `source` back to the CPU (through a pooled staging buffer). Given `encoder` (unfinished),
 * the copy joins its commands in one submission: a pass that ends in a readback then costs one round trip.
 */
export async function readBack(device: GPUDevice, source: GPUBuffer, size: number, encoder = device.createCommandEncoder()): Promise<ArrayBuffer> {
  const staging = acquireBuffer(device, size, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
  encoder.copyBufferToBuffer(source, 0, staging, 0, Math.ceil(size / 4) * 4);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ, 0, Math.ceil(size / 4) * 4);
  const copy = staging.getMappedRange(0, Math.ceil(size / 4) * 4).slice(0, size);
  staging.unmap();
  releaseBuffers(device, [staging]);
  return copy;
}

/** Rows of a [rows, cols] f32 tensor split so each chunk's storage binding fits the device and one dispatch. */
export interface RowChunk {
  firstRow: number;
  rows: number;
}

/**
 * Splits `rows` rows of `rowBytes` each into chunks within the binding limit (the device's, or a smaller
 * `bindingLimit`) and 65535 workgroups.
 */
export function rowChunks(device: GPUDevice, rows: number, rowBytes: number, bindingLimit = Infinity): RowChunk[] {
  const limit = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize, bindingLimit);
  const perChunk = Math.min(device.limits.maxComputeWorkgroupsPerDimension, Math.floor(limit / rowBytes));
  if (perChunk < 1) throw new RangeError(`a row of ${rowBytes} bytes exceeds the adapter's storage binding limit (${limit} bytes)`);
  const chunks: RowChunk[] = [];
  for (let firstRow = 0; firstRow < rows; firstRow += perChunk) chunks.push({ firstRow, rows: Math.min(perChunk, rows - firstRow) });
  return chunks;
}
