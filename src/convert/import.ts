/**
 * compressed-tensors NVFP4 checkpoints in and out unchanged: `eqz convert <NVFP4 folder> -o m.eqz` stores each
 * module's weight_packed / weight_scale / weight_global_scale as one `nvfp4` tensor `<module>.weight` (lossless:
 * the three tensors come back byte for byte, the codes and block scales now entropy-coded), and decoding such a
 * file without --dtype writes the three tensors again where they were.
 */
import { EqzError } from '../errors.js';
import { encodeNvfp4Payload, groupNvfp4Modules, detectCompressedTensors, nvfp4FromModuleBytes, nvfp4ModuleTensors, type Nvfp4Tensor } from '../nvfp4/index.js';
import { initCodec } from '../codec/index.js';
import { modelConfig, type ModelSource } from '../io/model-folder.js';
import type { CombinedTensor } from './encode.js';
import type { Dtype } from '../container/format.js';

/** `eqz.source.format` of a file imported from a compressed-tensors NVFP4 folder. */
export const NVFP4_SOURCE_FORMAT = 'compressed-tensors-nvfp4';

/** Whether the model's config.json declares compressed-tensors NVFP4 (other schemes: a clear error). */
export function isNvfp4Checkpoint(model: ModelSource): boolean {
  const info = detectCompressedTensors(modelConfig(model.smallFiles));
  if (info?.scheme === 'float-quantized') throw new EqzError('InvalidValue', 'FP8 compressed-tensors checkpoints are not imported yet: decompress them first', { file: 'config.json' });
  return info?.scheme === 'nvfp4-pack-quantized';
}

/** The NVFP4 modules of the model as combined tensors (see {@link CombinedTensor}). */
export function nvfp4Combinations(model: ModelSource): CombinedTensor[] {
  const byName = new Map(model.tensors.map((t) => [t.name, t]));
  return groupNvfp4Modules(model.tensors).modules.map((module) => {
    const parts = [module.packed, module.scale, module.globalScale].map((name) => byName.get(name)!)
      .sort((a, b) => model.tensors.indexOf(a) - model.tensors.indexOf(b));
    return {
      name: `${module.module}.weight`,
      dtype: 'BF16',
      shape: [module.rows, module.cols],
      parts,
      async encode(bytes) {
        await initCodec();
        const of = (name: string) => bytes[parts.findIndex((p) => p.name === name)]!;
        const tensor = nvfp4FromModuleBytes(module, { packed: of(module.packed), scale: of(module.scale), globalScale: of(module.globalScale) });
        return { encoding: 'nvfp4', payload: encodeNvfp4Payload(tensor) };
      },
    };
  });
}

/** The source tensor names an `nvfp4` tensor `<module>.weight` stands for, with their dtypes and shapes. */
export function nvfp4Parts(name: string, rows: number, cols: number): { name: string; dtype: Dtype; shape: number[] }[] {
  const module = name.replace(/\.weight$/, '');
  const shapes: Nvfp4Tensor = { packed: new Uint8Array(0), blockScales: new Uint8Array(0), globalScale: 1, rows, cols };
  return nvfp4ModuleTensors(module, shapes).map(({ name: part, dtype, shape }) => ({ name: part, dtype, shape }));
}
