// Both real qmail-smtpd families (test/qmail-client.ts) against the spawned daemon: what the
// SMTP client ends up with (accept, or 451 and a hang-up) for each situation PROTOCOL.md names.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { buildRequest, clientIpField, type Family, NETQMAIL_MAX_REQUEST, type Outcome, parseGreyip, QmailSmtpd } from '../qmail-client.js';
import { type Daemon, tracked } from '../helpers.js';
import { fill, mountTmpfs, ROOT, umount } from '../tmpfs.js';

const FAMILIES: Family[] = ['netqmail', 'indimail'];
/** replies come within milliseconds; a silence this long is silence */
const SILENCE_MS = 1000;

const { dir, daemon } = tracked();
function start(args: string[], env?: NodeJS.ProcessEnv): Promise<Daemon> {
  return daemon([...args, '127.0.0.1:0', dir()], env ? { env: { ...process.env, ...env } } : {});
}
/** GREYIP pointing at the daemon, in the family's syntax */
function greyip(family: Family, port: number): string {
  return family === 'netqmail' ? `127.0.0.1:${port}` : `127.0.0.1@${port}`;
}
function client(family: Family, port: number, silenceMs = SILENCE_MS): QmailSmtpd {
  return new QmailSmtpd({ family, greyip: greyip(family, port), silenceMs });
}
const v4 = (ip: string) => ({ TCPREMOTEIP: ip });

describe('GREYIP as each family reads it', () => {
  const cases: Array<[Family, string | undefined, string]> = [
    ['netqmail', undefined, 'off'],
    ['netqmail', '', 'off'],
    ['netqmail', ':', '127.0.0.1:1999'],
    ['netqmail', '127.0.0.2:2000', '127.0.0.2:2000'],
    ['netqmail', '127.0.0.2', '127.0.0.2:1999'],
    ['netqmail', ':2000', '127.0.0.1:2000'],
    ['indimail', undefined, 'off'],
    ['indimail', '', 'off'],
    ['indimail', '@', '127.0.0.1:1999'],
    ['indimail', '127.0.0.2', '127.0.0.2:1999'],
    ['indimail', '127.0.0.2@2000', '127.0.0.2:2000'],
    ['indimail', '@2000', '127.0.0.1:2000'],
    ['indimail', '127.0.0.2:2000', '127.0.0.2:1999'], // the :port is ignored
    ['indimail', '::1', '127.0.0.1:1999'], // rewritten
    ['indimail', '::1@2000', '127.0.0.1:2000'],
    ['indimail', ':', 'error'],
    ['indimail', '[::1]:2000', 'error'],
    ['indimail', 'mail.example@2000', 'error'],
  ];
  for (const [family, value, want] of cases) {
    it(`${family} GREYIP=${JSON.stringify(value)} -> ${want}`, () => {
      const g = parseGreyip(family, value);
      assert.equal(g.kind === 'server' ? `${g.host}:${g.port}` : g.kind, want);
    });
  }
});

describe('the datagram each family sends', () => {
  it('client-ip: IndiMail TCP6REMOTEIP, else TCPREMOTEIP, else unknown; netqmail TCPREMOTEIP', () => {
    assert.equal(clientIpField('indimail', { TCP6REMOTEIP: '::ffff:192.0.2.1', TCPREMOTEIP: '192.0.2.1' }), '::ffff:192.0.2.1');
    assert.equal(clientIpField('indimail', { TCPREMOTEIP: '192.0.2.1' }), '192.0.2.1');
    assert.equal(clientIpField('indimail', {}), 'unknown');
    assert.equal(clientIpField('netqmail', { TCP6REMOTEIP: '::1', TCPREMOTEIP: '192.0.2.1' }), '192.0.2.1');
  });

  it('IndiMail lower-cases the addresses and sends every recipient; netqmail sends them as given, cut to 2000 bytes', () => {
    const rc = Array.from({ length: 1001 }, (_, i) => `Rcpt${i}@Y.example`);
    const ind = buildRequest('indimail', v4('192.0.2.1'), 'A@X.example', rc);
    assert.ok(ind.toString('latin1').startsWith('I192.0.2.1\0Fa@x.example\0Trcpt0@y.example\0'));
    assert.ok(ind.length > 18_000, `the whole list: ${ind.length} bytes`);
    assert.ok(ind.toString('latin1').endsWith('Trcpt1000@y.example\0'));
    const net = buildRequest('netqmail', v4('192.0.2.1'), 'A@X.example', rc);
    assert.equal(net.length, NETQMAIL_MAX_REQUEST);
    assert.ok(net.toString('latin1').startsWith('I192.0.2.1\0FA@X.example\0TRcpt0@Y.example\0'));
  });
});

