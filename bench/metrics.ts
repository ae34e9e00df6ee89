// What --metrics costs the request path: qgreyd without and with --metrics (scraped once a
// second, as Prometheus would, more often than its usual 15 s), driven by the same C load
// generator and workload, alternating in the same run so that the machine's noise falls on
// both alike. Each round gives a with/without ratio of throughput and p99 latency; the
// median ratio is the figure.
//
//   node dist/bench/metrics.js [--rounds 3] [--duration 5] [--clients 32] [--seed 1] [--no-scrape]
//
// Under a minute with the defaults (3 rounds of two 5 s runs, plus start-up).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import minimist from 'minimist';
import { Metrics } from '../src/metrics.js';
import { encodeRequest } from '../src/protocol.js';
import { BENCH_WHITELIST } from './workload.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DIST = join(ROOT, 'dist');
const QGREYD = join(DIST, 'src', 'cli', 'qgreyd.js');
const args = minimist(process.argv.slice(2), { boolean: ['scrape'], default: { scrape: true } });
const rounds = Number(args.rounds ?? 3);
const duration = Number(args.duration ?? 5);
const clients = Number(args.clients ?? 32);
const seed = Number(args.seed ?? 1);
const say = (s: string) => process.stderr.write(s + '\n');

const loadgen = join(DIST, 'bench', 'loadgen');
const cc = spawnSync(process.env.CC ?? 'cc', ['-O2', '-Wall', '-o', loadgen, join(ROOT, 'bench', 'loadgen.c')], { stdio: 'inherit' });
if (cc.status !== 0) {
  say('bench: cannot build bench/loadgen.c; install a C compiler');
  process.exit(111);
}

interface Load {
  requests: number;
  /** the daemon's CPU time (user + system) per request, µs: steadier than req/s on a shared
   *  machine, where another process's load moves throughput but not the work per request */
  cpu_us?: number;
  rps: number;
  p50_us: number;
  p99_us: number;
  lost: number;
}

const work = mkdtempSync(join(tmpdir(), 'qgreyd-bench-metrics-'));
const wl = join(work, 'whitelist');
writeFileSync(wl, BENCH_WHITELIST);

function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = dgram.createSocket('udp4');
    s.bind(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => res(p));
    });
  });
}

async function firstReply(port: number): Promise<void> {
  const s = dgram.createSocket('udp4');
  const msg = encodeRequest('198.18.0.1', 'first@reply.example', ['probe@bench.example']);
  await new Promise<void>((res, rej) => {
    const timer = setInterval(() => s.send(msg, port, '127.0.0.1'), 5);
    const give = setTimeout(() => rej(new Error('qgreyd did not answer')), 10_000);
    s.on('message', () => {
      clearInterval(timer);
      clearTimeout(give);
      s.close();
      res();
    });
  });
}

async function one(withMetrics: boolean, n: number): Promise<Load> {
  const port = await freePort();
  const metricsPort = withMetrics ? await freePort() : 0;
  const logFile = join(work, `log-${n}-${withMetrics}`);
  const fd = openSync(logFile, 'w');
  const extra = withMetrics ? ['--metrics', String(metricsPort)] : [];
  const proc: ChildProcess = spawn(process.execPath, [QGREYD, '-m', '0.05', ...extra, '-w', wl, `127.0.0.1:${port}`, join(work, `state-${n}-${withMetrics}`)], {
    stdio: ['ignore', fd, 'inherit'],
  });
  closeSync(fd);
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  await firstReply(port);
  let scrapes = 0;
  const scraper = withMetrics && args.scrape
    ? setInterval(() => {
        void fetch(`http://127.0.0.1:${metricsPort}/metrics`).then(async (r) => {
          await r.text();
          scrapes++;
        });
      }, 1000)
    : undefined;
  const lg = spawn(loadgen, ['--port', String(port), '--clients', String(clients), '--duration', String(duration), '--seed', String(seed)]);
  let out = '';
  lg.stdout.on('data', (c: Buffer) => (out += c.toString()));
  await new Promise<void>((r) => lg.on('exit', () => r()));
  clearInterval(scraper);
  const cpuMs = cpuMsOf(proc.pid!);
  proc.kill('SIGTERM');
  await exited;
  if (withMetrics && args.scrape && scrapes === 0) throw new Error('no scrape answered');
  if (withMetrics && !readFileSync(logFile, 'latin1').includes('metrics listen=')) throw new Error('--metrics did not start');
  const load = JSON.parse(out) as Load;
  // the start-up's CPU is included: small against a run of tens of thousands of requests
  load.cpu_us = (cpuMs * 1000) / load.requests;
  return load;
}

