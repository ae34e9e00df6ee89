// Shared test helpers: spawn the built daemon on an ephemeral port and speak UDP to it.
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { encodeRequest } from '../src/protocol.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const QGREYD = join(ROOT, 'dist', 'src', 'cli', 'qgreyd.js');

export function tempDir(prefix = 'qgreyd-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export interface Daemon {
  proc: ChildProcess;
  port: number;
  host: string;
  /** every stdout line so far */
  lines: string[];
  stderr: () => string;
  /** resolves with the first line matching (of those after the first `from`), waiting up to ms */
  waitForLine(re: RegExp, ms?: number, from?: number): Promise<string>;
  /** SIGTERM and wait; resolves with the exit code */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts qgreyd with args (listen address and state dir included) and waits for its start line. */
export async function startDaemon(args: string[], opts: { env?: NodeJS.ProcessEnv; prefix?: string[]; cwd?: string | undefined } = {}): Promise<Daemon> {
  // prefix: a command that execs node in turn, e.g. ['ip', 'netns', 'exec', name]
  const argv = [...(opts.prefix ?? []), process.execPath, QGREYD, ...args];
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd });
  const lines: string[] = [];
  let err = '';
  let partial = '';
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  proc.stdout!.setEncoding('latin1');
  proc.stdout!.on('data', (chunk: string) => {
    partial += chunk;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    for (const l of parts) {
      lines.push(l);
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i].re.test(l)) {
          waiters[i].resolve(l);
          waiters.splice(i, 1);
        }
      }
    }
  });
  proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    proc.on('exit', (code, signal) => res({ code, signal })),
  );
  const waitForLine = (re: RegExp, ms = 10_000, from = 0) =>
    new Promise<string>((res, rej) => {
      const found = lines.slice(from).find((l) => re.test(l));
      if (found) return res(found);
      const t = setTimeout(() => rej(new Error(`no line matching ${re} within ${ms} ms; stdout: ${lines.join('\n')} stderr: ${err}`)), ms);
      waiters.push({ re, resolve: (l) => (clearTimeout(t), res(l)) });
      void exited.then(() => setTimeout(() => rej(new Error(`daemon exited before ${re}; stdout: ${lines.join('\n')} stderr: ${err}`)), 50));
    });
  const start = await waitForLine(/^start /);
  const m = /listen=\[?([^\]\s,]*?)\]?:(\d+)[ ,]/.exec(start);
  if (!m) throw new Error(`cannot read the port from: ${start}`);
  return {
    proc,
    host: m[1],
    port: Number(m[2]),
    lines,
    stderr: () => err,
    waitForLine,
    exited,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill(signal);
      return (await exited).code;
    },
  };
}

/** Runs qgreyd expecting it to exit; resolves with code and output. */
export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The tests' one process runner: runs a built program (a .js file) to completion, killed and
 *  failed after `ms`. `input` is fed to stdin (without it stdin is /dev/null); stdout is read
 *  as latin1 when the program writes addresses as bytes. */
export function runProgram(
  file: string,
  args: string[],
  opts: { input?: string | undefined; ms?: number | undefined; cwd?: string | undefined; latin1?: boolean } = {},
): Promise<RunResult> {
  const ms = opts.ms ?? 10_000;
  return new Promise((res, rej) => {
    const proc = spawn(process.execPath, [file, ...args], { stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], cwd: opts.cwd });
    let stdout = '';
    let stderr = '';
    if (opts.latin1 === true) proc.stdout!.setEncoding('latin1');
    proc.stdout!.on('data', (c: Buffer | string) => (stdout += c.toString()));
    proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const t = setTimeout(() => {
      proc.kill('SIGKILL');
      rej(new Error(`${file} ${args.join(' ')} did not exit within ${ms} ms; stdout: ${stdout} stderr: ${stderr}`));
    }, ms);
    proc.on('exit', (code) => {
      clearTimeout(t);
      res({ code, stdout, stderr });
    });
    if (proc.stdin !== null) {
      proc.stdin.on('error', () => undefined);
      proc.stdin.end(opts.input);
    }
  });
}

