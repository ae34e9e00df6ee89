// The Redis backend's cost, as ratios measured in one run on one machine:
//   one qgreyd on LevelDB; one qgreyd on Redis; two qgreyd sharing that Redis, each driven by
//   its own load generator with half the clients (two MX servers).
//
//   node dist/bench/redis.js [--duration 8] [--clients 32] [--seed 1] [--node-loadgen]
//
// redis-server (Debian's) is started here on a free loopback port, without persistence, and
// stopped at the end. The two generators of the shared run use different seeds (different
// senders), as two MX servers mostly see different mail.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import minimist from 'minimist';
import { BENCH_WHITELIST } from './workload.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DIST = join(ROOT, 'dist');
const QGREYD = join(DIST, 'src', 'cli', 'qgreyd.js');
const args = minimist(process.argv.slice(2), { boolean: ['node-loadgen'] });
const duration = Number(args.duration ?? 8);
const clients = Number(args.clients ?? 32);
const seed = Number(args.seed ?? 1);
const DAEMON_FLAGS = ['-m', '0.05'];
const work = mkdtempSync(join(tmpdir(), 'qgreyd-bench-redis-'));
const say = (s: string) => process.stderr.write(s + '\n');

interface LoadResult {
  requests: number;
  rps: number;
  p50_us: number;
  p99_us: number;
  lost: number;
  codes: Record<string, number>;
}

function loadgenPath(): string {
  if (args['node-loadgen']) return '';
  const out = join(DIST, 'bench', 'loadgen');
  const r = spawnSync(process.env.CC ?? 'cc', ['-O2', '-Wall', '-o', out, join(ROOT, 'bench', 'loadgen.c')], { stdio: 'inherit' });
  if (r.status !== 0) {
    say('bench: cannot build bench/loadgen.c; install a C compiler, or run with --node-loadgen');
    process.exit(111);
  }
  return out;
}
const loadgen = loadgenPath();

function runLoad(port: number, n: number, s: number): Promise<LoadResult> {
  const common = ['--port', String(port), '--clients', String(n), '--duration', String(duration), '--seed', String(s), '--hot-ips', '1000'];
  const p = loadgen === '' ? spawn(process.execPath, [join(DIST, 'bench', 'loadgen.js'), ...common]) : spawn(loadgen, common);
  let out = '';
  let err = '';
  p.stdout.on('data', (c: Buffer) => (out += c.toString()));
  p.stderr.on('data', (c: Buffer) => (err += c.toString()));
  return new Promise((res, rej) => p.on('exit', (code) => (code === 0 ? res(JSON.parse(out) as LoadResult) : rej(new Error(`load generator exited ${code}: ${err}`)))));
}

function freeUdpPort(): Promise<number> {
  return new Promise((res) => {
    const s = dgram.createSocket('udp4');
    s.bind(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => res(p));
    });
  });
}

function freeTcpPort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const p = typeof a === 'object' && a !== null ? a.port : 0;
      s.close(() => res(p));
    });
  });
}

async function startQgreyd(name: string, extra: string[]): Promise<{ port: number; stop: () => Promise<void> }> {
  const port = await freeUdpPort();
  const wl = join(work, 'whitelist');
  writeFileSync(wl, BENCH_WHITELIST);
  const fd = openSync(join(work, `${name}.log`), 'w');
  const proc = spawn(process.execPath, [QGREYD, ...DAEMON_FLAGS, ...extra, '-w', wl, `127.0.0.1:${port}`, join(work, name)], { stdio: ['ignore', fd, 'inherit'] });
  closeSync(fd);
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  // ready when it answers
  await new Promise<void>((res) => {
    const s = dgram.createSocket('udp4');
    const probe = Buffer.from('I127.0.0.1\0F\0\0');
    const t = setInterval(() => s.send(probe, port, '127.0.0.1'), 20);
    s.on('message', () => {
      clearInterval(t);
      s.close();
      res();
    });
  });
  return {
    port,
    stop: async () => {
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

async function startRedis(): Promise<{ url: string; port: number; stop: () => void }> {
  const port = await freeTcpPort();
  const proc: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', work], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    if (spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG') break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `redis://127.0.0.1:${port}`, port, stop: () => void proc.kill('SIGTERM') };
}

interface Row {
  name: string;
  rps: number;
  p50: number;
  p99: number;
  lost: number;
  notDecided: number;
}

function row(name: string, rs: LoadResult[]): Row {
  const requests = rs.reduce((a, r) => a + r.requests, 0);
  return {
    name,
    rps: rs.reduce((a, r) => a + r.rps, 0),
    p50: Math.max(...rs.map((r) => r.p50_us)) / 1000,
    p99: Math.max(...rs.map((r) => r.p99_us)) / 1000,
    lost: rs.reduce((a, r) => a + r.lost, 0),
    notDecided: requests === 0 ? 0 : rs.reduce((a, r) => a + (r.codes['0105'] ?? 0), 0) / requests,
  };
}

async function main(): Promise<void> {
  say(`bench: ${clients} clients, ${duration} s per run, work dir ${work}`);
  const rows: Row[] = [];

  const level = await startQgreyd('leveldb', []);
  rows.push(row('one qgreyd, LevelDB', [await runLoad(level.port, clients, seed)]));
  await level.stop();
  say(`bench: ${rows[0].name} ${rows[0].rps} req/s`);

  const redis = await startRedis();
  try {
    const one = await startQgreyd('redis-one', ['--store', redis.url]);
    rows.push(row('one qgreyd, Redis', [await runLoad(one.port, clients, seed)]));
    await one.stop();
    say(`bench: ${rows[1].name} ${rows[1].rps} req/s`);
    spawnSync('redis-cli', ['-p', String(redis.port), 'flushall']);

    const a = await startQgreyd('redis-a', ['--store', redis.url]);
    const b = await startQgreyd('redis-b', ['--store', redis.url]);
    const half = Math.max(1, Math.floor(clients / 2));
    rows.push(row('two qgreyd sharing Redis (sum)', await Promise.all([runLoad(a.port, half, seed), runLoad(b.port, half, seed + 1)])));
    await a.stop();
    await b.stop();
    say(`bench: ${rows[2].name} ${rows[2].rps} req/s`);
  } finally {
    redis.stop();
  }

  const base = rows[0].rps;
  const cpu = cpus();
  process.stdout.write(
    [
      `qgreyd Redis bench: ${clients} clients in all, ${duration} s per run, seed ${seed}, load generator ${loadgen === '' ? 'Node' : 'C'}; daemon flags ${DAEMON_FLAGS.join(' ')}`,
      `machine: ${cpu.length} x ${cpu[0]?.model ?? '?'}, Linux ${release()}, Node ${process.version}, ${spawnSync('redis-server', ['--version'], { encoding: 'utf8' }).stdout.trim().split(' ').slice(0, 3).join(' ')}`,
      '',
      '| run | req/s | of LevelDB | p50 ms | p99 ms | lost | 01 05 |',
      '|---|---:|---:|---:|---:|---:|---:|',
      ...rows.map((r) => `| ${r.name} | ${Math.round(r.rps).toLocaleString('en-US')} | ${(r.rps / base).toFixed(2)}x | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.lost} | ${(100 * r.notDecided).toFixed(1)}% |`),
      '',
    ].join('\n'),
  );
  rmSync(work, { recursive: true, force: true });
}

void main();
