// Decodes every conformance vector with the embeddable decoder (dist/src/decoder.js), fetching the files with HTTP
// range requests, and publishes the sha256 of each tensor (or the error class of each invalid file) on window.
import { openEqz } from '/dist/src/decoder.js';

async function sha256(bytes) {
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

async function run() {
  const manifest = await (await fetch('/spec/vectors/manifest.json')).json();
  const valid = {};
  for (const vector of manifest.valid) {
    const file = await openEqz(new URL(`/spec/vectors/${vector.file}`, location.href).href);
    valid[vector.file] = {};
    for (const tensor of file.tensors) valid[vector.file][tensor.name] = await sha256(await file.decode(tensor.name));
  }
  const invalid = {};
  for (const vector of manifest.invalid) {
    try {
      const file = await openEqz(new URL(`/spec/vectors/${vector.file}`, location.href).href);
      for (const tensor of file.tensors) await file.decode(tensor.name);
      invalid[vector.file] = 'accepted';
    } catch (error) {
      invalid[vector.file] = error.code ?? `not an EqzError: ${error}`;
    }
  }
  const adapter = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
  return { valid, invalid, webgpu: adapter ? adapter.info.architecture || adapter.info.vendor || 'yes' : null };
}

window.eqzResult = run().catch((error) => ({ error: String(error && error.stack || error) }));