for (const family of FAMILIES) {
  describe(`${family} against qgreyd`, () => {
    it('first time: deferred (00 01); too soon: deferred (00 02)', async () => {
      const d = await start(['-m', '600']);
      const c = client(family, d.port);
      let o = await c.check(v4('192.0.2.1'), 'a@x.example', ['b@y.example']);
      assert.deepEqual([o.cause, o.reply, o.smtp, o.hangup], ['reply', '0001', 'defer', false]);
      o = await c.check(v4('192.0.2.1'), 'a@x.example', ['b@y.example']);
      assert.deepEqual([o.cause, o.reply, o.smtp], ['reply', '0002', 'defer']);
    });

    it('a retry that passes is accepted (01 03), then the IP is known good (01 02)', async () => {
      const d = await start(['-m', '0']);
      const c = client(family, d.port);
      assert.equal((await c.check(v4('192.0.2.2'), 'a@x.example', ['b@y.example'])).reply, '0001');
      let o = await c.check(v4('192.0.2.2'), 'a@x.example', ['b@y.example']);
      assert.deepEqual([o.reply, o.smtp], ['0103', 'accept']);
      o = await c.check(v4('192.0.2.2'), 'other@x.example', ['c@y.example']);
      assert.deepEqual([o.reply, o.smtp], ['0102', 'accept']);
    });

    for (const n of [1001, 3000]) {
      it(`${n} recipients in one message: answered, and every recipient the client sent is decided`, async () => {
        const d = await start(['-m', '600']);
        const c = client(family, d.port);
        const rc = Array.from({ length: n }, (_, i) => `r${i}@y.example`);
        const o = await c.check(v4('192.0.2.3'), 'a@x.example', rc);
        assert.deepEqual([o.cause, o.reply, o.smtp], ['reply', '0001', 'defer']);
        const last = await c.check(v4('192.0.2.3'), 'a@x.example', [rc[n - 1]]);
        // IndiMail sent the whole list, so the last recipient was stored; netqmail's 2000-byte
        // buffer never carried it
        assert.equal(last.reply, family === 'indimail' ? '0002' : '0001');
      });
    }

    it('a client whose address qmail-smtpd does not know', async () => {
      // a whitelist that takes every IPv4 and IPv6 address: the text must not match it
      const wl = join(dir(), 'whitelist');
      writeFileSync(wl, '0.0.0.0/0\n::/0\n');
      const d = await start(['-m', '0', '-w', wl]);
      const c = client(family, d.port);
      const o = await c.check({}, 'a@x.example', ['b@y.example']);
      if (family === 'indimail') {
        // sent as "unknown", greylisted as text like greydaemon does
        assert.equal(o.sent?.toString('latin1').split('\0')[0], 'Iunknown');
        assert.deepEqual([o.cause, o.reply, o.smtp], ['reply', '0001', 'defer']);
        assert.equal((await c.check({}, 'a@x.example', ['b@y.example'])).reply, '0103');
        await d.waitForLine(/ ip=unknown from=<a@x\.example> to=<b@y\.example> reply=01:03 reason=passed$/);
      } else {
        // an empty client-ip field is no request: silence, which this client accepts
        assert.deepEqual([o.cause, o.smtp], ['timeout', 'accept']);
      }
      assert.equal((await c.check(v4('192.0.2.4'), 'a@x.example', ['b@y.example'])).reply, '0101', 'the whitelist is live');
    });

    it('an IPv4 client seen through an IPv6 tcpserver (::ffff:a.b.c.d) is the IPv4 client', async () => {
      const d = await start(['-m', '600']);
      const c = client(family, d.port);
      const env = family === 'indimail' ? { TCP6REMOTEIP: '::ffff:192.0.2.5' } : v4('::ffff:192.0.2.5');
      assert.equal((await c.check(env, 'a@x.example', ['b@y.example'])).reply, '0001');
      assert.equal((await c.check(v4('192.0.2.5'), 'a@x.example', ['b@y.example'])).reply, '0002');
    });

    it('mixed-case addresses are one triplet', async () => {
      const d = await start(['-m', '600']);
      const c = client(family, d.port);
      const o = await c.check(v4('192.0.2.6'), 'A@X.Example', ['B@Y.Example']);
      assert.equal(o.reply, '0001');
      assert.equal(o.sent?.toString('latin1').includes('FA@X.Example'), family === 'netqmail');
      assert.equal((await c.check(v4('192.0.2.6'), 'a@x.example', ['b@y.example'])).reply, '0002');
    });

    it('a burst past the in-flight bound is answered 01 05 (accepted), not dropped', async () => {
      const d = await start(['-m', '600'], { QGREYD_MAX_IN_FLIGHT: '1' });
      const c = client(family, d.port, 2000);
      // bursts of 64 at once until one overlaps a batch (the first one nearly always does)
      const out: Outcome[] = [];
      for (let burst = 0; burst < 5 && !out.some((o) => o.reply === '0105'); burst++) {
        out.push(...(await Promise.all(Array.from({ length: 64 }, (_, i) => c.check(v4(`192.0.${burst}.${i + 10}`), 'a@x.example', ['b@y.example'])))));
      }
      assert.deepEqual(out.filter((o) => o.cause !== 'reply').map((o) => o.cause), [], 'every message got a reply');
      const counts = new Map<string, number>();
      for (const o of out) counts.set(o.reply!, (counts.get(o.reply!) ?? 0) + 1);
      assert.deepEqual([...counts.keys()].filter((r) => r !== '0001' && r !== '0105'), [], 'decided or not decided');
      assert.ok((counts.get('0105') ?? 0) > 0, `some went past the bound: ${JSON.stringify([...counts])}`);
      assert.ok(out.every((o) => o.reply === '0001' ? o.smtp === 'defer' : o.smtp === 'accept' && !o.hangup));
      await d.waitForLine(/^overload client=127\.0\.0\.1:\d+ count=1 total=1$/);
      assert.equal(await d.stop(), 0);
      const stopped = d.lines.find((l) => l.startsWith('stopped '))!;
      assert.match(stopped, new RegExp(`overload=${counts.get('0105')}$`), 'each 01 05 counted as overload');
    });
  });
}

