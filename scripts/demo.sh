#!/usr/bin/env bash
# The README's quick start: compress the bundled example model and bring it back. Run after `npm ci` (which builds).
set -euo pipefail
cd "$(dirname "$0")/.."
eqz() { node bin/eqz.js "$@"; }
node dist/scripts/make-example.js examples/tiny-llama
echo '--- lossless: every tensor byte-identical after the round trip'
eqz convert examples/tiny-llama -o examples/tiny-llama.lossless.eqz --lossless --force
eqz validate examples/tiny-llama.lossless.eqz
eqz convert examples/tiny-llama.lossless.eqz -o examples/tiny-llama-restored --force
cmp examples/tiny-llama/model.safetensors examples/tiny-llama-restored/model.safetensors && echo 'restored model.safetensors is byte-identical'
echo '--- EntQuant: 3 bits/param over the quantized linears'
eqz convert examples/tiny-llama -o examples/tiny-llama.q3.eqz --bits 3 --force
eqz inspect examples/tiny-llama.q3.eqz | tail -3
eqz validate examples/tiny-llama.q3.eqz
eqz convert examples/tiny-llama.q3.eqz -o examples/tiny-llama-bf16 --dtype bf16 --force
