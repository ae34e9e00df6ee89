// Running qgreyctl, for its tests: the built program spawned (ctl), or its commands in this
// process (ctlInProcess).
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { exitFor } from '../src/cli/common.js';
import { main } from '../src/cli/qgreyctl/main.js';
import type { CtlIo } from '../src/cli/qgreyctl/io.js';
import { ROOT, runProgram, type RunResult } from './helpers.js';

export const QGREYCTL = join(ROOT, 'dist', 'src', 'cli', 'qgreyctl.js');

export type CtlResult = RunResult;

/** Runs the qgreyctl program to completion (killed after ms), feeding stdin (empty unless
 *  given): for what only the program shows (its exit code, which stream a line goes to, a
 *  terminal, another process holding the store, another user). */
export function ctl(args: string[], opts: { input?: string; ms?: number; cwd?: string } = {}): Promise<CtlResult> {
  return runProgram(QGREYCTL, args, { input: opts.input ?? '', ms: opts.ms ?? 15_000, cwd: opts.cwd, latin1: true });
}

/** Runs a qgreyctl command in this process, through the same dispatch as the program and the
 *  same error-to-exit mapping (exitFor), with its output captured as the program's would be
 *  read (stdout as latin1 bytes), `input` as its standard input (not a terminal) and `env` as
 *  its environment (none unless given). Working on a store directly, the command opens it in
 *  this process, so the store must not be open here at the same time. */
export async function ctlInProcess(args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<CtlResult> {
  let stdout = '';
  let stderr = '';
  const io: CtlIo = {
    out: (text, encoding = 'utf8') => {
      stdout += Buffer.from(text, encoding).toString('latin1');
      return Promise.resolve();
    },
    err: (text) => {
      stderr += text;
    },
    stdin: Readable.from([Buffer.from(opts.input ?? '', 'latin1')], { objectMode: false }),
    stdinIsTTY: false,
    env: opts.env ?? {},
    mayChangeUser: false,
  };
  let code: number;
  try {
    code = await main(args, io);
  } catch (e) {
    const r = exitFor(e);
    stderr += `qgreyctl: ${r.message}\n`;
    code = r.code;
  }
  return { code, stdout, stderr };
}