describe('silence and errors: what each family does without a reply', () => {
  it('silence: netqmail accepts; IndiMail answers 451 Timeout and hangs up', async () => {
    const mute = dgram.createSocket('udp4');
    await new Promise<void>((r) => mute.bind(0, '127.0.0.1', () => r()));
    const port = mute.address().port;
    try {
      const n = await client('netqmail', port, 200).check(v4('192.0.2.1'), 'a@x', ['b@y']);
      assert.deepEqual([n.cause, n.smtp, n.hangup], ['timeout', 'accept', false]);
      const i = await client('indimail', port, 200).check(v4('192.0.2.1'), 'a@x', ['b@y']);
      assert.deepEqual([i.cause, i.smtp, i.response, i.hangup], ['timeout', 'defer', '451 greylist temporary failure - Timeout (#4.3.0)', true]);
    } finally {
      mute.close();
    }
  });

  it('nothing listening (ICMP port unreachable): IndiMail 451 at once; netqmail accepts', async () => {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    const port = s.address().port;
    await new Promise<void>((r) => s.close(() => r()));
    // far longer than the ICMP takes: a refused IndiMail exchange must not reach its timeout
    const i = await client('indimail', port, 5000).check(v4('192.0.2.1'), 'a@x', ['b@y']);
    assert.deepEqual([i.cause, i.smtp, i.response, i.hangup], ['refused', 'defer', '451 greylist temporary failure (#4.3.0)', true]);
    const n = await client('netqmail', port, 200).check(v4('192.0.2.1'), 'a@x', ['b@y']);
    assert.equal(n.smtp, 'accept');
  });

  it('a reply from another address: IndiMail\'s connected socket never sees it', async () => {
    // a server that answers from a second socket (another port), as a daemon answering from
    // the wrong local address would
    const srv = dgram.createSocket('udp4');
    const other = dgram.createSocket('udp4');
    await new Promise<void>((r) => srv.bind(0, '127.0.0.1', () => r()));
    await new Promise<void>((r) => other.bind(0, '127.0.0.1', () => r()));
    srv.on('message', (_m, rinfo) => other.send(Buffer.from([0, 1]), rinfo.port, rinfo.address));
    try {
      const port = srv.address().port;
      const n = await client('netqmail', port, 500).check(v4('192.0.2.1'), 'a@x', ['b@y']);
      assert.deepEqual([n.cause, n.reply, n.smtp], ['reply', '0001', 'defer']);
      const i = await client('indimail', port, 500).check(v4('192.0.2.1'), 'a@x', ['b@y']);
      assert.deepEqual([i.cause, i.smtp, i.hangup], ['timeout', 'defer', true]);
    } finally {
      srv.close();
      other.close();
    }
  });

  it('IndiMail with GREYIP=":" defers every message (a parse error); unset GREYIP means no greylisting', async () => {
    const i = await new QmailSmtpd({ family: 'indimail', greyip: ':' }).check(v4('192.0.2.1'), 'a@x', ['b@y']);
    assert.deepEqual([i.cause, i.smtp, i.hangup], ['parse-error', 'defer', true]);
    for (const family of FAMILIES) {
      const o = await new QmailSmtpd({ family, greyip: undefined }).check(v4('192.0.2.1'), 'a@x', ['b@y']);
      assert.deepEqual([o.cause, o.smtp], ['off', 'accept']);
    }
  });
});


