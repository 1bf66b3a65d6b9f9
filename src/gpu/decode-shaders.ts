/**
 * WGSL sources of the GPU decoder (wgsl/decode*.wgsl) and the small preprocessor that picks their variants:
 * `// #if NAME`, `// #if !NAME`, `// #else`, `// #endif` keep or drop lines by flag, and
 * `// #include file.wgsl` inserts another source. WGSL has no conditional compilation of its own, and the
 * variants differ in what may not appear at all: `enable subgroups;` is an error on an adapter without them, and
 * a workgroup table that is declared occupies workgroup memory even where unused.
 */
/** The decoder's shader files, by name without `.wgsl`. */
export type DecodeShaderName = 'decode' | 'decode-merge' | 'decode-float' | 'decode-nvfp4';

/**
 * Supplies the text of a shader file. In Node the default reads wgsl/ (decode-shader-files.ts); embedders pass
 * their own (e.g. the files' text bundled as strings). This module itself has no Node imports.
 */
export type ShaderLoader = (name: DecodeShaderName) => string;

const DIRECTIVE = /^\s*\/\/\s*#(if|else|endif|include)\b\s*(.*)$/;

/**
 * `source` with its directives resolved for `flags` (a missing flag is false). Directive lines are blanked
 * rather than removed, so compiler messages keep the file's line numbers (included files excepted).
 */
export function preprocessWgsl(source: string, flags: Readonly<Record<string, boolean>>, load: ShaderLoader): string {
  const out: string[] = [];
  // Each open #if: whether its current branch is kept, and whether the enclosing text is.
  const stack: { keep: boolean; outer: boolean }[] = [];
  const keeping = (): boolean => stack.length === 0 || stack[stack.length - 1]!.keep;
  for (const [index, line] of source.split('\n').entries()) {
    const directive = DIRECTIVE.exec(line);
    if (!directive) {
      out.push(keeping() ? line : '');
      continue;
    }
    const [, verb, argument] = directive as unknown as [string, string, string];
    const name = argument.trim();
    if (verb === 'if') {
      const negated = name.startsWith('!');
      const value = flags[negated ? name.slice(1) : name] === true;
      const outer = keeping();
      stack.push({ keep: outer && value !== negated, outer });
    } else if (verb === 'else') {
      const top = stack[stack.length - 1];
      if (!top) throw new Error(`WGSL preprocessor: #else without #if at line ${index + 1}`);
      top.keep = top.outer && !top.keep;
    } else if (verb === 'endif') {
      if (!stack.pop()) throw new Error(`WGSL preprocessor: #endif without #if at line ${index + 1}`);
    } else if (keeping()) {
      out.push(preprocessWgsl(load(name.replace(/\.wgsl$/, '') as DecodeShaderName), flags, load));
      continue;
    }
    out.push('');
  }
  if (stack.length) throw new Error('WGSL preprocessor: #if without #endif');
  // Dawn for Node has been seen to crash on the second module created from a source with non-ASCII text (the
  // comments' ≥, ×, §): WGSL proper is ASCII here, so only comments change.
  return out.join('\n').replace(/[^\x00-\x7f]/g, '?');
}

/**
 * A compute pipeline for `entryPoint` of `code` with `constants`. Failure is an error quoting the compiler's
 * messages. (Compilation info is only asked for on failure: with Dawn for Node, awaiting it or an error scope
 * around a large module has been seen to abort the process.)
 */
export async function createPipeline(
  device: GPUDevice, label: string, code: string, entryPoint: string, constants: Record<string, number>,
): Promise<GPUComputePipeline> {
  const module = device.createShaderModule({ label, code });
  try {
    return await device.createComputePipelineAsync({ label, layout: 'auto', compute: { module, entryPoint, constants } });
  } catch (error) {
    const info = await module.getCompilationInfo();
    const lines = info.messages.filter((message) => message.type === 'error')
      .map((message) => `  ${label}:${message.lineNum}:${message.linePos} ${message.message}`);
    throw new Error(`WGSL ${label} (${entryPoint}) failed to compile:\n${lines.join('\n') || (error as Error).message}`);
  }
}
