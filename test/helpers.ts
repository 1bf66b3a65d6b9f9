/** Shared test utilities: temporary directories that are removed after each test file. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { main } from '../src/cli/main.js';

/** A fresh temporary directory, deleted when the test file ends. */
export async function tempDir(prefix = 'eqz-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  afterAll(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Absolute path of shared data (../shared/data relative to the project root). */
export const SHARED_DATA = new URL('../../shared/data/', import.meta.url).pathname;

/** Runs the CLI in-process, capturing what it prints. */
export async function eqz(...args: string[]): Promise<{ status: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const status = await main(args, { log: (l) => out.push(l), error: (l) => err.push(l) });
  return { status, out: out.join('\n'), err: err.join('\n') };
}
