// Decodes every conformance vector with the embeddable decoder (dist/src/decoder.js), fetching the files with HTTP
// range requests, twice: on the CPU (file.decode, WASM) and into GPUBuffers on this page's WebGPU device
// (file.decodeToGpu, read back). Publishes on window, per path, the sha256 of each tensor (as stored and converted to
// each float dtype) and the error class of each invalid file, plus the WebGPU adapter the page was offered.
import { openEqz } from '/dist/src/decoder.js';

const FLOAT_OUTPUTS = ['F32', 'F16', 'BF16'];

async function sha256(bytes) {
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

const vectorUrl = (file) => new URL(`/spec/vectors/${file}`, location.href).href;

/**
 * Every valid vector's tensors through `decode` (bytes, or null where that path declines the tensor), as
 * { hashes: {file: {tensor: sha256}}, declined: {"file tensor": why} }.
 */
async function decodeValid(manifest, decode, options) {
  const hashes = {};
  const declined = {};
  for (const vector of manifest.valid) {
    const file = await openEqz(vectorUrl(vector.file));
    hashes[vector.file] = {};
    for (const tensor of file.tensors) {
      const bytes = await decode(file, tensor.name, options, (why) => { declined[`${vector.file} ${tensor.name}`] = why; });
      if (bytes) hashes[vector.file][tensor.name] = await sha256(bytes);
    }
  }
  return { hashes, declined };
}

/** Every invalid vector through `decode`: { classes: {file: error code or 'accepted'}, declined } as above. */
async function decodeInvalid(manifest, decode) {
  const classes = {};
  const declined = {};
  for (const vector of manifest.invalid) {
    try {
      const file = await openEqz(vectorUrl(vector.file));
      for (const tensor of file.tensors) {
        await decode(file, tensor.name, {}, (why) => { declined[`${vector.file} ${tensor.name}`] = why; });
      }
      classes[vector.file] = 'accepted';
    } catch (error) {
      classes[vector.file] = error.code ?? `not an EqzError: ${error}`;
    }
  }
  return { classes, declined };
}

async function decodeEverything(manifest, decode) {
  const converted = {};
  for (const dtype of FLOAT_OUTPUTS) converted[dtype] = await decodeValid(manifest, decode, { dtype });
  return { valid: await decodeValid(manifest, decode, {}), invalid: await decodeInvalid(manifest, decode), converted };
}

const decodeOnCpu = (file, name, options) => file.decode(name, options);

/**
 * Decoding into GPUBuffers on `device`, read back. A tensor the GPU decoder rejects as UnknownEncoding while the
 * CPU decoder knows its encoding (it decodes it, or rejects it for another reason) is declined, not failed: the
 * test lists which tensors may be declined.
 */
function decodeOnGpu(device) {
  return async (file, name, options, decline) => {
    let tensor;
    try {
      tensor = await file.decodeToGpu(name, device, options);
    } catch (error) {
      if (error.code !== 'UnknownEncoding') throw error;
      const cpuClass = await file.decode(name, options).then(() => 'decoded', (cpuError) => cpuError.code);
      if (cpuClass === 'UnknownEncoding') throw error;
      decline(`${error.message} (the CPU decoder: ${cpuClass})`);
      return null;
    }
    try {
      return await tensor.readBack();
    } finally {
      tensor.buffer.destroy();
    }
  };
}

/**
 * A device as embedders open one, with subgroups where offered: with WebGPU's default limits (16 KiB of workgroup
 * memory: the decoder keeps its decode tables in a storage buffer), or with the adapter's workgroup memory limit
 * (the tables in workgroup memory). An adapter opens one device, so each asks for its own.
 */
async function openDevice(limits) {
  if (!navigator.gpu) throw new Error('navigator.gpu is undefined (WebGPU disabled, or not a secure context)');
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Error('navigator.gpu.requestAdapter() returned null');
  const requiredFeatures = adapter.features.has('subgroups') ? ['subgroups'] : [];
  const { maxComputeWorkgroupStorageSize } = adapter.limits;
  const requiredLimits = limits === 'adapterLimits' ? { maxComputeWorkgroupStorageSize } : {};
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  const { vendor, architecture, description, subgroupMinSize, subgroupMaxSize } = adapter.info;
  return {
    device,
    adapter: { vendor, architecture, description, features: requiredFeatures, subgroupMinSize, subgroupMaxSize, maxComputeWorkgroupStorageSize },
  };
}

async function run() {
  const manifest = await (await fetch('/spec/vectors/manifest.json')).json();
  const wasm = await decodeEverything(manifest, decodeOnCpu);
  const webgpu = {};
  const gpuErrors = [];
  let adapter;
  for (const limits of ['defaultLimits', 'adapterLimits']) {
    let opened;
    try {
      opened = await openDevice(limits);
    } catch (error) {
      return { wasm, adapterError: error.message };
    }
    adapter = opened.adapter;
    opened.device.addEventListener('uncapturederror', (event) => gpuErrors.push(`${limits}: ${event.error.message}`));
    webgpu[limits] = await decodeEverything(manifest, decodeOnGpu(opened.device));
    opened.device.destroy();
  }
  return { adapter, wasm, webgpu, gpuErrors };
}

window.eqzResult = run().catch((error) => ({ error: String(error && error.stack || error) }));
