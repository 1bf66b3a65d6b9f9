/** Shared test utilities: temporary directories that are removed after each test file. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

/** A fresh temporary directory, deleted when the test file ends. */
export async function tempDir(prefix = 'eqz-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  afterAll(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Absolute path of shared data (../shared/data relative to the project root). */
export const SHARED_DATA = new URL('../../shared/data/', import.meta.url).pathname;
