/**
 * {@link WeightSource}s over a Hugging Face model folder (safetensors weights + config.json) and over an .eqz file
 * (decoded weights; config.json from its embedded files). Tensors are read, decoded and converted to F32 one at a
 * time, when the forward pass asks for them.
 */
import { EqzError } from '../errors.js';
import { fileSource } from '../container/file-source.js';
import { EqzReader } from '../container/reader.js';
import { META, ValueType } from '../container/format.js';
import { decodeTensor } from '../decode/tensor.js';
import { openModel, type ModelTensor } from '../io/model-folder.js';
import { toFloat32 } from '../tensor/dtype.js';
import type { WeightSource } from './weights.js';

/** A {@link WeightSource} that holds open files until closed. */
export interface ClosableWeightSource extends WeightSource {
  close(): Promise<void>;
}

function parseConfig(bytes: Uint8Array | undefined, origin: string): Record<string, unknown> {
  const file = `${origin}/config.json`;
  if (!bytes) throw new EqzError('Malformed', 'the model has no config.json', { file: origin });
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (error) {
    throw new EqzError('Malformed', `config.json is not valid JSON: ${(error as Error).message}`, { file });
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new EqzError('Malformed', 'config.json is not a JSON object', { file });
  return parsed as Record<string, unknown>;
}

/**
 * The weights and config.json of the model folder at `path` (any layout openModel reads: one model.safetensors,
 * shards with or without an index). Throws EqzError `Malformed` when config.json is missing or not a JSON object.
 */
export async function weightSourceFromModelFolder(path: string): Promise<ClosableWeightSource> {
  const model = await openModel(path);
  try {
    const config = parseConfig(model.smallFiles.get('config.json'), path);
    const tensors = new Map(model.tensors.map((tensor) => [tensor.name, tensor]));
    const tensor = (name: string): ModelTensor => {
      const found = tensors.get(name);
      if (!found) throw new EqzError('Malformed', `the model has no tensor ${name}`, { file: path, tensor: name });
      return found;
    };
    return {
      config,
      names: () => [...tensors.keys()],
      shape: (name) => [...tensor(name).shape],
      loadF32: async (name) => {
        const found = tensor(name);
        return toFloat32(await model.readTensor(found), found.dtype);
      },
      close: () => model.close(),
    };
  } catch (error) {
    await model.close();
    throw error;
  }
}

/** The decoded weights of an .eqz file and the config.json embedded in it. */
export async function weightSourceFromEqz(path: string): Promise<ClosableWeightSource> {
  const reader = await EqzReader.open(await fileSource(path));
  try {
    const embedded = reader.metadata.get(`${META.filePrefix}config.json`);
    const configBytes = embedded?.type === ValueType.ARRAY && embedded.value instanceof Uint8Array ? embedded.value : undefined;
    const config = parseConfig(configBytes, path);
    const entry = (name: string) => {
      const found = reader.tensor(name);
      if (!found) throw new EqzError('Malformed', `the model has no tensor ${name}`, { file: path, tensor: name });
      return found;
    };
    return {
      config,
      names: () => reader.tensors.map((t) => t.name),
      shape: (name) => [...entry(name).shape],
      loadF32: async (name) => {
        const bytes = await decodeTensor(reader, entry(name), { dtype: 'F32' });
        return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4).slice();
      },
      close: () => reader.close(),
    };
  } catch (error) {
    await reader.close();
    throw error;
  }
}

/** A weight source for `path`: an .eqz file or a Hugging Face model folder. */
export function openWeightSource(path: string): Promise<ClosableWeightSource> {
  return path.toLowerCase().endsWith('.eqz') ? weightSourceFromEqz(path) : weightSourceFromModelFolder(path);
}
