/** The GPU decoder's WGSL read from wgsl/ on disk (Node): the default ShaderLoader of src/gpu/decode.ts. */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ShaderLoader } from './decode-shaders.js';

/** Where wgsl/ is: beside src/ (running from source) or beside dist/ (running the build). */
function shaderDirectory(): string {
  for (const relative of ['../../wgsl/', '../../../wgsl/']) {
    const path = fileURLToPath(new URL(relative, import.meta.url));
    if (existsSync(`${path}decode.wgsl`)) return path;
  }
  throw new Error('the WGSL kernels (wgsl/decode*.wgsl) were not found beside the eqz sources');
}

/** Reads wgsl/<name>.wgsl. */
export const fileShaderLoader: ShaderLoader = (name) => readFileSync(`${shaderDirectory()}${name}.wgsl`, 'utf8');
