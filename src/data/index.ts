/** The data layer: dataset files and dataset_info.json, formats, validation, label masking, packing, batching. */
export * from './types.js';
export * from './files.js';
export * from './registry.js';
export * from './validate.js';
export * from './convert.js';
export * from './load.js';
export * from './encode.js';
export * from './batch.js';
export * from './preview.js';
