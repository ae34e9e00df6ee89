// Running the built qgreyctl, for its tests.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './helpers.js';

export const QGREYCTL = join(ROOT, 'dist', 'src', 'cli', 'qgreyctl.js');

export interface CtlResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs qgreyctl to completion (killed after ms), optionally feeding stdin. */
export function ctl(args: string[], opts: { input?: string; ms?: number; cwd?: string } = {}): Promise<CtlResult> {
  const ms = opts.ms ?? 15_000;
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [QGREYCTL, ...args], { stdio: ['pipe', 'pipe', 'pipe'], cwd: opts.cwd });
    let stdout = '';
    let stderr = '';
    proc.stdout.setEncoding('latin1');
    proc.stdout.on('data', (c: string) => (stdout += c));
    proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const t = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`qgreyctl ${args.join(' ')} did not exit within ${ms} ms; stdout: ${stdout} stderr: ${stderr}`));
    }, ms);
    proc.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
    proc.stdin.on('error', () => undefined);
    proc.stdin.end(opts.input ?? '');
  });
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
