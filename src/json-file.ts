import { readFileSync } from 'node:fs';

import { FileFormatError, UserError } from './errors.js';

/**
 * Reads a JSON file whose top level must be an object, with errors that name the file: missing
 * or unreadable, not valid JSON (with the parser's reason), or not an object (`expected` says
 * what was wanted instead).
 */
export function readJsonFile(path: string, expected = 'expected a JSON object'): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new UserError(`${path}: file not found`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new FileFormatError(path, `not valid JSON (${(err as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new FileFormatError(path, expected);
  return parsed as Record<string, unknown>;
}
