// What every program (qgreyd, qgreyctl, qgreyd-conf) shares: exit codes, how an error ends
// the program, --version, and the small flag-reading helpers around minimist.
import { createReadStream, readFileSync } from 'node:fs';
import { EXIT_TEMPORARY, QgreydError } from '../errors.js';

export { EXIT_NO, EXIT_OK, EXIT_PERMANENT, EXIT_TEMPORARY, type ExitClass } from '../errors.js';

/** The message on stderr, prefixed with the program's name, and the exit code. */
export function fail(program: string, message: string, code: number): never {
  process.stderr.write(`${program}: ${message}\n`);
  process.exit(code);
}

/** The one place an error becomes an exit code: a QgreydError by its class (100 permanent,
 *  111 temporary), anything else is a bug, shown with its stack, and temporary. */
export function exitOnError(program: string, e: unknown): never {
  const { code, message } = exitFor(e);
  fail(program, message, code);
}

export function exitFor(e: unknown): { code: number; message: string } {
  if (e instanceof QgreydError) return { code: e.exit, message: e.message };
  return { code: EXIT_TEMPORARY, message: `unexpected error: ${(e as Error).stack ?? String(e)}` };
}

export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** The value of a flag given once or several times: the last one wins. */
export function last(v: unknown): string | undefined {
  if (Array.isArray(v)) return last(v[v.length - 1]);
  if (v === undefined || v === null || v === false) return undefined;
  return String(v);
}

/** Every value of a flag that may repeat (-w). */
export function all(v: unknown): string[] {
  return v === undefined || v === null ? [] : Array.isArray(v) ? v.map(String) : [String(v)];
}

/** A number as a flag gives it, or null when it is not one (empty, text, infinite). */
export function numberArg(raw: string): number | null {
  const n = raw.trim() === '' ? NaN : Number(raw);
  return Number.isFinite(n) ? n : null;
}

/** A file's lines as latin1 text (addresses and log lines are bytes), read a chunk at a time:
 *  a save file or log of millions of lines never sits in memory. */
export function fileLines(fd: number): AsyncGenerator<string> {
  return streamLines(createReadStream('', { fd, start: 0, autoClose: false, highWaterMark: 1 << 16 }));
}

/** A stream's lines as latin1 text, split on \n only. */
export async function* streamLines(stream: NodeJS.ReadableStream): AsyncGenerator<string> {
  stream.setEncoding('latin1');
  let partial = '';
  for await (const chunk of stream as AsyncIterable<string>) {
    partial += chunk;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    yield* parts;
  }
  if (partial !== '') yield partial;
}
