/** The GPU decoder's WGSL read from wgsl/ on disk (Node): the default ShaderLoader of src/gpu/decode.ts. */
import type { ShaderLoader } from './decode-shaders.js';
import { readWgsl } from './wgsl-files.js';

/** Reads wgsl/<name>.wgsl. */
export const fileShaderLoader: ShaderLoader = (name) => readWgsl(`${name}.wgsl`);
