// Hostile input: tens of thousands of random and mutated datagrams against the real daemon.
// Every datagram is classified by an independent reading of PROTOCOL.md (fuzz-oracle.ts) into
// "well-formed" (it must get a reply and may create triplets) and "malformed" (no reply, no
// state), and the daemon's own decoder and rules must agree datagram by datagram (so a
// disagreement names the datagram). The oracle's record set follows the well-formed ones;
// after each batch a probe from a separate address range must get the reply it predicts, and
// at the end the store must hold exactly its records. Seeded: QGREYD_FUZZ_SEED replays a run.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { decide, settingsFrom, type RecordView } from '../../src/policy.js';
import { decodeRequest, encodeRequest, replyText } from '../../src/protocol.js';
import { IP_PREFIX, Store, TRIPLET_PREFIX } from '../../src/store/leveldb.js';
import { generate } from '../fuzz-gen.js';
import { Oracle } from '../fuzz-oracle.js';
import { Prng, seedFrom } from '../prng.js';
import { removeDir, sendRaw, startDaemon, tempDir } from '../helpers.js';

const SEED = seedFrom('QGREYD_FUZZ_SEED');
const CASES = Number(process.env.QGREYD_FUZZ_CASES ?? 50_000);
/** a probe after at most this many datagrams or bytes, which also keeps the daemon's socket
 *  buffer from overflowing (a kernel drop would make a well-formed datagram vanish) */
const BATCH_COUNT = 48;
const BATCH_BYTES = 64 * 1024;

// the daemon's settings: no retry can pass (min-resend 10 h), so no IP ever becomes known
// good and a bad tail is always malformed
const SETTINGS = settingsFrom(7, 24, 600);
const MODEL_NOW = 1_000_000;

class Model {
  readonly triplets = new Map<string, number>();
  private view: RecordView = {
    lastGood: () => undefined,
    firstSeen: (k) => this.triplets.get(k),
  };

  /** The reply the daemon must give ("0001"), or null for a datagram it must ignore. */
  apply(buf: Buffer): string | null {
    const d = decodeRequest(buf);
    if (!d.ok) return null;
    const out = decide(d.request, false, this.view, MODEL_NOW, SETTINGS);
    if ('malformed' in out) return null;
    assert.equal(out.knownGood, undefined, 'the fuzz settings must never make an IP known good');
    for (const [k, t] of out.triplets) this.triplets.set(k, t);
    return replyText(out.verdict).replace(':', '');
  }
}

/** The kernel's count of datagrams dropped for the daemon's socket (receive buffer full). */
function udpDrops(port: number): number | null {
  try {
    const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
    for (const line of readFileSync('/proc/net/udp', 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 12 && f[1].endsWith(':' + hexPort)) return Number(f[f.length - 1]);
    }
  } catch {
    // not Linux: the count of replies still catches a drop
  }
  return null;
}

