// The request path's cheaper forms give the answers the plain forms gave: the address parser,
// the reply texts, the decoder on a datagram's Buffer, the --allow answers kept per source,
// the decision line's recipient list, and the batches taken from a single source.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { AllowList } from '../../src/daemon/access.js';
import { Greylist, requestCost } from '../../src/daemon/queue.js';
import { formatDecisionLine, LOG_RECIPIENTS } from '../../src/decision-log.js';
import { escapeField } from '../../src/log/log.js';
import { settingsFrom } from '../../src/policy.js';
import { decodeRequest, encodeRequest, replyText, Verdict, type Request } from '../../src/protocol.js';
import { Store } from '../../src/store/leveldb.js';
import { ipv4ToInt, Whitelist } from '../../src/whitelist.js';
import { removeDir, tempDir } from '../helpers.js';

/** what ipv4ToInt computed before it read characters itself */
function reference(ip: string): number {
  const o = ip.split('.').map(Number);
  return ((o[0] << 24) | (o[1] << 16) | (o[2] << 8) | o[3]) >>> 0;
}

describe('ipv4ToInt', () => {
  it('reads dotted quads as the split-and-Number form does', () => {
    const fixed = ['0.0.0.0', '255.255.255.255', '192.0.2.1', '10.0.0.255', '1.2.3.4', '127.0.0.1', '198.51.100.200'];
    for (const ip of fixed) assert.equal(ipv4ToInt(ip), reference(ip), ip);
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    for (let i = 0; i < 20_000; i++) {
      const ip = `${rnd(256)}.${rnd(256)}.${rnd(256)}.${rnd(256)}`;
      assert.equal(ipv4ToInt(ip), reference(ip), ip);
    }
  });

  it('gives what the split-and-Number form gave for text that is not a dotted quad', () => {
    for (const ip of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1.2.3.256', '1.999.3.4', '1..2.3', '.1.2.3', '1.2.3.', 'a.b.c.d', '01.2.3.4', '1.2.3.4 ', '1000.1.1.1']) {
      assert.equal(ipv4ToInt(ip), reference(ip), JSON.stringify(ip));
    }
  });
});

describe('reply texts', () => {
  it('are the reply bytes as 0a:0b', () => {
    assert.equal(replyText(Verdict.Whitelisted), '01:01');
    assert.equal(replyText(Verdict.New), '00:01');
    assert.equal(replyText(Verdict.NotDecidedClosed), '00:04');
    assert.equal(replyText(Verdict.PendingCap), '00:05');
    assert.equal(replyText(Verdict.Exception), '01:06');
  });
});

describe('decodeRequest', () => {
  it('decodes a Buffer, a view into a larger Buffer and a plain Uint8Array alike', () => {
    const msg = encodeRequest('192.0.2.1', 'S\xe9nder@x.example', ['a@y.example', 'b\x01@y.example']);
    const inside = Buffer.concat([Buffer.from('junk'), msg, Buffer.from('more')]).subarray(4, 4 + msg.length);
    const plain = new Uint8Array(msg);
    const a = decodeRequest(msg);
    assert.ok(a.ok);
    assert.deepEqual(a.request.tail, { sender: 'S\xe9nder@x.example', recipients: ['a@y.example', 'b\x01@y.example'] });
    assert.deepEqual(decodeRequest(inside), a);
    assert.deepEqual(decodeRequest(plain), a);
  });
});

describe('AllowList', () => {
  it('answers a source the same from its cache, and past the cache bound', () => {
    const a = AllowList.parse(['192.0.2.0/24', '::1']);
    for (let round = 0; round < 2; round++) {
      assert.equal(a.allows('192.0.2.9'), true);
      assert.equal(a.allows('198.51.100.1'), false);
      assert.equal(a.allows('::1'), true);
      assert.equal(a.allows('::2'), false);
    }
    // more sources than the cache holds: answers stay right while it is emptied and refilled
    for (let i = 0; i < 3000; i++) {
      const inside = `192.0.2.${i % 256}`;
      const outside = `203.0.${i >> 8}.${i & 255}`;
      assert.equal(a.allows(inside), true, inside);
      assert.equal(a.allows(outside), false, outside);
    }
    assert.equal(AllowList.everyone().allows('203.0.113.1'), true);
  });
});

