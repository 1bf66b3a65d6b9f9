/**
 * Token files: little-endian uint16 token ids (`<name>.u16`), optionally beside a JSON description
 * (`<name>.json`) that gives the evaluation context length and how many tokens the file should hold.
 */
import { readFile, stat } from 'node:fs/promises';
import { EqzError } from '../errors.js';

/** A token file's ids and what its JSON description says about them. */
export interface TokenFile {
  tokens: Uint16Array;
  /** Context length the description evaluates with (`eval.n_ctx`), when there is a description. */
  ctx?: number;
  /** The description's own perplexity figure (`eval.ppl`), when it gives one. */
  referencePerplexity?: number;
}

/** 2 GiB of tokens: more than any evaluation here needs, and bounded before the file is read. */
const MAX_TOKEN_FILE_BYTES = 2 ** 31;

/** The description's path: `x.tokens.u16` → `x.tokens.json`. */
function descriptionPath(path: string): string {
  return path.replace(/(\.u16)?$/, '.json');
}

async function readDescription(path: string): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new EqzError('Io', (error as Error).message, { file: path });
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch {
    // reported below, with the file named
  }
  throw new EqzError('Malformed', 'the token file description is not a JSON object', { file: path });
}

/**
 * Reads token file `path` and, when present, its JSON description. Throws EqzError `Truncated` when the file has
 * an odd number of bytes or fewer tokens than its description's `tokens` count, `LimitExceeded` beyond 2 GiB.
 */
export async function readTokenFile(path: string): Promise<TokenFile> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (error) {
    throw new EqzError('Io', (error as Error).message, { file: path });
  }
  if (size > MAX_TOKEN_FILE_BYTES) throw new EqzError('LimitExceeded', `token file of ${size} bytes exceeds ${MAX_TOKEN_FILE_BYTES}`, { file: path });
  if (size % 2 !== 0) {
    throw new EqzError('Truncated', `token file has ${size} bytes, not a whole number of uint16 tokens`, { file: path, offset: size - 1 });
  }
  const bytes = await readFile(path);
  const tokens = new Uint16Array(size / 2);
  for (let i = 0; i < tokens.length; i++) tokens[i] = bytes[2 * i] | (bytes[2 * i + 1] << 8);

  const description = await readDescription(descriptionPath(path));
  if (!description) return { tokens };
  const declared = description.tokens;
  if (typeof declared === 'number' && declared > tokens.length) {
    throw new EqzError('Truncated', `token file holds ${tokens.length} tokens, its description says ${declared}`, { file: path, offset: size });
  }
  const evaluation = (description.eval ?? {}) as Record<string, unknown>;
  return {
    tokens,
    ctx: Number.isInteger(evaluation.n_ctx) ? (evaluation.n_ctx as number) : undefined,
    referencePerplexity: typeof evaluation.ppl === 'number' ? evaluation.ppl : undefined,
  };
}
