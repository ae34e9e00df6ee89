// The cost of the worst-case request, and what a flood of them does to another client.
// A measurement, not a test (about 40 s):
//   node dist/bench/worst-case.js [flood-seconds=15] [-- daemon flags]
// 1. cost, one request at a time: 3-recipient requests; 64 KB requests as IndiMail sends a big
//    mailing (~3,600 recipients); the worst well-formed request (a 512-byte sender and as many
//    distinct two-byte recipients as the 2 MiB bound allows): reply latency, bytes the store
//    grew by, RSS; and the decode of a 64 KB datagram of that shape, which is refused;
// 2. fairness: one source (127.0.0.2) sends worst-case requests in a loop with 4 outstanding,
//    while another (127.0.0.1) sends a 1-recipient probe every 50 ms: the probes' latency,
//    against the same probes on an idle daemon.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { decodeRequest, encodeRequest, MAX_DATAGRAM } from '../src/protocol.js';
import { removeDir, startDaemon, tempDir } from '../test/helpers.js';
import { UdpPool } from '../test/udp-pool.js';
import { worstCaseRequest } from '../test/worst-case.js';

const dash = process.argv.indexOf('--');
const pos = (dash < 0 ? process.argv.slice(2) : process.argv.slice(2, dash)).map(Number);
const flags = dash < 0 ? [] : process.argv.slice(dash + 1);
const floodSeconds = pos[0] || 15;

const dir = tempDir('qgreyd-bench-');
const state = join(dir, 'state');
const d = await startDaemon(['-m', '600', ...flags, '127.0.0.1:0', state]);
const rssMb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${d.proc.pid}/status`, 'utf8'))![1]) / 1024;
const hwmMb = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${d.proc.pid}/status`, 'utf8'))![1]) / 1024;
const diskMb = () => readdirSync(state).reduce((n, f) => n + statSync(join(state, f)).size, 0) / 1048576;
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const summary = (xs: number[]) =>
  `n=${xs.length} median ${pct(xs, 50).toFixed(1)} ms, p99 ${pct(xs, 99).toFixed(1)} ms, max ${Math.max(...xs).toFixed(1)} ms`;

async function timed(pool: UdpPool, msg: Buffer): Promise<number> {
  const t = performance.now();
  const reply = await pool.request(msg);
  if (reply === null) throw new Error('no reply');
  return performance.now() - t;
}

try {
  const one = await UdpPool.open(d.port, 1, { timeoutMs: 30_000, bindAddress: '127.0.0.1' });
  console.log(`flags: -m 600 ${flags.join(' ')}; RSS at start ${rssMb().toFixed(0)} MB`);

  // 1. cost of one request
  const small: number[] = [];
  for (let i = 0; i < 200; i++) small.push(await timed(one, encodeRequest(`192.0.2.${i % 250}`, `s${i}@x.example`, ['a@y.example', 'b@y.example', 'c@y.example'])));
  // a 64 KB mailing: as many 17-byte recipients as fit
  const mailing = (i: number) => {
    const rc: string[] = [];
    for (let k = 0; encodeRequest('192.0.2.150', `list${i}@x.example`, rc).length + 19 <= MAX_DATAGRAM; k++) rc.push(`u${String(k).padStart(5, '0')}@y.example`);
    return encodeRequest('192.0.2.150', `list${i}@x.example`, rc);
  };
  const full: number[] = [];
  for (let i = 0; i < 20; i++) full.push(await timed(one, mailing(i)));
  let disk = diskMb();
  const sample = worstCaseRequest('192.0.2.200', 'w0');
  const big: number[] = [];
  const N = 20;
  for (let i = 0; i < N; i++) big.push(await timed(one, worstCaseRequest('192.0.2.200', `w${i}`)));
  const grew = diskMb() - disk;
  console.log(`3-recipient request (${encodeRequest('192.0.2.1', 's0@x.example', ['a@y.example', 'b@y.example', 'c@y.example']).length} bytes): ${summary(small)}`);
  const m0 = mailing(0);
  console.log(`64 KB mailing (${m0.length} bytes, ${m0.toString('latin1').split('\0').length - 4} recipients): ${summary(full)}`);
  const over = worstCaseRequest('192.0.2.200', 'o', true);
  const dec: number[] = [];
  for (let i = 0; i < 50; i++) {
    const t = performance.now();
    decodeRequest(over);
    dec.push(performance.now() - t);
  }
  console.log(`decoding a refused ${over.length}-byte datagram of the worst shape (in this process): ${summary(dec)}`);
  console.log(`worst-case request (${sample.length} bytes, ${sample.toString('latin1').split('\0').length - 3} recipients): ${summary(big)}`);
  console.log(`  store grew ${grew.toFixed(1)} MB for ${N} worst-case requests (${(grew / N).toFixed(2)} MB each, before compaction); RSS ${rssMb().toFixed(0)} MB, peak ${hwmMb().toFixed(0)} MB`);

  // 2. probes, idle and under a flood
  const probe = async (ms: number, tag: string) => {
    const lat: number[] = [];
    const end = performance.now() + ms;
    for (let i = 0; performance.now() < end; i++) {
      lat.push(await timed(one, encodeRequest('192.0.2.1', `${tag}${i}@x.example`, ['p@y.example'])));
      await new Promise((r) => setTimeout(r, 50));
    }
    return lat;
  };
  console.log(`probe, idle daemon: ${summary(await probe(3000, 'idle'))}`);
  const flooder = await UdpPool.open(d.port, 4, { timeoutMs: 60_000, bindAddress: '127.0.0.2' });
  let flooding = true;
  let sent = 0;
  disk = diskMb();
  const floods = Array.from({ length: 4 }, async (_, k) => {
    while (flooding) await flooder.request(worstCaseRequest('192.0.2.201', `f${k}-${sent++}`));
  });
  const underFlood = await probe(floodSeconds * 1000, 'flood');
  flooding = false;
  await Promise.all(floods);
  flooder.close();
  console.log(`probe, while 127.0.0.2 sends worst-case requests (4 outstanding; ${sent} sent in ${floodSeconds} s): ${summary(underFlood)}`);
  console.log(`  store grew ${(diskMb() - disk).toFixed(0)} MB; RSS ${rssMb().toFixed(0)} MB, peak ${hwmMb().toFixed(0)} MB`);
  one.close();
} finally {
  await d.stop();
  removeDir(dir);
}
