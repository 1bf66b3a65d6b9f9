/**
 * The WGSL kernels in wgsl/ read from disk (Node): wgsl/ lies beside src/ when running from source and beside
 * dist/ when running the build. Browsers and other hosts pass the shader text in themselves.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

let directory: string | undefined;

/** The text of wgsl/`file` (e.g. "decode.wgsl"). */
export function readWgsl(file: string): string {
  if (directory === undefined) {
    for (const relative of ['../../wgsl/', '../../../wgsl/']) {
      const path = fileURLToPath(new URL(relative, import.meta.url));
      if (existsSync(`${path}decode.wgsl`)) directory = path;
    }
    if (directory === undefined) throw new Error('the WGSL kernels (wgsl/) were not found beside the eqz sources');
  }
  return readFileSync(`${directory}${file}`, 'utf8');
}
