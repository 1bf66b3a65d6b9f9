// The worked examples printed in spec/eqz.md are checked against the implementation, byte for byte, so the
// normative text and the code cannot drift apart.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EqzWriter } from '../src/container/writer.js';
import { metaString } from '../src/container/table.js';
import { tempDir } from './helpers.js';

const spec = await readFile(new URL('../spec/eqz.md', import.meta.url), 'utf8');

/** The bytes of the first hex dump (lines "0000: 89 45 …") after `heading`; "rows X–Y are the same as row Z" expands. */
export function hexDumpAfter(heading: string): Uint8Array {
  const start = spec.indexOf(heading);
  expect(start, heading).toBeGreaterThanOrEqual(0);
  const block = /```\n([\s\S]*?)```/.exec(spec.slice(start))![1]!;
  const rows = new Map<number, number[]>();
  for (const line of block.split('\n')) {
    const row = /^([0-9a-f]{4}): ((?:[0-9a-f]{2} ?)+)/.exec(line);
    if (row) {
      rows.set(parseInt(row[1]!, 16), row[2]!.trim().split(/\s+/).map((b) => parseInt(b, 16)));
      continue;
    }
    const same = /rows ([0-9a-f]{4})–([0-9a-f]{4}) are the same as row ([0-9a-f]{4})/.exec(line);
    if (same) {
      const template = rows.get(parseInt(same[3]!, 16))!;
      for (let at = parseInt(same[1]!, 16); at <= parseInt(same[2]!, 16); at += 16) rows.set(at, template);
    }
  }
  const end = Math.max(...[...rows].map(([at, bytes]) => at + bytes.length));
  const out = new Uint8Array(end);
  for (const [at, bytes] of rows) out.set(bytes, at);
  return out;
}

describe('spec/eqz.md worked examples', () => {
  it('Appendix A is exactly the file the writer produces', async () => {
    const path = join(await tempDir(), 'appendix-a.eqz');
    const writer = await EqzWriter.create(path, { alignment: 8 });
    await writer.addTensor({ name: 'w', dtype: 'F32', shape: [2], encoding: 'raw', payload: new Uint8Array(new Float32Array([1, -2]).buffer) });
    await writer.finish(new Map([['eqz.producer', metaString('eqz 0.1.0')]]));
    expect(new Uint8Array(await readFile(path))).toEqual(hexDumpAfter('## Appendix A'));
  });
});
