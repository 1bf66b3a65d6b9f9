/**
 * Which tensors get quantized: by default the 2-D weights of linear layers; embeddings, lm_head, norms, biases and
 * other 1-D tensors stay lossless. `--include` / `--exclude` globs (`*` any run of characters, `?` one character)
 * override the default: a tensor matching an include glob is quantized when it is 2-D floating point, one matching
 * an exclude glob never is.
 */
import type { Dtype } from '../container/format.js';

const QUANTIZABLE_DTYPES: readonly Dtype[] = ['F32', 'F16', 'BF16'];
const NEVER_BY_DEFAULT = /(^|\.)(embed_tokens|embeddings?|wte|wpe|lm_head|output)(\.|$)|norm/i;

export function globToRegExp(glob: string): RegExp {
  const pattern = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${pattern}$`);
}

export interface Selection {
  include?: string[];
  exclude?: string[];
}

/** Builds the predicate deciding whether a tensor is quantized. */
export function quantizationFilter(selection: Selection = {}): (tensor: { name: string; dtype: Dtype; shape: readonly number[] }) => boolean {
  const include = (selection.include ?? []).map(globToRegExp);
  const exclude = (selection.exclude ?? []).map(globToRegExp);
  return (tensor) => {
    if (tensor.shape.length !== 2 || !QUANTIZABLE_DTYPES.includes(tensor.dtype) || tensor.shape[0] === 0 || tensor.shape[1] === 0) return false;
    if (exclude.some((re) => re.test(tensor.name))) return false;
    if (include.length > 0) return include.some((re) => re.test(tensor.name));
    return tensor.name.endsWith('.weight') && !NEVER_BY_DEFAULT.test(tensor.name);
  };
}
