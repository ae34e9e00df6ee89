// The one error type: a stable `code` a caller can branch on, and whether trying again later
// may succeed (temporary: exit 111, the qmail convention) or not (permanent: exit 100). Every
// error qgreyd, qgreyctl and qgreyd-conf raise on purpose is a QgreydError; the programs turn
// one into an exit code in one place (cli/common.ts). Anything else is a bug, reported as
// "unexpected error" with its stack and exit 111.

export const EXIT_OK = 0;
/** qgreyctl: the answer is no (query: deferred; forget: nothing to forget) */
export const EXIT_NO = 1;
export const EXIT_PERMANENT = 100;
export const EXIT_TEMPORARY = 111;
export type ExitClass = typeof EXIT_PERMANENT | typeof EXIT_TEMPORARY;

export class QgreydError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly temporary = false,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }

  get exit(): ExitClass {
    return this.temporary ? EXIT_TEMPORARY : EXIT_PERMANENT;
  }
}

/** errno codes after which the same call may succeed later, without anyone changing a setting:
 *  resources that run out and come back. Anything else (EACCES, EROFS, ENOTDIR, ...) needs the
 *  admin. */
const TEMPORARY_ERRNO = new Set(['EAGAIN', 'EBUSY', 'EINTR', 'EIO', 'EMFILE', 'ENFILE', 'ENOMEM', 'ENOSPC', 'EDQUOT', 'ETIMEDOUT', 'EADDRINUSE']);

export function isTemporaryErrno(code: string | undefined): boolean {
  return code !== undefined && TEMPORARY_ERRNO.has(code);
}

/** The errno code of a Node error, if it has one. */
export function errnoOf(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
