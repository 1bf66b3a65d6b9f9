/**
 * Writes the bundled example: a small Llama-shaped Hugging Face folder (config.json + model.safetensors) whose
 * weights are drawn from a seed the way trained LLM weights look — heavy-tailed (Student-t, ν = 5), a spread of
 * per-row scales, a few outlier rows — so that `npm run demo` has something realistic to compress without any
 * download. Deterministic: the same bytes on every machine.
 *
 *   node dist/scripts/make-example.js [outDir]     (default examples/tiny-llama)
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { SafetensorsWriter } from '../src/io/safetensors.js';
import { syntheticWeights } from '../src/tensor/synthetic.js';

const CONFIG = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 256,
  intermediate_size: 688,
  num_hidden_layers: 4,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  vocab_size: 1024,
  max_position_embeddings: 512,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
  torch_dtype: 'float32',
};

function tensorList(): { name: string; shape: number[] }[] {
  const { hidden_size: h, intermediate_size: m, num_attention_heads: heads, num_key_value_heads: kv, vocab_size: v } = CONFIG;
  const kvDim = (h / heads) * kv;
  const list = [{ name: 'model.embed_tokens.weight', shape: [v, h] }];
  for (let layer = 0; layer < CONFIG.num_hidden_layers; layer++) {
    const p = `model.layers.${layer}`;
    list.push(
      { name: `${p}.input_layernorm.weight`, shape: [h] },
      { name: `${p}.self_attn.q_proj.weight`, shape: [h, h] },
      { name: `${p}.self_attn.k_proj.weight`, shape: [kvDim, h] },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kvDim, h] },
      { name: `${p}.self_attn.o_proj.weight`, shape: [h, h] },
      { name: `${p}.post_attention_layernorm.weight`, shape: [h] },
      { name: `${p}.mlp.gate_proj.weight`, shape: [m, h] },
      { name: `${p}.mlp.up_proj.weight`, shape: [m, h] },
      { name: `${p}.mlp.down_proj.weight`, shape: [h, m] },
    );
  }
  list.push({ name: 'model.norm.weight', shape: [h] });
  return list;
}

export async function makeExample(outDir: string): Promise<void> {
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, 'config.json'), `${JSON.stringify(CONFIG, null, 2)}\n`);
  const tensors = tensorList();
  const writer = await SafetensorsWriter.create(join(outDir, 'model.safetensors'), tensors.map((t) => ({ ...t, dtype: 'F32' as const })), { format: 'pt' });
  try {
    for (const [index, tensor] of tensors.entries()) {
      const values = tensor.shape.length === 1
        ? new Float32Array(tensor.shape[0]!).fill(1)
        : syntheticWeights(tensor.shape[0]!, tensor.shape[1]!, { seed: 1000 + index, scale: 0.02 });
      await writer.writeTensor(tensor.name, new Uint8Array(values.buffer));
    }
    await writer.finish();
  } catch (error) {
    await writer.abort();
    throw error;
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const outDir = process.argv[2] ?? 'examples/tiny-llama';
  await makeExample(outDir);
  console.log(`wrote the example model to ${outDir}`);
}