describe('the store made unavailable (a full disk)', { skip: ROOT ? false : 'needs root to mount a small tmpfs' }, () => {
  for (const failClosed of [false, true]) {
    it(`every message still gets a reply: ${failClosed ? '00 04 with --fail-closed (deferred)' : '01 05 (accepted)'}`, { timeout: 60_000 }, async () => {
      const base = dir();
      const mnt = join(base, 'tmpfs');
      mountTmpfs(mnt, '2m');
      try {
        const d = await daemon(['-m', '600', ...(failClosed ? ['--fail-closed'] : []), '127.0.0.1:0', join(mnt, 'state')]);
        assert.match(d.lines[0], new RegExp(` fail=${failClosed ? 'closed' : 'open'}$`));
        fill(mnt);
        const want = failClosed ? '0004' : '0105';
        const seen = new Map<Family, string>();
        for (let i = 0; i < 2000 && seen.size < 2; i++) {
          for (const family of FAMILIES) {
            if (seen.has(family)) continue;
            const o = await client(family, d.port).check(v4('192.0.2.9'), `${family}${i}-${'x'.repeat(400)}@x.example`, ['b@y.example']);
            assert.equal(o.cause, 'reply', `${family}: a reply, never silence`);
            assert.ok(o.reply === '0001' || o.reply === want, `${family}: ${o.reply}`);
            if (o.reply === want) {
              assert.equal(o.smtp, failClosed ? 'defer' : 'accept');
              assert.equal(o.hangup, false);
              seen.set(family, o.reply);
            }
          }
        }
        assert.equal(seen.size, 2, 'the store failed for both');
        await d.waitForLine(new RegExp(` reply=${want.slice(0, 2)}:${want.slice(2)} reason=store-error error=".*"$`));
        await d.waitForLine(new RegExp(`^error store .* answering=${failClosed ? 'defer' : 'accept'} `));
        await d.stop('SIGKILL');
      } finally {
        umount(mnt);
      }
    });
  }
});