export function runDaemon(args: string[], ms = 10_000): Promise<RunResult> {
  return runProgram(QGREYD, args, { ms });
}

/** Sends one datagram (from the local address `from`, if given) and resolves with the reply as
 *  hex ("0001"), or null after timeoutMs. */
export function sendRaw(port: number, msg: Buffer, host = '127.0.0.1', timeoutMs = 2000, from?: string): Promise<string | null> {
  return new Promise((res) => {
    const sock = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const t = setTimeout(() => {
      sock.close();
      res(null);
    }, timeoutMs);
    sock.on('message', (m) => {
      clearTimeout(t);
      sock.close();
      res(m.toString('hex'));
    });
    if (from === undefined) sock.send(msg, port, host);
    else sock.bind(0, from, () => sock.send(msg, port, host));
  });
}

export function query(port: number, ip: string, sender: string, recipients: string[], host = '127.0.0.1'): Promise<string | null> {
  return sendRaw(port, encodeRequest(ip, sender, recipients), host);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A UDP socket bound to an address of this host (an ephemeral port), for a client that must
 *  send from that address. */
export async function boundSocket(from: string): Promise<dgram.Socket> {
  const sock = dgram.createSocket(from.includes(':') ? 'udp6' : 'udp4');
  await new Promise<void>((r) => sock.bind(0, from, () => r()));
  return sock;
}

/** Moves the clock of the daemons started with QGREYD_TEST_CLOCK_FILE=file to `offset`
 *  seconds ahead of the wall clock (SIGUSR2 makes each read the file) and waits until each has
 *  taken it; resolves with the number of lines the (first) daemon had written by then. The
 *  file is written once, before any signal: a daemon reading it while it is rewritten would
 *  read nothing. */
export async function setTestClock(daemons: Daemon | Daemon[], file: string, offset: number, ms = 15_000): Promise<number> {
  const all = Array.isArray(daemons) ? daemons : [daemons];
  writeFileSync(file, `${offset}\n`);
  await Promise.all(
    all.map((d) => {
      const from = d.lines.length;
      d.proc.kill('SIGUSR2');
      return d.waitForLine(new RegExp(`^test-clock offset=${offset}s$`), ms, from);
    }),
  );
  return all[0].lines.length;
}

/** A port on 127.0.0.1 that was free a moment ago (for programs that cannot report an
 *  ephemeral one): UDP for a daemon, TCP for a server. */
export function freePort(kind: 'udp' | 'tcp'): Promise<number> {
  return new Promise((res, rej) => {
    if (kind === 'udp') {
      const s = dgram.createSocket('udp4');
      s.once('error', rej);
      s.bind(0, '127.0.0.1', () => {
        const { port } = s.address();
        s.close(() => res(port));
      });
    } else {
      const s = createServer();
      s.once('error', rej);
      s.listen(0, '127.0.0.1', () => {
        const addr = s.address();
        const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
        s.close(() => res(port));
      });
    }
  });
}

/** The path of an executable on PATH, or null. */
export function which(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not in this directory
    }
  }
  return null;
}

/** Temporary directories and daemons for one test file: the file's after() hook kills the
 *  daemons and removes the directories, whatever the tests did. Call it at the top level. */
export function tracked(): { dir: () => string; daemon: (args: string[], opts?: Parameters<typeof startDaemon>[1]) => Promise<Daemon> } {
  const dirs: string[] = [];
  const daemons: Daemon[] = [];
  after(async () => {
    for (const d of daemons) await d.stop('SIGKILL');
    for (const d of dirs) removeDir(d);
  });
  return {
    dir: () => {
      const d = tempDir();
      dirs.push(d);
      return d;
    },
    daemon: async (args, opts) => {
      const d = await startDaemon(args, opts);
      daemons.push(d);
      return d;
    },
  };
}
