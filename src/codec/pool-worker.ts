/**
 * A codec pool worker (Node worker_threads): one WASM codec instance, answering the pool's requests one at a
 * time (pool-tasks.ts). Announces itself with a reply of id −1 once its codec is ready.
 */
import { parentPort } from 'node:worker_threads';
import type { PoolReply, PoolRequest } from './pool.js';
import { answer } from './pool-tasks.js';
import { initCodec } from './wasm.js';

const port = parentPort;
if (!port) throw new Error('pool-worker.js runs only as a worker thread');

await initCodec();
port.on('message', (request: PoolRequest) => {
  const { reply, transfer } = answer(request);
  port.postMessage(reply, transfer);
});
port.postMessage({ id: -1, value: 'ready' } satisfies PoolReply);
