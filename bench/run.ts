// npm run bench: the standard set. npm run bench:big adds the big-store figures.
//
//   node dist/bench/run.js [--duration 10] [--clients 32] [--seed 1] [--new 0.4] [--retry 0.3]
//        [--hot 0.3] [--stored 0] [--big] [--count 1000000] [--no-sweep] [--node-loadgen] [--keep]
//        [--startups 3] [--big-dir DIR]
//        [--rounds 1] [--compare OTHER/qgreyd.js] [--perl PATH [--perl-port P] [--perl-args '-m 0.05 -w {whitelist} 127.0.0.1:{port} {save}']]
//        [--multilog] [--profile]
//
// Standard set: the bare dgram baseline and qgreyd on an empty store, both driven by the same
// load generator in the same run, so the ratio means something on a shared, noisy machine.
// --big: fill COUNT live triplets; start-up time to the first reply (--startups times after a
// clean stop and after SIGKILL under load: median and range, with the daemon's -d start-up
// timing); throughput and peak RSS (and its anonymous and file-backed parts) with them stored;
// then (unless --no-sweep) COUNT dead triplets and the expiry sweep's effect on latency.
// --big-dir DIR: the filled store is DIR, kept; filled only when DIR does not exist yet, so a
// second run on the same COUNT skips the fill.
// --rounds N: the standard set N times, alternating, with the median and range of each ratio.
// --compare FILE: another build's dist/src/cli/qgreyd.js in each round (qgreyd/compared).
// --perl PATH: greydaemon itself (run with perl) in each round, on --perl-port (default: a
// free port each round, so that another greydaemon on its usual 1999 cannot answer), with
// --perl-args ({whitelist}, {save} and {port} filled in); each round then also gives
// qgreyd/greydaemon.
// --multilog: every daemon (qgreyd, greydaemon, the compared build) logs into a pipe read by
// `multilog t DIR`, as under daemontools, instead of into a file.
// Each row also gives the daemon's CPU per request: utime+stime from /proc/PID/stat over the
// load run, divided by the requests answered, and in parentheses its main thread's alone
// (/proc/PID/task/PID/stat).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { closeSync, existsSync, fstatSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Writable } from 'node:stream';
import minimist from 'minimist';
import { encodeRequest } from '../src/protocol.js';
import { BENCH_WHITELIST } from './workload.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DIST = join(ROOT, 'dist');
const QGREYD = join(DIST, 'src', 'cli', 'qgreyd.js');
const HOT_IPS = 1000;

const args = minimist(process.argv.slice(2), { boolean: ['big', 'node-loadgen', 'keep', 'profile', 'sweep', 'multilog'], default: { sweep: true } });
const duration = Number(args.duration ?? 10);
const clients = Number(args.clients ?? 32);
const seed = Number(args.seed ?? 1);
const count = Number(args.count ?? 1_000_000);
const mix = ['new', 'retry', 'hot', 'stored'].flatMap((k) => (args[k] === undefined ? [] : [`--${k}`, String(args[k])]));
/** -m 0.05 (3 s): within a 10 s run, retries meet both "too soon" and "passed" */
const DAEMON_FLAGS = ['-m', '0.05'];
const rounds = Number(args.rounds ?? 1);
/** another build's qgreyd.js (e.g. the last release), run in each round as well */
const compare = typeof args.compare === 'string' && args.compare !== '' ? resolve(args.compare) : null;
const perl = typeof args.perl === 'string' && args.perl !== '' ? resolve(args.perl) : null;
const perlPortGiven = args['perl-port'] === undefined ? null : Number(args['perl-port']);
const perlArgs = String(args['perl-args'] ?? '-m 0.05 -w {whitelist} 127.0.0.1:{port} {save}');
const multilog = args.multilog === true;

interface LoadResult {
  generator: string;
  clients: number;
  seconds: number;
  requests: number;
  rps: number;
  p50_us: number;
  p99_us: number;
  p999_us: number;
  max_us: number;
  lost: number;
  bad_replies: number;
  start_ms: number;
  kinds: Record<string, number>;
  codes: Record<string, number>;
}