/** The hook alone, in this process: what one reply pays (a bound counter child and a
 *  histogram observation), without the machine noise of the end-to-end runs. */
function hookCost(): number {
  const m = new Metrics({
    inFlight: () => 0,
    refused: () => 0,
    overload: () => 0,
    malformed: () => 0,
    storeHealthy: () => true,
    storeRecords: () => null,
    lastSweep: () => null,
    whitelistHits: () => [],
  });
  const reasons = ['new', 'too-soon', 'passed', 'known-good', 'whitelisted'];
  const n = 2_000_000;
  for (let i = 0; i < 100_000; i++) m.reply('00:01', reasons[i % 5], 0.001);
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) m.reply('00:01', reasons[i % 5], (i % 100) / 10_000);
  return Number(process.hrtime.bigint() - t) / n;
}

function cpuMsOf(pid: number): number {
  // fields 14 and 15 of /proc/PID/stat: user and system time, in clock ticks (100 per second)
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

/** The daemon's CPU per scrape, on an idle daemon: what a scrape interval costs. */
async function scrapeCost(n = 500): Promise<number> {
  const port = await freePort();
  const metricsPort = await freePort();
  const proc = spawn(process.execPath, [QGREYD, '--metrics', String(metricsPort), '-w', wl, `127.0.0.1:${port}`, join(work, 'state-scrape')], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  await firstReply(port);
  const url = `http://127.0.0.1:${metricsPort}/metrics`;
  for (let i = 0; i < 50; i++) await (await fetch(url)).text();
  const c0 = cpuMsOf(proc.pid!);
  for (let i = 0; i < n; i++) await (await fetch(url)).text();
  const ms = (cpuMsOf(proc.pid!) - c0) / n;
  proc.kill('SIGTERM');
  await exited;
  return ms;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rps: number[] = [];
const p99: number[] = [];
const cpu: number[] = [];
try {
  const ns = hookCost();
  say(`bench/metrics: metrics.reply() alone: ${ns.toFixed(0)} ns per reply`);
  const scrapeMs = await scrapeCost();
  say(`bench/metrics: one scrape costs the daemon ${scrapeMs.toFixed(2)} ms of CPU`);
  say(`bench/metrics: ${rounds} rounds of ${duration} s without and with --metrics, ${clients} clients, ${cpus().length} CPUs`);
  for (let i = 0; i < rounds; i++) {
    // alternate which goes first: a machine that slows down during the run favours neither
    const order = i % 2 === 0 ? [false, true] : [true, false];
    const r: Record<string, Load> = {};
    for (const m of order) r[String(m)] = await one(m, i);
    const off = r.false;
    const on = r.true;
    rps.push(on.rps / off.rps);
    p99.push(on.p99_us / off.p99_us);
    cpu.push(on.cpu_us! / off.cpu_us!);
    say(
      `round ${i + 1}: without ${Math.round(off.rps)} req/s p99 ${off.p99_us} us cpu ${off.cpu_us!.toFixed(1)} us/req lost ${off.lost}; ` +
        `with ${Math.round(on.rps)} req/s p99 ${on.p99_us} us cpu ${on.cpu_us!.toFixed(1)} us/req lost ${on.lost}; ` +
        `ratio rps ${(on.rps / off.rps).toFixed(3)} p99 ${(on.p99_us / off.p99_us).toFixed(3)} cpu ${(on.cpu_us! / off.cpu_us!).toFixed(3)}`,
    );
  }
  process.stdout.write(JSON.stringify({ hook_ns_per_reply: Math.round(ns), scrape_cpu_ms: scrapeMs, rounds, duration, clients, rps_ratio_median: median(rps), p99_ratio_median: median(p99), cpu_ratio_median: median(cpu), rps_ratios: rps, p99_ratios: p99, cpu_ratios: cpu }) + '\n');
} finally {
  rmSync(work, { recursive: true, force: true });
}
