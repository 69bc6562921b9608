/**
 * A mistake in what the user gave us (a file, a flag, a config key). The CLI prints its message
 * as one line and exits non-zero, without a stack trace; anything else is a bug and keeps its trace.
 */
export class UserError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
    this.name = 'UserError';
  }
}

/** A file we were asked to read is malformed: the message names the file and the problem. */
export class FileFormatError extends UserError {
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = 'FileFormatError';
  }
}