const work = mkdtempSync(join(tmpdir(), 'qgreyd-bench-'));
const say = (s: string) => process.stderr.write(s + '\n');

function buildLoadgen(): string {
  if (args['node-loadgen']) return '';
  const out = join(DIST, 'bench', 'loadgen');
  const cc = process.env.CC ?? 'cc';
  const r = spawnSync(cc, ['-O2', '-Wall', '-o', out, join(ROOT, 'bench', 'loadgen.c')], { stdio: 'inherit' });
  if (r.status !== 0) {
    say(`bench: cannot build bench/loadgen.c with ${cc} (exit ${r.status}); install a C compiler, or run with --node-loadgen`);
    process.exit(111);
  }
  return out;
}
const loadgen = buildLoadgen();

function runLoad(port: number, extra: string[] = [], onStart?: (p: ChildProcess) => void): Promise<LoadResult> {
  const common = ['--port', String(port), '--clients', String(clients), '--duration', String(duration), '--seed', String(seed), '--hot-ips', String(HOT_IPS), ...mix, ...extra];
  const p = loadgen === '' ? spawn(process.execPath, [join(DIST, 'bench', 'loadgen.js'), ...common]) : spawn(loadgen, common);
  let out = '';
  let err = '';
  p.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  p.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  onStart?.(p);
  return new Promise((res, rej) =>
    p.on('exit', (code) => {
      if (code !== 0) return rej(new Error(`load generator exited ${code}: ${err}`));
      res(JSON.parse(out) as LoadResult);
    }),
  );
}

function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = dgram.createSocket('udp4');
    s.bind(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => res(p));
    });
  });
}

/** CPU time so far (user + system) in microseconds, of a /proc stat file. */
function statCpuUs(file: string): number {
  const stat = readFileSync(file, 'utf8');
  // the fields after the command name, which is in parentheses and may hold spaces
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the line (11 and 12 here), in clock ticks
  return ((Number(f[11]) + Number(f[12])) * 1e6) / CLOCK_TICKS;
}

/** Starts measuring a process's CPU; the function returned gives the µs per request since,
 *  of the whole process and of its main thread (the event loop, without LevelDB's and
 *  libuv's threads). */
function cpuMeter(pid: number): (requests: number) => { all: number; main: number } {
  const all0 = statCpuUs(`/proc/${pid}/stat`);
  const main0 = statCpuUs(`/proc/${pid}/task/${pid}/stat`);
  return (requests) => ({
    all: (statCpuUs(`/proc/${pid}/stat`) - all0) / requests,
    main: (statCpuUs(`/proc/${pid}/task/${pid}/stat`) - main0) / requests,
  });
}
const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** Where a daemon's output goes: a file, or with --multilog a pipe into `multilog t DIR`
 *  (whose `current` is then the log file). */
interface LogSink {
  stdio: number | Writable;
  logFile: string;
  /** once the daemon has been spawned: the parent lets go of its end */
  spawned(): void;
  /** resolves when the log reader has finished (multilog exits at the pipe's end) */
  done: Promise<void>;
}

function logSink(name: string): LogSink {
  if (!multilog) {
    const logFile = join(work, `${name}.log`);
    const fd = openSync(logFile, 'w');
    return { stdio: fd, logFile, spawned: () => closeSync(fd), done: Promise.resolve() };
  }
  const dir = join(work, `${name}.multilog`);
  const m = spawn('multilog', ['t', dir], { stdio: ['pipe', 'ignore', 'inherit'] });
  const done = new Promise<void>((r) => m.on('exit', () => r()));
  return { stdio: m.stdin!, logFile: join(dir, 'current'), spawned: () => m.stdin!.destroy(), done };
}

function peakRss(pid: number): { hwmMb: number; rssMb: number; anonMb: number; fileMb: number } {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(st)?.[1] ?? NaN);
  return { hwmMb: kb('VmHWM') / 1024, rssMb: kb('VmRSS') / 1024, anonMb: kb('RssAnon') / 1024, fileMb: kb('RssFile') / 1024 };
}

