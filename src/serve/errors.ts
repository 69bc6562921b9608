/**
 * Errors the server answers with, in OpenAI's shape:
 *
 *   {"error": {"message": "...", "type": "invalid_request_error", "param": "messages", "code": null}}
 *
 * Handlers throw an {@link ApiError} (or let a `UserError` from the library through); the one
 * function {@link toErrorResponse} turns whatever was thrown into a status and a body, so the
 * mapping from error kinds to HTTP status lives in this file only.
 */
import { UserError } from '../errors.js';

export type ApiErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error';

export interface ApiErrorBody {
  error: { message: string; type: ApiErrorType; param: string | null; code: string | null };
}

/** Status of each error type; `invalid_request_error` is 400 unless a more precise status is given. */
const STATUS: Record<ApiErrorType, number> = {
  invalid_request_error: 400,
  authentication_error: 401,
  not_found_error: 404,
  rate_limit_error: 429,
  server_error: 500,
};

export class ApiError extends Error {
  readonly status: number;

  constructor(
    readonly type: ApiErrorType,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    status?: number,
  ) {
    super(message);
    this.name = 'ApiError';
    this.status = status ?? STATUS[type];
  }
}

/** A field of the request body is missing, of the wrong type or out of range. */
export function invalidParam(param: string | null, message: string, code: string | null = null): ApiError {
  return new ApiError('invalid_request_error', message, param, code);
}

export function unknownModel(model: string, known: readonly string[]): ApiError {
  return new ApiError(
    'invalid_request_error',
    `The model \`${model}\` does not exist; this server has: ${known.join(', ')}`,
    'model',
    'model_not_found',
    404,
  );
}

export function contextLengthExceeded(param: string, limit: number, promptTokens: number, completionTokens: number): ApiError {
  return new ApiError(
    'invalid_request_error',
    `This model's maximum context length is ${limit} tokens. However, you requested ${promptTokens + completionTokens} tokens ` +
      `(${promptTokens} in the ${param === 'messages' ? 'messages' : 'prompt'}, ${completionTokens} in the completion). ` +
      'Please reduce the length of the prompt or of max_tokens.',
    param,
    'context_length_exceeded',
  );
}

export function unauthorized(message: string): ApiError {
  return new ApiError('authentication_error', message, null, 'invalid_api_key');
}

export function queueFull(limit: number): ApiError {
  return new ApiError(
    'rate_limit_error',
    `The server is busy: ${limit} requests are already waiting. Retry after a short while.`,
    null,
    'rate_limit_exceeded',
  );
}

export function notFound(method: string, path: string): ApiError {
  return new ApiError('invalid_request_error', `Invalid URL (${method} ${path})`, null, 'unknown_url', 404);
}

export function methodNotAllowed(method: string, path: string, allowed: string): ApiError {
  return new ApiError('invalid_request_error', `${path} accepts ${allowed}, not ${method}`, null, 'method_not_allowed', 405);
}

/**
 * The status and body for anything a handler threw: an ApiError as it says; a UserError (a bad
 * conversation for the chat template, say) is the client's mistake, 400; anything else is a bug
 * of ours, 500, with a generic message (the details go to the server's log, not to the client).
 */
export function toErrorResponse(e: unknown): { status: number; body: ApiErrorBody } {
  if (e instanceof ApiError) {
    return { status: e.status, body: { error: { message: e.message, type: e.type, param: e.param, code: e.code } } };
  }
  if (e instanceof UserError) {
    return { status: 400, body: { error: { message: e.message, type: 'invalid_request_error', param: null, code: null } } };
  }
  return {
    status: 500,
    body: { error: { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: null } },
  };
}
