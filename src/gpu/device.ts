/**
 * WebGPU adapter selection for Node (Dawn via the `webgpu` package).
 *
 * A machine may have a hardware GPU (Vulkan), only a software adapter, or none. Two software adapters are
 * supported because they exercise different code paths (see ../shared/webgpu.md):
 * - `gles`: Mesa llvmpipe through Dawn's OpenGL ES backend — compatibility mode, no subgroups, 128 MiB bindings;
 * - `swiftshader`: SwiftShader Vulkan shipped with Debian's Chromium — core mode, subgroups of size 4.
 * Every caller says which adapter it got: {@link GpuContext.description}.
 */
import { gpuContextOf, isSoftwareAdapter } from './context.js';

export type DeviceChoice = 'auto' | 'gpu' | 'cpu';
export type SoftwareAdapter = 'gles' | 'swiftshader';

export interface GpuContext {
  device: GPUDevice;
  /** Human-readable adapter name, e.g. "NVIDIA H100 (vulkan)" or "llvmpipe (opengles, software)". */
  description: string;
  software: boolean;
  backend: 'vulkan' | 'opengles';
  /** Whether the `subgroups` feature is enabled on the device (the fast paths use it). */
  subgroups: boolean;
  /** Subgroup size range reported by the adapter (0 when unknown or no subgroups). */
  subgroupMinSize: number;
  subgroupMaxSize: number;
  timestamps: boolean;
  /** Whether shaders run with Dawn's bounds clamping (see {@link DeviceChecks}); always true in browsers. */
  boundsChecks: boolean;
}

const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

interface DawnModule {
  create(options: string[]): GPU;
  globals: object;
}

let dawn: DawnModule | undefined;
const contexts = new Map<string, Promise<GpuContext>>();
/**
 * Dawn instances live as long as the process: if the GPU object `create` returns were garbage-collected, Dawn would
 * shut down under devices still in use and abort the process.
 */
const instances: GPU[] = [];

function instance(module: DawnModule, options: string[]): GPU {
  const gpu = module.create(options);
  instances.push(gpu);
  return gpu;
}

async function loadDawn(): Promise<DawnModule> {
  if (dawn) return dawn;
  try {
    dawn = (await import('webgpu')) as unknown as DawnModule;
  } catch (error) {
    throw new Error(`WebGPU is not available: the 'webgpu' package (Dawn for Node) failed to load: ${(error as Error).message}`);
  }
  Object.assign(globalThis, dawn.globals);
  return dawn;
}

/**
 * Dawn instance flags of every device: timestamps at full resolution. Dawn rounds them to 2^16 ns by default (a
 * browser's guard against timing attacks), which would put a 3 % step into a 2 ms benchmark figure.
 */
const BASE_FLAGS = ['disable-dawn-features=timestamp_quantization'];
/** Dawn instance flags that turn off Tint's bounds clamping for every shader of devices the instance opens. */
const UNCHECKED_FLAGS = [...BASE_FLAGS, 'enable-dawn-features=allow_unsafe_apis,disable_robustness'];

async function hardwareAdapter(module: DawnModule, flags: string[]): Promise<GPUAdapter | null> {
  const adapter = await instance(module, flags).requestAdapter({ powerPreference: 'high-performance' });
  return adapter && !isSoftwareAdapter(adapter.info) ? adapter : null;
}

async function softwareAdapter(module: DawnModule, which: SoftwareAdapter, flags: string[]): Promise<GPUAdapter | null> {
  if (which === 'gles') {
    process.env.EGL_PLATFORM ??= 'surfaceless';
    return instance(module, ['backend=opengles', ...flags]).requestAdapter({ featureLevel: 'compatibility' });
  }
  process.env.VK_ICD_FILENAMES ??= SWIFTSHADER_ICD;
  return instance(module, ['backend=vulkan', ...flags]).requestAdapter();
}

async function openDevice(adapter: GPUAdapter, backend: GpuContext['backend'], boundsChecks: boolean): Promise<GpuContext> {
  const wanted: GPUFeatureName[] = ['subgroups', 'timestamp-query', 'shader-f16'];
  const requiredFeatures = wanted.filter((feature) => adapter.features.has(feature));
  const limitNames = [
    'maxStorageBufferBindingSize', 'maxBufferSize', 'maxComputeWorkgroupSizeX', 'maxComputeInvocationsPerWorkgroup',
    'maxComputeWorkgroupStorageSize', 'maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupsPerDimension',
  ] as const;
  const requiredLimits: Record<string, number> = {};
  for (const name of limitNames) requiredLimits[name] = adapter.limits[name];
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  return { ...gpuContextOf(device, backend, adapter.info), boundsChecks };
}

const NO_WEBGPU_HELP =
  'no WebGPU adapter found. On a machine with a GPU install its Vulkan driver and the Vulkan loader (libvulkan1); '
  + 'without a GPU install Mesa for the software adapter: apt-get install libegl1 libegl-mesa0 libgles2 libgl1-mesa-dri '
  + '(or chromium + libvulkan1 for SwiftShader, selected with EQZ_SOFTWARE_ADAPTER=swiftshader)';

/** How a device checks its shaders' memory accesses. */
export interface DeviceChecks {
  /**
   * `false` opens a device whose shaders run without Dawn's robustness transform (no clamping of array indices).
   * Only for kernels whose every index is in range by construction, whatever the data (the optimizers': their
   * headers list why), never for decoding untrusted files. It made the NVFP4 search 1.5× faster on an H100.
   * Default `true`.
   */
  boundsChecks?: boolean;
}

/**
 * The WebGPU device for `choice`, created once per process and shared (pipelines are cached per device).
 * - `gpu`: a hardware adapter or an error;
 * - `cpu`: a software adapter (`software`, else $EQZ_SOFTWARE_ADAPTER, else `gles`);
 * - `auto`: hardware when present, else software.
 */
export function acquireGpu(choice: DeviceChoice = 'auto', software?: SoftwareAdapter, checks: DeviceChecks = {}): Promise<GpuContext> {
  const soft = software ?? (process.env.EQZ_SOFTWARE_ADAPTER as SoftwareAdapter | undefined) ?? 'gles';
  if (soft !== 'gles' && soft !== 'swiftshader') {
    return Promise.reject(new Error(`unknown software adapter "${soft}" (expected gles or swiftshader)`));
  }
  const boundsChecks = checks.boundsChecks ?? true;
  const flags = boundsChecks ? BASE_FLAGS : UNCHECKED_FLAGS;
  const key = `${choice}/${soft}/${boundsChecks}`;
  let context = contexts.get(key);
  if (!context) {
    context = (async () => {
      const module = await loadDawn();
      if (choice !== 'cpu') {
        const hardware = await hardwareAdapter(module, flags);
        if (hardware) return openDevice(hardware, 'vulkan', boundsChecks);
        if (choice === 'gpu') throw new Error('--device gpu: no hardware GPU adapter found (Vulkan). Use --device cpu for the software adapter.');
      }
      const adapter = await softwareAdapter(module, soft, flags);
      if (!adapter) throw new Error(NO_WEBGPU_HELP);
      return openDevice(adapter, soft === 'gles' ? 'opengles' : 'vulkan', boundsChecks);
    })();
    context.catch(() => contexts.delete(key));
    contexts.set(key, context);
  }
  return context;
}
