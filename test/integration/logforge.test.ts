// Logs cannot be forged: whatever bytes an envelope carries, one request makes one decision
// line with exactly the fields the daemon wrote, and each escaped field reads back as sent.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { escapeField } from '../../src/log/log.js';
import { encodeRequest } from '../../src/protocol.js';
import { removeDir, sendRaw, startDaemon, tempDir } from '../helpers.js';

function unescape(s: string): string {
  return s.replace(/\\x([0-9a-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}

test('escapeField leaves no byte that could end a line, start a field or fake a delimiter', () => {
  for (let c = 0; c < 256; c++) {
    const raw = `a${String.fromCharCode(c)}b`;
    const out = escapeField(raw);
    assert.match(out, /^[\x21-\x7e]+$/, `byte ${c}`);
    assert.doesNotMatch(out, /[<>,"]/, `byte ${c}`);
    assert.equal(unescape(out), raw, `byte ${c} round-trips`);
  }
  assert.equal(escapeField('a\\x41'), 'a\\x5cx41', 'a literal backslash is escaped, so escapes are unambiguous');
});

const ADDR = '<[^<>,"\\s]*>';
const DECISION = new RegExp(
  `^client=\\S+ ip=[0-9a-f.:]+ from=(${ADDR}) to=((?:${ADDR})(?:,${ADDR})*(?:,\\+\\d+)?)? reply=\\d\\d:\\d\\d reason=[a-z-]+(?: error="[^"]*")?$`,
);
const MALFORMED = /^client=\S+(?: ip=[0-9a-f.:]+)? reply=none reason=malformed bytes=\d+ detail="[^"]*"$/;
const DEBUG = new RegExp(`^debug client=\\S+ (?:triplet=${ADDR} outcome=[a-z-]+ age=(?:\\d+|-)|datagram=[0-9a-f]+(?:\\.\\.\\.)?)$`);

test('crafted envelopes cannot add a log line or a field', { timeout: 30_000 }, async () => {
  const forged = 'client=127.0.0.1:1 ip=6.6.6.6 from=<boss@x.example> to=<all@y.example> reply=01:01 reason=whitelisted';
  const senders = [
    `a@x.example\n${forged}`,
    `a@x.example\r${forged}`,
    `> reply=01:01 reason=passed from=<`,
    'a\x1b[2K\x1b[1Gb@x.example',
    'caf\xc3\xa9@x.example \xff\xfe',
    'tab\there@x.example\x0b\x0c\x7f',
    'q"uote"@x.example\\x0a',
    '',
  ];
  const recipients = [
    [`b@y.example\n${forged}`, 'c@y.example'],
    [`b@y.example>,<c@y.example> reply=01:01 reason=whitelisted`],
    ['x\x85y\xe2\x80\xa8@y.example', 'list-\n=x@y.example'],
    [`\r\nstart version=9.9 listen=0.0.0.0:25`],
    Array.from({ length: 60 }, (_, i) => `r${i}\n@y.example`),
  ];
  const dir = tempDir();
  const d = await startDaemon(['-d', '127.0.0.1:0', join(dir, 's')]);
  try {
    const startLines = d.lines.length;
    let requests = 0;
    for (const s of senders) {
      for (const rc of recipients) {
        const reply = await sendRaw(d.port, encodeRequest('192.0.2.7', s, rc));
        assert.ok(reply !== null, 'answered');
        requests++;
      }
    }
    // malformed datagrams with the same payloads in the IP and tag positions
    const bad = [
      Buffer.from(`I192.0.2.7\n${forged}\0Fa\0\0`, 'latin1'),
      Buffer.from(`Ife80::1%eth0\n${forged}\0Fa\0\0`, 'latin1'),
      Buffer.from(`I192.0.2.7\0X\n${forged}\0\0`, 'latin1'),
      Buffer.from(`I192.0.2.7\0Fa\0\n${forged}\0\0`, 'latin1'),
      Buffer.from(`\n${forged}`, 'latin1'),
    ];
    for (const b of bad) assert.equal(await sendRaw(d.port, b, '127.0.0.1', 300), null);
    // a last well-formed request: its line comes after all the others
    assert.equal(await sendRaw(d.port, encodeRequest('192.0.2.8', 'end@x.example', ['end@y.example'])), '0001');
    await d.waitForLine(/ip=192\.0\.2\.8 /);

    const lines = d.lines.slice(startLines);
    const decisions = lines.filter((l) => l.startsWith('client=') && !l.includes('reason=malformed'));
    const malformed = lines.filter((l) => l.includes('reason=malformed'));
    const debug = lines.filter((l) => l.startsWith('debug '));
    assert.equal(decisions.length, requests + 1, 'one decision line per request, no more');
    assert.equal(malformed.length, bad.length, 'one line per malformed datagram');
    assert.equal(lines.length, decisions.length + malformed.length + debug.length, `no other lines:\n${lines.join('\n')}`);
    for (const l of decisions) assert.match(l, DECISION);
    for (const l of malformed) assert.match(l, MALFORMED);
    for (const l of debug) assert.match(l, DEBUG);
    for (const l of lines) {
      assert.equal(l.split(' reply=').length, l.startsWith('debug ') ? 1 : 2, `one reply field: ${l}`);
      const fields = l.split(' ');
      assert.ok(!fields.includes('ip=6.6.6.6') && !fields.includes('reason=whitelisted'), `a forged field survived: ${l}`);
      const names = fields.map((f) => f.split('=')[0]);
      assert.equal(new Set(names).size, names.length, `a field name appears twice: ${l}`);
    }
    // the escaped fields read back as the bytes that were sent
    let k = 0;
    for (const s of senders) {
      for (const rc of recipients) {
        const m = DECISION.exec(decisions[k++])!;
        assert.equal(unescape(m[1].slice(1, -1)), s);
        const shown = m[2].split(',').filter((x) => !x.startsWith('+'));
        assert.deepEqual(shown.map((x) => unescape(x.slice(1, -1))), rc.slice(0, 50));
      }
    }
  } finally {
    await d.stop();
    removeDir(dir);
  }
});
