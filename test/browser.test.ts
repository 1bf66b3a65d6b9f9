import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { extname, join, normalize } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import type { Manifest } from '../scripts/make-vectors.js';

const root = new URL('..', import.meta.url).pathname;
const CHROMIUM = '/usr/bin/chromium';
const TYPES: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.json': 'application/json', '.wasm': 'application/wasm' };

/** A static file server over the project root with HTTP range support (what httpSource relies on). */
function serve(): Promise<Server> {
  const server = createServer(async (request, response) => {
    const path = normalize(join(root, decodeURIComponent(new URL(request.url!, 'http://localhost').pathname)));
    const info = path.startsWith(root) ? await stat(path).catch(() => null) : null;
    if (!info?.isFile()) {
      response.writeHead(404).end();
      return;
    }
    const headers = { 'content-type': TYPES[extname(path)] ?? 'application/octet-stream', 'accept-ranges': 'bytes' };
    const range = /^bytes=(\d+)-(\d+)$/.exec(request.headers.range ?? '');
    if (range) {
      const [start, end] = [Number(range[1]), Math.min(Number(range[2]), info.size - 1)];
      response.writeHead(206, { ...headers, 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${info.size}` });
      createReadStream(path, { start, end }).pipe(response);
      return;
    }
    response.writeHead(200, { ...headers, 'content-length': info.size });
    if (request.method === 'HEAD') response.end();
    else createReadStream(path).pipe(response);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** What the page (test/browser/run.js) publishes per decoding path. */
interface PathResult {
  valid: Decoded;
  invalid: { classes: Record<string, string>; declined: Record<string, string> };
  converted: Record<'F32' | 'F16' | 'BF16', Decoded>;
}
interface Decoded {
  hashes: Record<string, Record<string, string>>;
  /** "file tensor" → why the path declined it. */
  declined: Record<string, string>;
}
interface PageResult {
  error?: string;
  wasm: PathResult;
  /** Per device: opened with WebGPU's default limits, and with the adapter's workgroup memory limit. */
  webgpu?: Record<'defaultLimits' | 'adapterLimits', PathResult>;
  adapter?: { vendor: string; architecture: string; description: string; features: string[]; maxComputeWorkgroupStorageSize: number };
  adapterError?: string;
  gpuErrors?: string[];
}

/**
 * The tensors the GPU decoder declines (UnknownEncoding, while the CPU decoder knows the encoding) as long as it has
 * no nvfp4 kernels: the GPU path must decline exactly these, or none once it decodes nvfp4.
 */
const GPU_DECLINED_WITHOUT_NVFP4 = [
  'valid/encodings.eqz nvfp4.byte',
  'valid/encodings.eqz nvfp4.nibble',
];
const INVALID_GPU_DECLINED_WITHOUT_NVFP4 = [
  'invalid/nvfp4-cols.eqz nvfp4.byte',
  'invalid/nvfp4-cols.eqz nvfp4.nibble',
  'invalid/nvfp4-global-scale-nan.eqz nvfp4.byte',
  'invalid/nvfp4-global-scale-nan.eqz nvfp4.nibble',
];

/** The manifest's tensors → sha256 per valid file, less the `declined` "file tensor" keys. */
function expectedHashes(manifest: Manifest, declined: Record<string, string>): Record<string, Record<string, string>> {
  return Object.fromEntries(manifest.valid.map((vector) => [
    vector.file,
    Object.fromEntries(vector.tensors.filter((t) => !(`${vector.file} ${t.name}` in declined)).map((t) => [t.name, t.sha256])),
  ]));
}

/** `hashes` less the `declined` "file tensor" keys. */
function withoutDeclined(hashes: Decoded['hashes'], declined: Record<string, string>): Decoded['hashes'] {
  return Object.fromEntries(Object.entries(hashes).map(([file, tensors]) => [
    file, Object.fromEntries(Object.entries(tensors).filter(([name]) => !(`${file} ${name}` in declined))),
  ]));
}

describe('embeddable decoder in headless Chromium', () => {
  let server: Server;
  let browser: Browser;
  let manifest: Manifest;
  let result: PageResult;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    manifest = JSON.parse(await readFile(join(root, 'spec/vectors/manifest.json'), 'utf8')) as Manifest;
    server = await serve();
    // --enable-unsafe-webgpu is the one flag headless Chromium on Linux needs: it then offers its SwiftShader Vulkan
    // adapter (no GPU needed) to pages in a secure context, which http://localhost is.
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu'],
    });
    const port = (server.address() as { port: number }).port;
    const page = await browser.newPage();
    page.on('pageerror', (error) => pageErrors.push(String(error)));
    await page.goto(`http://localhost:${port}/test/browser/index.html`);
    result = await page.evaluate(() => (window as unknown as { eqzResult: Promise<unknown> }).eqzResult) as PageResult;
  });

  afterAll(async () => {
    await browser?.close();
    server?.close();
  });

  it('runs the page without errors', () => {
    expect(result.error, result.error).toBeUndefined();
    expect(pageErrors).toEqual([]);
  });

  it('decodes every conformance vector through WASM to the manifest\'s sha256 and rejects the invalid ones with their class', () => {
    const { wasm } = result;
    expect(wasm.valid.hashes).toEqual(expectedHashes(manifest, {}));
    expect(wasm.valid.declined).toEqual({});
    expect(wasm.invalid.classes).toEqual(Object.fromEntries(manifest.invalid.map((vector) => [vector.file, vector.error])));
  });

  it('is offered a WebGPU adapter by navigator.gpu.requestAdapter()', () => {
    expect(result.adapterError, result.adapterError).toBeUndefined();
    expect(result.adapter!.vendor || result.adapter!.architecture || result.adapter!.description).not.toBe('');
  });

  for (const limits of ['defaultLimits', 'adapterLimits'] as const) {
    it(`decodes every tensor the GPU decoder accepts into GPUBuffers (device with ${limits}) bit-identical to the manifest, and rejects the invalid vectors with their class`, () => {
      expect(result.webgpu, result.adapterError).toBeDefined();
      expect(result.gpuErrors).toEqual([]);
      const webgpu = result.webgpu![limits];
      const declined = webgpu.valid.declined;
      expect([[], GPU_DECLINED_WITHOUT_NVFP4], JSON.stringify(declined, null, 1)).toContainEqual(Object.keys(declined).sort());
      expect(webgpu.valid.hashes).toEqual(expectedHashes(manifest, declined));

      const invalidDeclined = Object.keys(webgpu.invalid.declined).sort();
      expect([[], INVALID_GPU_DECLINED_WITHOUT_NVFP4], JSON.stringify(webgpu.invalid.declined, null, 1)).toContainEqual(invalidDeclined);
      // A vector whose only bad tensor the GPU path declined decodes without error otherwise.
      const declinedFiles = new Set(invalidDeclined.map((key) => key.split(' ')[0]));
      expect(webgpu.invalid.classes).toEqual(Object.fromEntries(
        manifest.invalid.map((vector) => [vector.file, declinedFiles.has(vector.file) ? 'accepted' : vector.error]),
      ));
    });

    it(`converts on the GPU (device with ${limits}) to F32, F16 and BF16 exactly as on the CPU`, () => {
      expect(result.webgpu, result.adapterError).toBeDefined();
      const { wasm } = result;
      const webgpu = result.webgpu![limits];
      for (const dtype of ['F32', 'F16', 'BF16'] as const) {
        const declined = webgpu.converted[dtype].declined;
        expect(Object.keys(declined).sort(), dtype).toEqual(Object.keys(webgpu.valid.declined).sort());
        expect(wasm.converted[dtype].declined).toEqual({});
        expect(webgpu.converted[dtype].hashes, dtype).toEqual(withoutDeclined(wasm.converted[dtype].hashes, declined));
      }
    });
  }
});
