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

describe('embeddable decoder in headless Chromium', () => {
  let server: Server;
  let browser: Browser;

  beforeAll(async () => {
    server = await serve();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu'],
    });
  });

  afterAll(async () => {
    await browser?.close();
    server?.close();
  });

  it('decodes every conformance vector to the manifest\'s sha256 and rejects the invalid ones with their class', async () => {
    const manifest = JSON.parse(await readFile(join(root, 'spec/vectors/manifest.json'), 'utf8')) as Manifest;
    const port = (server.address() as { port: number }).port;
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(String(error)));
    await page.goto(`http://localhost:${port}/test/browser/index.html`);
    const result = await page.evaluate(() => (window as unknown as { eqzResult: Promise<unknown> }).eqzResult) as {
      valid: Record<string, Record<string, string>>; invalid: Record<string, string>; webgpu: string | null; error?: string;
    };
    expect(result.error, result.error).toBeUndefined();
    expect(errors).toEqual([]);
    for (const vector of manifest.valid) {
      expect(result.valid[vector.file]).toEqual(Object.fromEntries(vector.tensors.map((t) => [t.name, t.sha256])));
    }
    for (const vector of manifest.invalid) expect(result.invalid[vector.file], vector.file).toBe(vector.error);
  });
});
