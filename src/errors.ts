/**
 * An error caused by the user's input or environment. The CLI prints its message as one line
 * (no stack trace) and exits with `exitCode`. Messages say what is wrong and what to do.
 */
export class UserError extends Error {
  constructor(message: string, readonly exitCode = 2) {
    super(message);
    this.name = 'UserError';
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}
