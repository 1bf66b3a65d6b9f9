/**
 * A {@link GpuContext} for a GPUDevice opened by someone else (a browser page, an embedding application): what the
 * GPU decoder needs to know about it, read from the device itself. No Node imports: `eqz/decoder` loads this in
 * browsers.
 */
import type { GpuContext } from './device.js';

const SOFTWARE_NAME = /swiftshader|llvmpipe|lavapipe|softpipe|software/i;

/** Whether an adapter is a software rasterizer (CPU-backed): the decoder then favours fewer, larger workgroups. */
export function isSoftwareAdapter(info: GPUAdapterInfo): boolean {
  return info.isFallbackAdapter === true
    || SOFTWARE_NAME.test([info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' '));
}

/**
 * The context of `device`. Subgroups count only when the device was opened with the `subgroups` feature (request
 * it for the fast decode kernels); their size range comes from the adapter's info. A browser does not name the
 * backend behind WebGPU, so without `backend` it is inferred from the feature level: a device in compatibility
 * mode is reported as `opengles`, a core one as `vulkan`; only {@link GpuContext.description} shows it.
 */
export function gpuContextOf(
  device: GPUDevice, backend?: GpuContext['backend'], info: GPUAdapterInfo = device.adapterInfo,
): GpuContext {
  const software = isSoftwareAdapter(info);
  const subgroups = device.features.has('subgroups');
  const inferredBackend = backend ?? (device.features.has('core-features-and-limits') ? 'vulkan' : 'opengles');
  const name = info.description || info.device || [info.vendor, info.architecture].filter(Boolean).join(' ') || 'unknown adapter';
  return {
    device,
    description: `${name} (${backend ?? 'WebGPU'}${software ? ', software' : ''})`,
    software,
    backend: inferredBackend,
    subgroups,
    subgroupMinSize: subgroups ? info.subgroupMinSize ?? 0 : 0,
    subgroupMaxSize: subgroups ? info.subgroupMaxSize ?? 0 : 0,
    timestamps: device.features.has('timestamp-query'),
    boundsChecks: true,
  };
}
