// The load generator in Node, with the workload and output of bench/loadgen.c. It exists to
// show why the bench drives load from C: on 2 cores a Node generator needs about as much CPU
// per request as the server it measures (run `npm run bench -- --node-loadgen` to compare).
//
//   node dist/bench/loadgen.js --port P [--clients 32] [--duration 10] [--warmup 1] [--seed 1]
//        [--new 0.4] [--retry 0.3] [--hot 0.3] [--stored 0] [--stored-count N] [--hot-ips 1000]
//        [--timeout-ms 1000]
import dgram from 'node:dgram';
import minimist from 'minimist';
import { encodeRequest } from '../src/protocol.js';
import { hotIp, tripletFor } from './workload.js';

const a = minimist(process.argv.slice(2));
const num = (k: string, d: number) => (a[k] === undefined ? d : Number(a[k]));
const port = num('port', 0);
const host = String(a.host ?? '127.0.0.1');
const nClients = num('clients', 32);
const duration = num('duration', 10);
const warmup = num('warmup', 1);
const timeoutMs = num('timeout-ms', 1000);
const hotIps = num('hot-ips', 1000);
const storedCount = num('stored-count', 0);
let shares = [num('new', 0.4), num('retry', 0.3), num('hot', 0.3), num('stored', 0)];
const total = shares.reduce((x, y) => x + y, 0);
shares = shares.map((s) => s / total);
if (!(port > 0) || (shares[3] > 0 && storedCount === 0)) {
  process.stderr.write('usage: loadgen --port P [...] (--stored needs --stored-count)\n');
  process.exit(100);
}

let seed = BigInt(num('seed', 1)) * 0x9e3779b97f4a7c15n + 1n;
const M = (1n << 64n) - 1n;
function rnd(): number {
  // xorshift64*, as in loadgen.c (the streams differ: only the shape of the workload matters)
  seed ^= seed >> 12n;
  seed = (seed ^ (seed << 25n)) & M;
  seed ^= seed >> 27n;
  return Number(((seed * 2685821657736338717n) & M) >> 32n);
}
const rnd01 = () => rnd() / 2 ** 32;

const RING = 65536;
const ring: Buffer[] = [];
let ringNext = 0;
function newRequest(): Buffer {
  const ip = `${11 + (rnd() % 89)}.${rnd() % 256}.${rnd() % 256}.${1 + (rnd() % 254)}`;
  const dom = rnd() % 200;
  const rcpts = Array.from({ length: 1 + (rnd() % 3) }, () => `r${rnd() % 100000}@d${dom}.example`);
  const b = encodeRequest(ip, `u${rnd() % 1000000}@s${rnd() % 5000}.example`, rcpts);
  ring[ringNext] = b;
  ringNext = (ringNext + 1) % RING;
  return b;
}
function nextRequest(): [number, Buffer] {
  const x = rnd01();
  if (x < shares[0] || (x < shares[0] + shares[1] && ring.length === 0)) return [0, newRequest()];
  if (x < shares[0] + shares[1]) return [1, ring[rnd() % ring.length]];
  if (x < shares[0] + shares[1] + shares[2]) {
    return [2, encodeRequest(hotIp(rnd() % hotIps), `u${rnd() % 1000000}@s${rnd() % 5000}.example`, [`r${rnd() % 100000}@d${rnd() % 200}.example`])];
  }
  const t = tripletFor(rnd() % storedCount);
  return [3, encodeRequest(t.ip, t.sender, [t.rcpt])];
}

const HIST = 1_000_000;
const hist = new Uint32Array(HIST + 1);
const codes = new Map<string, number>();
const kinds = [0, 0, 0, 0];
let done = 0, lost = 0, maxUs = 0, inFlight = 0;
const t0 = performance.now();
let tMeasure = t0 + warmup * 1000;
const tEnd = tMeasure + duration * 1000;
const startMs = Date.now() + warmup * 1000;
let stopping = false;

interface Client { sock: dgram.Socket; sentAt: number; timer: NodeJS.Timeout | null }
const clients: Client[] = [];

function open(c: Client): void {
  c.sock = dgram.createSocket('udp4');
  c.sock.on('message', (msg) => {
    if (c.timer === null) return;
    clearTimeout(c.timer);
    c.timer = null;
    inFlight--;
    const t = performance.now();
    if (t >= tMeasure && c.sentAt >= tMeasure) {
      const us = Math.round((t - c.sentAt) * 1000);
      done++;
      hist[Math.min(us, HIST)]++;
      if (us > maxUs) maxUs = us;
      const code = msg.toString('hex');
      codes.set(code, (codes.get(code) ?? 0) + 1);
    }
    next(c);
  });
  c.sock.on('error', () => undefined);
}

function next(c: Client): void {
  const t = performance.now();
  if (t >= tEnd) stopping = true;
  if (stopping) {
    if (inFlight === 0) finish();
    return;
  }
  const [kind, buf] = nextRequest();
  if (t >= tMeasure) kinds[kind]++;
  c.sentAt = t;
  inFlight++;
  c.timer = setTimeout(() => {
    c.timer = null;
    inFlight--;
    if (c.sentAt >= tMeasure) lost++;
    c.sock.close();
    open(c);
    next(c);
  }, timeoutMs);
  c.sock.send(buf, port, host);
}

let finished = false;
function finish(): void {
  if (finished) return;
  finished = true;
  const secs = (tEnd - tMeasure) / 1000;
  const pct = (p: number) => {
    let acc = 0;
    for (let us = 0; us <= HIST; us++) {
      acc += hist[us];
      if (acc >= done * p) return us;
    }
    return HIST;
  };
  const out = {
    generator: 'node', clients: nClients, seconds: secs, requests: done, rps: Math.round(done / secs),
    p50_us: pct(0.5), p99_us: pct(0.99), p999_us: pct(0.999), max_us: maxUs, lost, bad_replies: 0, send_errors: 0,
    start_ms: startMs, kinds: { new: kinds[0], retry: kinds[1], hot: kinds[2], stored: kinds[3] },
    codes: Object.fromEntries([...codes].sort()),
  };
  process.stdout.write(JSON.stringify(out) + '\n');
  for (const c of clients) c.sock.close();
}

setTimeout(() => { tMeasure = performance.now(); }, warmup * 1000);
for (let i = 0; i < nClients; i++) {
  const c: Client = { sock: null as unknown as dgram.Socket, sentAt: 0, timer: null };
  clients.push(c);
  open(c);
  next(c);
}