/** Samples the daemon's memory every 100 ms: the largest RSS seen and its parts then (anonymous:
 *  the index, V8, LevelDB's caches; file-backed: LevelDB's memory-mapped tables, the program). */
function sampleRss(pid: number): () => { rssMb: number; anonMb: number; fileMb: number } {
  let peak = { rssMb: 0, anonMb: 0, fileMb: 0 };
  const take = () => {
    try {
      const m = peakRss(pid);
      if (m.rssMb > peak.rssMb) peak = { rssMb: m.rssMb, anonMb: m.anonMb, fileMb: m.fileMb };
    } catch {
      // exited
    }
  };
  take();
  const t = setInterval(take, 100);
  return () => {
    take();
    clearInterval(t);
    return peak;
  };
}

const median = (v: number[]) => [...v].sort((x, y) => x - y)[Math.floor(v.length / 2)];
const range = (v: number[]) => `${Math.min(...v)}-${Math.max(...v)}`;

interface Running {
  proc: ChildProcess;
  port: number;
  logFile: string;
  spawnedAt: number;
  /** stops the daemon and waits for its log reader */
  stop(): Promise<void>;
}

/** Starts qgreyd with its log going to a file (as it would go to multilog), on a known port. */
async function startQgreyd(stateDir: string, extra: string[] = [], profileDir?: string, program = QGREYD): Promise<Running> {
  const port = await freePort();
  const wl = join(work, 'whitelist');
  writeFileSync(wl, BENCH_WHITELIST);
  const sink = logSink(`qgreyd-${port}`);
  const node = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  const spawnedAt = Date.now();
  const proc = spawn(process.execPath, [...node, program, ...DAEMON_FLAGS, ...extra, '-w', wl, `127.0.0.1:${port}`, stateDir], { stdio: ['ignore', sink.stdio, 'inherit'] });
  sink.spawned();
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  return {
    proc,
    port,
    logFile: sink.logFile,
    spawnedAt,
    async stop() {
      proc.kill('SIGTERM');
      await exited;
      await sink.done;
    },
  };
}

function waitForLog(logFile: string, re: RegExp, ms: number): Promise<{ line: string; at: number } | null> {
  const until = Date.now() + ms;
  // read what was added since the last poll (a long run's log outgrows what one string holds)
  let offset = 0;
  let rest = '';
  const chunk = Buffer.allocUnsafe(1 << 20);
  return new Promise((res) => {
    const poll = () => {
      if (existsSync(logFile)) {
        const fd = openSync(logFile, 'r');
        try {
          // (multilog rotated `current`: start again in the new one)
          if (fstatSync(fd).size < offset) {
            offset = 0;
            rest = '';
          }
          for (;;) {
            const n = readSync(fd, chunk, 0, chunk.length, offset);
            if (n === 0) break;
            offset += n;
            const lines = (rest + chunk.toString('latin1', 0, n)).split('\n');
            rest = lines.pop() ?? '';
            const line = lines.find((l) => re.test(l));
            if (line !== undefined) return res({ line, at: Date.now() });
          }
        } finally {
          closeSync(fd);
        }
      }
      if (Date.now() > until) return res(null);
      setTimeout(poll, 50);
    };
    poll();
  });
}

/** Time from spawning the daemon to its first reply to a request that needs the store. */
function firstReply(d: Running, ms = 10_000): Promise<number | null> {
  return new Promise((res) => {
    const s = dgram.createSocket('udp4');
    const msg = encodeRequest('198.18.0.1', 'first@reply.example', ['probe@bench.example']);
    const send = () => s.send(msg, d.port, '127.0.0.1');
    const timer = setInterval(send, 5);
    const give = setTimeout(() => done(null), ms);
    const done = (v: number | null) => {
      clearInterval(timer);
      clearTimeout(give);
      s.close();
      res(v);
    };
    s.on('message', () => done(Date.now() - d.spawnedAt));
    s.on('error', () => undefined);
    send();
  });
}