test(`fuzz: ${CASES} hostile datagrams (seed ${SEED}; replay with QGREYD_FUZZ_SEED=${SEED})`, { timeout: 120_000 }, async (t) => {
  t.diagnostic(`seed=${SEED} cases=${CASES}`);
  const r = new Prng(SEED);
  const dir = tempDir();
  const model = new Model();
  const oracle = new Oracle();
  /** the expected reply: the oracle's, once the daemon's own rules agree on it */
  const expect = (msg: Buffer): string | null => {
    const want = oracle.apply(msg);
    const own = model.apply(msg);
    assert.equal(own, want, fail(`decodeRequest+decide and PROTOCOL.md disagree on datagram ${msg.subarray(0, 200).toString('hex')}${msg.length > 200 ? '...' : ''} (${msg.length} bytes)`));
    return want;
  };
  const d = await startDaemon(['-m', '600', '-g', '24', '127.0.0.1:0', join(dir, 'state')]);
  const fuzzSock = dgram.createSocket('udp4');
  let replies = 0;
  let replyErrors = 0;
  fuzzSock.on('message', (m) => {
    replies++;
    if (m.length !== 2) replyErrors++;
  });
  await new Promise<void>((res) => fuzzSock.bind(0, '127.0.0.1', () => res()));
  let wellFormed = 0;
  let malformed = 0;
  let probes = 0;
  let bytesSent = 0;
  const probeKeys: string[] = [];
  const fail = (msg: string) => `${msg} (seed ${SEED}: replay with QGREYD_FUZZ_SEED=${SEED})`;

  const probe = async () => {
    // alternately a new triplet and a retry of the previous one, from 198.18.0.0/15
    const retry = probes % 2 === 1;
    const n = retry ? probes - 1 : probes;
    const ip = `198.18.${(n >> 8) & 255}.${n & 255}`;
    const msg = encodeRequest(ip, 'probe@p.example', [`rcpt${n}@p.example`]);
    const expected = expect(msg);
    assert.equal(expected, retry ? '0002' : '0001', fail('the model disagrees with the probe design'));
    // 5 s: qmail-smtpd gives up after about 3 s; the slack is for a busy test machine
    const got = await sendRaw(d.port, msg, '127.0.0.1', 5000);
    assert.equal(d.proc.exitCode, null, fail(`the daemon died after ${wellFormed + malformed} datagrams: ${d.stderr()}`));
    assert.equal(got, expected, fail(`probe ${probes} (${ip}) after ${wellFormed + malformed} datagrams; daemon log tail:\n${d.lines.slice(-8).join("\n")}\nstderr: ${d.stderr()}`));
    probeKeys.push(ip);
    probes++;
  };

  try {
    let batchCount = 0;
    let batchBytes = 0;
    for (let i = 0; i < CASES; i++) {
      const msg = generate(r);
      if (batchCount >= BATCH_COUNT || (batchCount > 0 && batchBytes + msg.length > BATCH_BYTES)) {
        await probe();
        batchCount = 0;
        batchBytes = 0;
      }
      if (expect(msg) === null) malformed++;
      else wellFormed++;
      fuzzSock.send(msg, d.port, '127.0.0.1');
      batchCount++;
      batchBytes += msg.length;
      bytesSent += msg.length;
    }
    await probe();
    // the last probe's reply left after every earlier datagram's reply
    await new Promise((res) => setTimeout(res, 100));
    const drops = udpDrops(d.port);
    assert.ok(drops === null || drops === 0, fail(`the kernel dropped ${drops} datagrams for the daemon: the test paced too fast, its accounting is void`));
    assert.equal(replyErrors, 0, fail('a reply was not two bytes'));
    assert.equal(replies, wellFormed, fail(`well-formed datagrams ${wellFormed}, replies ${replies}: a malformed datagram was answered or a well-formed one was not`));

    assert.equal(await d.stop(), 0, fail('the daemon did not stop cleanly'));
    const stopped = await d.waitForLine(/^stopped /);
    assert.match(stopped, new RegExp(`received=${CASES + probes} `), fail('received count'));
    assert.match(stopped, new RegExp(`malformed=${malformed} `), fail('malformed count'));
    assert.match(stopped, / store-errors=0 /, fail('store errors'));

    // the store holds exactly what the well-formed datagrams should have created
    const store = await Store.open(join(dir, 'state'));
    try {
      const stored = new Set<string>();
      for await (const chunk of store.scan(TRIPLET_PREFIX)) for (const rec of chunk) stored.add(rec.key.slice(TRIPLET_PREFIX.length));
      let ips = 0;
      for await (const chunk of store.scan(IP_PREFIX)) ips += chunk.length;
      assert.equal(ips, 0, fail('no IP may have become known good'));
      const unexpected = [...stored].filter((k) => !oracle.triplets.has(k));
      const missing = [...oracle.triplets].filter((k) => !stored.has(k));
      assert.deepEqual(unexpected.slice(0, 5), [], fail(`${unexpected.length} stored triplets no well-formed datagram made`));
      assert.deepEqual(missing.slice(0, 5), [], fail(`${missing.length} triplets of well-formed datagrams are missing`));
      assert.equal(stored.size, oracle.triplets.size);
    } finally {
      await store.close();
    }
    t.diagnostic(`fuzz seed=${SEED} datagrams=${CASES} malformed=${malformed} well-formed=${wellFormed} probes=${probes} bytes=${bytesSent} triplets=${oracle.triplets.size}`);
  } finally {
    fuzzSock.close();
    await d.stop('SIGKILL');
    removeDir(dir);
  }
});
