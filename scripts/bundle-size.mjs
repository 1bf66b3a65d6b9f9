// Bundles `eqz/decoder` (src/decoder.ts) for browsers the way an embedder's bundler would (esbuild: ES modules,
// code splitting, minified) and prints what a page downloads, raw and gzipped: the CPU decoder (the WASM codec
// included, embedded as base64) and the GPU decoder that `decodeToGpu` loads on first use. Run `npm run size`
// (it builds the WASM and the embedded shaders first).
import { gzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import { build } from 'esbuild';

const root = new URL('..', import.meta.url).pathname;

const result = await build({
  entryPoints: [`${root}src/decoder.ts`],
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  write: false,
  metafile: true,
  outdir: `${root}.bundle-size`,
  // src/gpu/decode.ts falls back to reading wgsl/ from disk when given no shader loader; eqz/decoder always gives
  // one, so that chunk is never loaded in a browser. Left external, it is reported apart below.
  external: ['node:*'],
  logLevel: 'warning',
});

const outputs = result.metafile.outputs;
const bytesOf = new Map(result.outputFiles.map((file) => [file.path, file.contents]));
const entry = Object.keys(outputs).find((path) => outputs[path].entryPoint !== undefined);
const nodeOnly = (path) => outputs[path].imports.some((edge) => edge.external && edge.path.startsWith('node:'));

/** The chunks `start` pulls in through imports of `kinds`, itself included. */
function closure(start, kinds) {
  const seen = new Set([start]);
  for (const path of seen) {
    for (const edge of outputs[path].imports) {
      if (!edge.external && kinds.includes(edge.kind)) seen.add(edge.path);
    }
  }
  return seen;
}

const cpu = closure(entry, ['import-statement']);
const everything = closure(entry, ['import-statement', 'dynamic-import']);
const gpu = [...everything].filter((path) => !cpu.has(path) && !nodeOnly(path));
const nodeChunks = [...everything].filter(nodeOnly);

/** Raw and gzip bytes of `paths`, each file compressed on its own as a server sends it. */
function sizes(paths) {
  let raw = 0;
  let gzip = 0;
  for (const path of paths) {
    const bytes = bytesOf.get(`${root}${path}`);
    raw += bytes.length;
    gzip += gzipSync(bytes, { level: 9 }).length;
  }
  return { raw, gzip };
}

const kib = (bytes) => `${(bytes / 1024).toFixed(1)} KiB`;
const row = (label, { raw, gzip }) => console.log(`${label.padEnd(52)}${kib(raw).padStart(11)}${kib(gzip).padStart(11)}`);
const wasmBase64 = Buffer.from(readFileSync(`${root}build/eqz.wasm`).toString('base64'));

console.log('eqz/decoder bundled for browsers (esbuild, ES2022, minified, code splitting)\n');
console.log(`${''.padEnd(52)}${'raw'.padStart(11)}${'gzip'.padStart(11)}`);
row('CPU decoding: openEqz, decode (WASM inlined)', sizes(cpu));
row('  of which build/eqz.wasm, as base64', { raw: wasmBase64.length, gzip: gzipSync(wasmBase64, { level: 9 }).length });
row('GPU decoding, loaded on first decodeToGpu', sizes(gpu));
row('CPU + GPU', sizes([...cpu, ...gpu]));
if (nodeChunks.length) row('(not counted: Node-only wgsl/ reader, never loaded)', sizes(nodeChunks));
