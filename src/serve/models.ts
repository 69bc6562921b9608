import { loadPipeline } from '../infer/pipeline.js';
import type { Pipeline } from '../infer/pipeline.js';
import { UserError } from '../errors.js';
import { AdapterSet, folderId } from './adapters.js';
import type { AdapterSpec } from './adapters.js';
import { unknownModel } from './errors.js';

/** The base model and its adapters, each under the id clients put in `model`. */
export interface ServedModels {
  pipeline: Pipeline;
  adapters: AdapterSet;
  /** The base model's id; the adapters' ids follow in `ids`. */
  baseId: string;
  ids: string[];
  /** Unix seconds, for `/v1/models`. */
  created: number;
}

export interface LoadModelsOptions {
  model: string;
  adapters?: readonly AdapterSpec[];
  /** The base model's id (default: its folder's name). */
  baseId?: string | null;
  /** A built-in chat template instead of the model's own. */
  template?: string | null;
}

/** Loads the base model once and every adapter over it (switched per request, see AdapterSet). */
export function loadServedModels(opts: LoadModelsOptions): ServedModels {
  const pipeline = loadPipeline(opts.model, { template: opts.template });
  const baseId = opts.baseId || folderId(opts.model);
  const adapters = new AdapterSet(pipeline.model);
  for (const spec of opts.adapters ?? []) {
    const name = spec.name || folderId(spec.dir);
    if (name === baseId) throw new UserError(`adapter ${spec.dir} would be served as "${name}", the base model's id; name it with --adapter NAME=DIR`);
    adapters.add(name, spec.dir);
  }
  return { pipeline, adapters, baseId, ids: [baseId, ...adapters.names], created: Math.floor(Date.now() / 1000) };
}

/** The adapter a `model` id asks for (null: the base), or the 404 error naming the ids served. */
export function adapterFor(models: ServedModels, id: string): string | null {
  if (id === models.baseId) return null;
  if (models.adapters.has(id)) return id;
  throw unknownModel(id, models.ids);
}
