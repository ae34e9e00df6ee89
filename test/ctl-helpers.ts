// Running the built qgreyctl, for its tests.
import { join } from 'node:path';
import { ROOT, runProgram, type RunResult } from './helpers.js';

export const QGREYCTL = join(ROOT, 'dist', 'src', 'cli', 'qgreyctl.js');

export type CtlResult = RunResult;

/** Runs qgreyctl to completion (killed after ms), feeding stdin (empty unless given). */
export function ctl(args: string[], opts: { input?: string; ms?: number; cwd?: string } = {}): Promise<CtlResult> {
  return runProgram(QGREYCTL, args, { input: opts.input ?? '', ms: opts.ms ?? 15_000, cwd: opts.cwd, latin1: true });
}

/** Runs a qgreyctl command in this process, through the same dispatch and error-to-exit mapping
 *  as the program, with its output captured: for the commands that need no daemon, no store and
 *  no standard input, without the cost of starting node. */
export async function ctlInProcess(args: string[]): Promise<CtlResult> {
  const { main, errorExit } = await import('../src/cli/qgreyctl/main.js');
  let stdout = '';
  let stderr = '';
  const out = process.stdout.write;
  const err = process.stderr.write;
  // text is the command's; the test runner reports through stdout in Buffers, which pass
  const capture = (orig: typeof out, add: (s: string) => void) =>
    function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]): boolean {
      if (typeof chunk !== 'string') return (orig as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
      add(chunk);
      return true;
    } as typeof out;
  process.stdout.write = capture(out, (s) => (stdout += s));
  process.stderr.write = capture(err, (s) => (stderr += s));
  let code: number;
  try {
    code = await main(args);
  } catch (e) {
    const r = errorExit(e);
    stderr += `qgreyctl: ${r.message}\n`;
    code = r.code;
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
  return { code, stdout, stderr };
}
