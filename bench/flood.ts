// Memory and disk under a flood of unique triplets, with the daemon's default settings (or
// the flags given after --): peak resident memory, and bytes on disk per record after a full
// compaction. A measurement, not a test:
//   node dist/bench/flood.js [triplets=500000] [recipients-per-request=10] [-- daemon flags]
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Level } from 'level';
import { encodeRequest } from '../src/protocol.js';
import { removeDir, startDaemon, tempDir } from '../test/helpers.js';
import { Prng } from '../test/prng.js';
import { UdpPool } from '../test/udp-pool.js';

const dash = process.argv.indexOf('--');
const pos = (dash < 0 ? process.argv.slice(2) : process.argv.slice(2, dash)).map(Number);
const flags = dash < 0 ? [] : process.argv.slice(dash + 1);
const triplets = pos[0] || 500_000;
const perRequest = pos[1] || 10;

const r = new Prng(1);
const word = (lo: number, hi: number) => {
  let s = '';
  for (let i = r.int(lo, hi); i > 0; i--) s += 'abcdefghijklmnopqrstuvwxyz0123456789'[r.int(0, 35)];
  return s;
};
const domains = Array.from({ length: 500 }, () => `${word(4, 12)}.example`);
const addr = () => `${word(3, 14)}@${r.pick(domains)}`;
const mb = (kb: number) => `${(kb / 1024).toFixed(0)} MB`;

const dir = tempDir('qgreyd-bench-');
const state = join(dir, 'state');
const d = await startDaemon([...flags, '127.0.0.1:0', state]);
const status = () => {
  const s = readFileSync(`/proc/${d.proc.pid}/status`, 'utf8');
  return { rss: Number(/VmRSS:\s+(\d+)/.exec(s)![1]), hwm: Number(/VmHWM:\s+(\d+)/.exec(s)![1]) };
};
console.log(`flags: ${flags.join(' ') || '(defaults)'}; RSS at start ${mb(status().rss)}`);
const pool = await UdpPool.open(d.port, 64, { timeoutMs: 10_000 });
const requests = Math.ceil(triplets / perRequest);
let next = 0;
const started = Date.now();
await Promise.all(
  Array.from({ length: 64 }, async () => {
    while (next < requests) {
      const i = next++;
      const ip = `${r.int(1, 223)}.${r.int(0, 255)}.${r.int(0, 255)}.${r.int(1, 254)}`;
      await pool.request(encodeRequest(ip, `${i}.${addr()}`, Array.from({ length: perRequest }, addr)));
      if (i > 0 && i % Math.ceil(requests / 5) === 0) console.log(`${i * perRequest} triplets: RSS ${mb(status().rss)}`);
    }
  }),
);
pool.close();
const end = status();
console.log(`${requests * perRequest} triplets in ${Date.now() - started} ms: RSS ${mb(end.rss)} at end, peak ${mb(end.hwm)}`);
await d.stop();
const db = new Level<string, Buffer>(state, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
await db.open();
await (db as unknown as { compactRange(a: string, b: string): Promise<void> }).compactRange('\x00', '\uffff');
await db.close();
let bytes = 0;
for (const f of readdirSync(state)) bytes += statSync(join(state, f)).size;
console.log(`disk after compaction: ${bytes} bytes, ${(bytes / (requests * perRequest)).toFixed(1)} bytes per record`);
removeDir(dir);
