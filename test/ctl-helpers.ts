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