/** escapeField as a plain loop over every character, as it was before its one-scan check */
function escapeReference(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const plain = c > 0x20 && c < 0x7f && c !== 0x5c && c !== 0x2c && c !== 0x3c && c !== 0x3e && c !== 0x22;
    out += plain ? s[i] : '\\x' + (c & 0xff).toString(16).padStart(2, '0');
  }
  return out;
}

describe('escapeField', () => {
  it('escapes every byte the plain loop escapes, alone and inside a field', () => {
    for (let c = 0; c < 256; c++) {
      const ch = String.fromCharCode(c);
      assert.equal(escapeField(ch), escapeReference(ch), `byte ${c}`);
      const inside = `a${ch}b@x.example`;
      assert.equal(escapeField(inside), escapeReference(inside), `byte ${c} inside`);
    }
    const plain = 'user+tag@example.com';
    assert.equal(escapeField(plain), plain);
  });
});

describe('formatDecisionLine', () => {
  it('lists recipients as <r>,<r> with the rest counted, escaped', () => {
    const base = { client: '127.0.0.1:5', ip: '192.0.2.1', reply: '00:01', reason: 'new' };
    assert.equal(
      formatDecisionLine({ ...base, envelope: { sender: 's@x', recipients: ['a@y', 'b,<c>@y'] } }),
      'client=127.0.0.1:5 ip=192.0.2.1 from=<s@x> to=<a@y>,<b\\x2c\\x3cc\\x3e@y> reply=00:01 reason=new',
    );
    assert.equal(formatDecisionLine({ ...base, envelope: { sender: '', recipients: [] } }), 'client=127.0.0.1:5 ip=192.0.2.1 from=<> to= reply=00:01 reason=new');
    const many = Array.from({ length: LOG_RECIPIENTS + 3 }, (_, i) => `r${i}@y`);
    const expected = many.slice(0, LOG_RECIPIENTS).map((r) => `<${escapeField(r)}>`).join(',') + ',+3';
    assert.equal(formatDecisionLine({ ...base, envelope: { sender: 's@x', recipients: many } }), `client=127.0.0.1:5 ip=192.0.2.1 from=<s@x> to=${expected} reply=00:01 reason=new`);
  });
});

describe('the batch of one source', () => {
  it('takes requests in order until the next would pass the budget, one over it alone', async () => {
    const dir = tempDir();
    const store = await Store.open(join(dir, 's'));
    // which request (by sender) each commit, i.e. each batch, wrote
    const batches: string[][] = [];
    const commitSync = store.commitSync.bind(store);
    store.commitSync = (groups) => {
      batches.push(groups.flatMap((g) => g.changes.map((c) => /^G \S+ (s\d+)@/.exec(c[0])?.[1] ?? '')));
      return commitSync(groups);
    };
    const gl = new Greylist(store, settingsFrom(7, 12, 5), Whitelist.empty());
    try {
      const reqs: Request[] = [];
      // recipients per request: costs that fill a budget unevenly, and one request over it
      const sizes = [1, 2, 1, 3, 1, 1, 40, 2, 2, 1, 1, 3];
      sizes.forEach((n, i) => {
        const d = decodeRequest(encodeRequest('192.0.2.1', `s${i}@x.example`, Array.from({ length: n }, (_, r) => `r${r}@y.example`)));
        assert.ok(d.ok);
        reqs.push(d.request);
      });
      gl.batchBudget = 4 * requestCost(reqs[0]);
      assert.ok(requestCost(reqs[6]) > gl.batchBudget, 'request 6 is over the budget');
      // the rule: in order, until the next request would pass the budget (a batch takes at
      // least one)
      const expected: string[][] = [];
      let cur: string[] = [];
      let spent = 0;
      reqs.forEach((r, i) => {
        if (cur.length > 0 && spent + requestCost(r) > gl.batchBudget) {
          expected.push(cur);
          cur = [];
          spent = 0;
        }
        cur.push(`s${i}`);
        spent += requestCost(r);
      });
      expected.push(cur);
      const results = await Promise.all(reqs.map((r) => gl.decideAsync(r, '127.0.0.1')));
      assert.ok(results.every((r) => r.kind === 'decision' && r.decision.verdict === 'new'));
      // each request wrote one record per recipient: one sender per request in its batch
      assert.deepEqual(batches.map((b) => [...new Set(b)]), expected);
      assert.ok(expected.length >= 5, `the budget splits the requests into ${expected.length} batches`);
    } finally {
      await gl.stop();
      await store.close();
      removeDir(dir);
    }
  });
});