function fillStore(dir: string, n: number, dead: boolean): number {
  const t = Date.now();
  const r = spawnSync(process.execPath, [join(DIST, 'bench', 'fill.js'), '--dir', dir, '--count', String(n), '--known-good', String(HOT_IPS), ...(dead ? ['--dead'] : [])], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error(`fill exited ${r.status}`);
  return Date.now() - t;
}

function dirMb(dir: string): number {
  const r = spawnSync('du', ['-sk', dir], { encoding: 'utf8' });
  return Number(r.stdout.split(/\s/)[0]) / 1024;
}

interface Row {
  name: string;
  r: LoadResult;
  ratio?: number;
  rss?: number;
  /** the daemon's CPU per request over the load run, µs: the process's, its main thread's */
  cpu?: { all: number; main: number };
  note?: string;
}
const rows: Row[] = [];
const notes: string[] = [];

async function qgreydRun(name: string, stateDir: string, extra: string[] = [], loadExtra: string[] = [], program = QGREYD): Promise<Row> {
  const d = await startQgreyd(stateDir, extra, args.profile ? join(work, 'profile') : undefined, program);
  const sampled = sampleRss(d.proc.pid!);
  const first = await firstReply(d);
  if (first === null) throw new Error(`qgreyd did not answer; log in ${d.logFile}`);
  const meter = cpuMeter(d.proc.pid!);
  const r = await runLoad(d.port, loadExtra);
  const cpu = meter(r.requests);
  const hwm = peakRss(d.proc.pid!).hwmMb;
  const peak = sampled();
  await d.stop();
  const row: Row = { name, r, rss: hwm, cpu, note: `peak RSS ${peak.rssMb.toFixed(0)} MB sampled: ${peak.anonMb.toFixed(0)} MB anonymous, ${peak.fileMb.toFixed(0)} MB file-backed` };
  rows.push(row);
  return row;
}

/** The -d start-up line's parts, e.g. "node=70 modules=160 ... answering=425". */
function startupLine(logFile: string): string {
  const line = readFileSync(logFile, 'latin1')
    .split('\n')
    .find((l) => l.startsWith('debug start-up '));
  return line === undefined ? '(no start-up line)' : line.replace(/^debug start-up ms-since-exec /, '');
}

function fmtRow(x: Row, base: number): string {
  const r = x.r;
  const codes = Object.entries(r.codes).map(([c, n]) => `${c}:${Math.round((100 * n) / r.requests)}%`).join(' ');
  return `| ${x.name} | ${r.rps.toLocaleString('en-US')} | ${((100 * r.rps) / base).toFixed(0)}% | ${(r.p50_us / 1000).toFixed(2)} | ${(r.p99_us / 1000).toFixed(2)} | ${(r.max_us / 1000).toFixed(1)} | ${r.lost} | ${x.rss === undefined ? '-' : x.rss.toFixed(0)} | ${x.cpu === undefined ? '-' : `${x.cpu.all.toFixed(1)} (${x.cpu.main.toFixed(1)})`} | ${codes} |`;
}

async function main(): Promise<void> {
  say(`bench: work dir ${work}; ${clients} clients, ${duration} s per run, generator ${loadgen === '' ? 'node' : 'C'}`);
  const ratios: Record<string, number[]> = { 'qgreyd / baseline': [] };
  if (compare !== null) {
    ratios['compared build / baseline'] = [];
    ratios['qgreyd / compared build'] = [];
  }
  if (perl !== null) {
    ratios['greydaemon / baseline'] = [];
    ratios['qgreyd / greydaemon'] = [];
    ratios['qgreyd / greydaemon, p99'] = [];
    ratios['qgreyd / greydaemon, CPU per request'] = [];
  }
  let base!: LoadResult;
  let e!: Row;
  for (let round = 1; round <= rounds; round++) {
    const b = spawn(process.execPath, [join(DIST, 'bench', 'baseline.js'), String(await freePort())], { stdio: ['ignore', 'pipe', 'inherit'] });
    const bport = await new Promise<number>((res) => b.stdout!.once('data', (c: Buffer) => res(Number(/:(\d+)/.exec(c.toString())![1]))));
    const bmeter = cpuMeter(b.pid!);
    base = await runLoad(bport);
    const bcpu = bmeter(base.requests);
    const brss = peakRss(b.pid!).hwmMb;
    b.kill('SIGTERM');
    rows.push({ name: `bare dgram baseline${rounds > 1 ? ` (round ${round})` : ''}`, r: base, rss: brss, cpu: bcpu });
    say(`bench: baseline ${base.rps} req/s`);

    const empty = join(work, `empty-${round}`);
    fillStore(empty, 0, false);
    e = await qgreydRun(`qgreyd, empty store${rounds > 1 ? ` (round ${round})` : ''}`, empty);
    rmSync(empty, { recursive: true, force: true });
    say(`bench: qgreyd empty store ${e.r.rps} req/s`);
    ratios['qgreyd / baseline'].push(e.r.rps / base.rps);
    if (compare !== null) {
      const dir = join(work, `compare-${round}`);
      fillStore(dir, 0, false);
      const c = await qgreydRun(`compared build ${compare}${rounds > 1 ? ` (round ${round})` : ''}`, dir, [], [], compare);
      rmSync(dir, { recursive: true, force: true });
      ratios['compared build / baseline'].push(c.r.rps / base.rps);
      ratios['qgreyd / compared build'].push(e.r.rps / c.r.rps);
    }
    if (perl !== null) {
      const g = await perlRun(round);
      ratios['greydaemon / baseline'].push(g.r.rps / base.rps);
      ratios['qgreyd / greydaemon'].push(e.r.rps / g.r.rps);
      ratios['qgreyd / greydaemon, p99'].push(e.r.p99_us / g.r.p99_us);
      ratios['qgreyd / greydaemon, CPU per request'].push(e.cpu!.all / g.cpu!.all);
    }
  }
  for (const [name, v] of Object.entries(ratios)) {
    if (v.length === 0) continue;
    const sorted = [...v].sort((x, y) => x - y);
    notes.push(`${name}: median ${sorted[Math.floor(sorted.length / 2)].toFixed(2)}x, range ${sorted[0].toFixed(2)}-${sorted[sorted.length - 1].toFixed(2)} over ${v.length} round(s)`);
  }

  if (args.big) {
    const bigDir = typeof args['big-dir'] === 'string' && args['big-dir'] !== '' ? resolve(args['big-dir']) : null;
    const live = bigDir ?? join(work, 'live');
    if (bigDir === null || !existsSync(bigDir)) {
      const fillMs = fillStore(live, count, false);
      notes.push(`fill: ${count.toLocaleString('en-US')} live triplets written in ${(fillMs / 1000).toFixed(1)} s, store ${dirMb(live).toFixed(0)} MB on disk`);
    } else {
      notes.push(`store: ${live} as filled before (${dirMb(live).toFixed(0)} MB on disk)`);
    }
    const startups = Math.max(1, Number(args.startups ?? 3));
    const clean: number[] = [];
    const cleanLines: string[] = [];
    for (let i = 0; i < startups; i++) {
      // -d: the daemon logs when each part of its start-up ended
      const d = await startQgreyd(live, ['-d']);
      const first = await firstReply(d, 120_000);
      await d.stop();
      if (first === null) throw new Error(`qgreyd did not answer after a clean stop; log in ${d.logFile}`);
      clean.push(first);
      cleanLines.push(`${first} ms: ${startupLine(d.logFile)}`);
    }
    notes.push(
      `start-up with ${count.toLocaleString('en-US')} stored, after a clean stop: first reply median ${median(clean)} ms after spawn, range ${range(clean)} over ${startups} (node start-up included); ` +
        `each (ms since exec): ${cleanLines.join('; ')}`,
    );
    say(`bench: ${notes[notes.length - 1]}`);
    const killed: number[] = [];
    const killedLines: string[] = [];
    let killedRss = 0;
    for (let i = 0; i < startups; i++) {
      // under load, then SIGKILL: the next start replays the logs onto the live snapshot
      const k = await startQgreyd(live);
      await firstReply(k, 120_000);
      let lg: ChildProcess | null = null;
      const load = runLoad(k.port, ['--duration', '3'], (p) => (lg = p));
      await new Promise((r) => setTimeout(r, 2000));
      k.proc.kill('SIGKILL');
      await new Promise<void>((r) => k.proc.once('exit', () => r()));
      (lg as ChildProcess | null)?.kill('SIGINT');
      await load.catch(() => undefined);
      const again = await startQgreyd(live, ['-d']);
      const firstKilled = await firstReply(again, 120_000);
      killedRss = Math.max(killedRss, peakRss(again.proc.pid!).hwmMb);
      await again.stop();
      if (firstKilled === null) throw new Error(`qgreyd did not answer after SIGKILL; log in ${again.logFile}`);
      killed.push(firstKilled);
      killedLines.push(`${firstKilled} ms: ${startupLine(again.logFile)}`);
    }
    notes.push(
      `start-up with ${count.toLocaleString('en-US')} stored, after SIGKILL under load: first reply median ${median(killed)} ms after spawn, range ${range(killed)} over ${startups}; peak RSS by then ${killedRss.toFixed(0)} MB; ` +
        `each (ms since exec): ${killedLines.join('; ')}`,
    );
    say(`bench: ${notes[notes.length - 1]}`);
    const big = await qgreydRun(`qgreyd, ${fmtCount(count)} stored`, live);
    say(`bench: qgreyd ${count} stored ${big.r.rps} req/s`);
    notes.push(`with ${fmtCount(count)} stored: ${((100 * big.r.rps) / e.r.rps).toFixed(0)}% of the empty-store throughput; ${big.note}`);
    const mixed = await qgreydRun(`qgreyd, ${fmtCount(count)} stored, 20% stored triplets`, live, [], ['--stored', '0.2', '--stored-count', String(count)]);
    say(`bench: qgreyd ${count} stored, stored share ${mixed.r.rps} req/s`);
    notes.push(`with ${fmtCount(count)} stored, 20% stored triplets: ${mixed.note}`);
    if (!args.keep && bigDir === null) rmSync(live, { recursive: true, force: true });

    if (args.sweep) {
      const dead = join(work, 'dead');
      fillStore(dead, count, true);
      const ref = await qgreydRun(`qgreyd, ${fmtCount(count)} dead, no sweep`, dead);
      await sweepRun(dead, ref);
    }
  }

  const table = [
    '| run | req/s | of baseline | p50 ms | p99 ms | max ms | lost | peak RSS MB | CPU µs/req (main thread) | replies |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|',
    ...rows.map((x) => fmtRow(x, base.rps)),
  ];
  const cpu = cpus();
  const header = [
    `qgreyd bench: ${clients} clients, ${duration} s per run, seed ${seed}, mix ${mix.join(' ') || 'default (new 0.4, retry 0.3, hot 0.3)'}, load generator ${loadgen === '' ? 'Node' : 'C (bench/loadgen.c)'}, logs ${multilog ? 'through multilog t' : 'to a file'}`,
    `machine: ${cpu.length} x ${cpu[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(0)} GB, Linux ${release()}, Node ${process.version}; daemon flags ${DAEMON_FLAGS.join(' ')}`,
  ];
  process.stdout.write([...header, '', ...table, '', ...notes.map((n) => `- ${n}`), ''].join('\n'));
  if (!args.keep) rmSync(work, { recursive: true, force: true });
}

/** greydaemon on the same load, with the same whitelist; its save file starts empty. */
async function perlRun(round: number): Promise<Row> {
  const wl = join(work, 'whitelist');
  writeFileSync(wl, BENCH_WHITELIST);
  const save = join(work, `greydaemon-save-${round}`);
  writeFileSync(save, '');
  const perlPort = perlPortGiven ?? (await freePort());
  const argv = perlArgs
    .split(/\s+/)
    .filter(Boolean)
    .map((a) => a.replace('{whitelist}', wl).replace('{save}', save).replace('{port}', String(perlPort)));
  const sink = logSink(`greydaemon-${round}`);
  // its log lines go to stdout, its errors to stderr: both into the log, as under daemontools
  const proc = spawn('perl', [perl!, ...argv], { stdio: ['ignore', sink.stdio, sink.stdio] });
  sink.spawned();
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  const stop = async (): Promise<void> => {
    proc.kill('SIGTERM');
    await exited;
    await sink.done;
  };
  const d: Running = { proc, port: perlPort, logFile: sink.logFile, spawnedAt: Date.now(), stop };
  // an answer while it has exited (it could not bind) came from someone else's daemon
  if ((await firstReply(d)) === null || proc.exitCode !== null || proc.signalCode !== null) {
    throw new Error(`greydaemon did not answer on port ${perlPort}; its output is in ${sink.logFile}`);
  }
  const meter = cpuMeter(proc.pid!);
  const r = await runLoad(perlPort);
  const cpu = meter(r.requests);
  const hwm = peakRss(proc.pid!).hwmMb;
  await d.stop();
  const row: Row = { name: `greydaemon (round ${round})`, r, rss: hwm, cpu };
  rows.push(row);
  say(`bench: greydaemon ${r.rps} req/s`);
  return row;
}

function fmtCount(n: number): string {
  return n >= 1e6 ? `${n / 1e6}M` : n >= 1e3 ? `${n / 1e3}k` : String(n);
}

/** The sweep runs every -s minutes; 0.05 fires it 3 s after start, under load. The load stops
 *  2 s after the first sweep (the one over the dead records) has ended. */
async function sweepRun(dir: string, ref: Row): Promise<void> {
  const d = await startQgreyd(dir, ['-s', '0.05'], args.profile ? join(work, 'profile') : undefined);
  if ((await firstReply(d)) === null) throw new Error('qgreyd did not answer');
  const trace = join(work, 'sweep.trace');
  let lg: ChildProcess | null = null;
  const load = runLoad(d.port, ['--duration', '600', '--trace', trace], (p) => (lg = p));
  const sw = await waitForLog(d.logFile, /^sweep scanned=\d+ deleted=[1-9]/, 300_000);
  await new Promise((r) => setTimeout(r, 2000));
  (lg as ChildProcess | null)?.kill('SIGINT');
  const r = await load;
  const hwm = peakRss(d.proc.pid!).hwmMb;
  await d.stop();
  if (sw === null) {
    notes.push('sweep: did not finish within 300 s');
    return;
  }
  const m = /scanned=(\d+) deleted=(\d+) .*ms=(\d+)$/.exec(sw.line)!;
  const sweepMs = Number(m[3]);
  const endRel = sw.at - r.start_ms;
  const startRel = endRel - sweepMs;
  const buf = readFileSync(trace);
  const words = new Uint32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const inside: number[] = [];
  const outside: number[] = [];
  for (let i = 0; i < words.length; i += 2) {
    const tMs = words[i] / 1000;
    (tMs >= startRel && tMs <= endRel ? inside : outside).push(words[i + 1]);
  }
  const p99 = (a: number[]) => (a.length === 0 ? NaN : a.sort((x, y) => x - y)[Math.floor(a.length * 0.99)] / 1000);
  rows.push({ name: `qgreyd, sweep of ${fmtCount(count)} dead (until the sweep ends)`, r, rss: hwm });
  notes.push(
    `sweep: scanned ${Number(m[1]).toLocaleString('en-US')}, deleted ${Number(m[2]).toLocaleString('en-US')} in ${(sweepMs / 1000).toFixed(1)} s under load; ` +
      `p99 while it ran ${p99(inside).toFixed(2)} ms (${inside.length} requests, ${((inside.length / sweepMs) * 1000).toFixed(0)} req/s), ` +
      `p99 outside it ${p99(outside).toFixed(2)} ms, p99 without sweep (same store) ${(ref.r.p99_us / 1000).toFixed(2)} ms: ` +
      `+${(p99(inside) - ref.r.p99_us / 1000).toFixed(2)} ms`,
  );
}

main().catch((e: unknown) => {
  say(`bench: ${(e as Error).stack ?? String(e)}`);
  process.exit(111);
});

