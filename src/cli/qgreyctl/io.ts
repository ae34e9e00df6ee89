// What a qgreyctl command may touch of the world outside its arguments: standard output (with
// flow control), standard error, standard input, the environment, and whether it may change
// the process's user. The program hands its commands the process's own (processIo); a test
// runs the same commands in its own process with one that captures (test/ctl-helpers.ts), so
// a command never writes to, reads from or exits the process by itself.
import { once } from 'node:events';

export interface CtlIo {
  /** standard output; resolves when the text may be followed by more (flow control: a dump of
   *  millions of records must not pile up in memory) */
  out(text: string, encoding?: BufferEncoding): Promise<void>;
  /** standard error: one message, with its newline */
  err(text: string): void;
  /** standard input (report reads a log from it) */
  readonly stdin: NodeJS.ReadableStream;
  /** whether standard input is a terminal (report refuses to wait on one) */
  readonly stdinIsTTY: boolean;
  /** the environment (QGREYD_STORE) */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** run as root on a state directory another user owns, a command becomes that user (the
   *  program may; a test process must not) */
  readonly mayChangeUser: boolean;
}

/** What a command is given besides its own arguments. */
export interface CtlContext {
  /** --state given before the command */
  readonly globalState: string | undefined;
  readonly io: CtlIo;
}

/** The process's own streams. `broken` turns output into a no-op once the reader went away
 *  (the program's entry sets it on EPIPE, then exits). */
export function processIo(): CtlIo & { broken: boolean } {
  const io = {
    broken: false,
    async out(text: string, encoding: BufferEncoding = 'utf8'): Promise<void> {
      if (io.broken) return;
      if (!process.stdout.write(text, encoding)) await once(process.stdout, 'drain');
    },
    err(text: string): void {
      process.stderr.write(text);
    },
    // process.stdin is made on first use: only report asks for it
    get stdin(): NodeJS.ReadableStream {
      return process.stdin;
    },
    get stdinIsTTY(): boolean {
      return process.stdin.isTTY === true;
    },
    env: process.env,
    mayChangeUser: true,
  };
  return io;
}
