/**
 * Temporary outputs (Node only): every file or folder eqz writes is built under a temporary name beside its target
 * and renamed into place when complete. If the process is interrupted (Ctrl-C, SIGTERM) first, the temporaries still
 * registered here are deleted, so no half-written output is left behind.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';

/** `<target>.tmp-<pid>-<random>`: beside the target, so the final rename stays on one file system. */
export function temporaryPath(target: string): string {
  return `${target}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
}

const live = new Set<string>();
let hooked = false;

function removeLive(): void {
  for (const path of live) rmSync(path, { recursive: true, force: true });
  live.clear();
}

/** Registers `path` for deletion on interruption; call the returned function once it is renamed or removed. */
export function trackTemporary(path: string): () => void {
  if (!hooked) {
    hooked = true;
    for (const [signal, status] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
      process.once(signal, () => {
        removeLive();
        process.exit(status);
      });
    }
  }
  live.add(path);
  return () => live.delete(path);
}
