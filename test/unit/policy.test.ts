// Every rule of PROTOCOL.md "Decision, in order" and the scenario table, with an injected
// clock: the store is a Map the test applies the decision's changes to.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Exceptions } from '../../src/exceptions.js';
import { EXACT } from '../../src/network.js';
import { clientOfTriplet, decide, FUTURE_TOLERANCE, GREYDAEMON, isDeadIp, isDeadTriplet, isFuture, isVerp, settingsFrom, tripletKey, type Decision, type Grouping, type Settings } from '../../src/policy.js';
import { decodeRequest, replyText, type Request } from '../../src/protocol.js';
import { req } from '../requests.js';

const DEFAULTS: Settings = settingsFrom(7, 12, 5);
const H = 3600;
const D = 86400;

/** A tiny greylist: a Map of records, decide(), apply the changes. */
class Model {
  ips = new Map<string, number>();
  triplets = new Map<string, number>();
  constructor(
    readonly s: Settings = DEFAULTS,
    readonly whitelisted: (ip: string) => boolean = () => false,
    readonly g: Grouping = GREYDAEMON,
  ) {}

  /** stored triplets of a client key, as src/pending.ts counts them */
  pending(client: string): number {
    let n = 0;
    for (const k of this.triplets.keys()) if (clientOfTriplet(k) === client) n++;
    return n;
  }

  ask(now: number, ip: string, sender: string, rcpts: string[]): string {
    const out = this.decide(now, req(ip, sender, rcpts));
    if ('malformed' in out) throw new Error(out.malformed);
    return replyText(out.verdict);
  }

  decide(now: number, r: Request) {
    const view = { lastGood: (ip: string) => this.ips.get(ip), firstSeen: (k: string) => this.triplets.get(k), pending: (c: string) => this.pending(c) };
    const out = decide(r, this.whitelisted(r.ip), view, now, this.s, this.g);
    if (!('malformed' in out)) this.apply(r, out);
    return out;
  }

  private apply(_r: Request, d: Decision) {
    if (d.knownGood !== undefined) this.ips.set(d.client, d.knownGood);
    for (const [k, t] of d.triplets) this.triplets.set(k, t);
  }
}


describe('PROTOCOL.md scenario table', () => {
  it('gives every reply of the table', () => {
    const m = new Model();
    const T0 = 1_700_000_000;
    const rows: Array<[number, string, string, string[], string]> = [
      [0, '192.0.2.1', 'a@x.example', ['b@y.example'], '00:01'],
      [60, '192.0.2.1', 'a@x.example', ['b@y.example'], '00:02'],
      [400, '192.0.2.1', 'A@X.EXAMPLE', ['B@Y.EXAMPLE'], '01:03'],
      [500, '192.0.2.1', 'other@z.example', ['c@y.example'], '01:02'],
      [0, '192.0.2.2', 'a@x.example', ['b@y.example', 'c@y.example'], '00:01'],
      [400, '192.0.2.2', 'a@x.example', ['b@y.example', 'd@y.example'], '00:01'],
      [401, '192.0.2.2', 'q@q.example', ['r@r.example'], '01:02'],
      [0, '192.0.2.3', '', ['list-bounce-u=h.example@lists.example'], '01:04'],
      [0, '192.0.2.4', 'a@x.example', ['b@y.example'], '00:01'],
      [13 * H, '192.0.2.4', 'a@x.example', ['b@y.example'], '00:03'],
      [13 * H + 6 * 60, '192.0.2.4', 'a@x.example', ['b@y.example'], '01:03'],
      // 192.0.2.1 was last used at 500 s
      [500 + 8 * D, '192.0.2.1', 'new@n.example', ['m@y.example'], '00:01'],
    ];
    for (const [t, ip, s, r, want] of rows) {
      assert.equal(m.ask(T0 + t, ip, s, r), want, `at ${t}s ${ip} ${s} ${r.join(',')}`);
    }
  });
});

describe('rule 1: whitelist', () => {
  it('accepts 01 01 and stores nothing, even for a bad tail', () => {
    const m = new Model(DEFAULTS, (ip) => ip === '192.0.2.7');
    assert.equal(m.ask(1000, '192.0.2.7', 'a@b', ['c@d']), '01:01');
    assert.equal(m.ips.size + m.triplets.size, 0);
    const d = decodeRequest(Buffer.from('I192.0.2.7\0Xjunk\0\0', 'latin1'));
    assert.ok(d.ok);
    const out = m.decide(1000, d.request);
    assert.ok(!('malformed' in out) && out.verdict === 'whitelisted');
  });
});

describe('rule 2: known-good IP', () => {
  it('accepts 01 02 and refreshes last-good while newer than now - timeout', () => {
    const m = new Model();
    m.ips.set('192.0.2.1', 1000);
    assert.equal(m.ask(1000 + 7 * D - 1, '192.0.2.1', 'x@y', ['z@w']), '01:02');
    assert.equal(m.ips.get('192.0.2.1'), 1000 + 7 * D - 1);
    assert.equal(m.triplets.size, 0);
  });
  it('is no longer known at exactly timeout of idleness', () => {
    const m = new Model();
    m.ips.set('192.0.2.1', 1000);
    assert.equal(m.ask(1000 + 7 * D, '192.0.2.1', 'x@y', ['z@w']), '00:01');
  });
  it('answers a known IP even when sender/recipient fields are bad (reference behaviour)', () => {
    const m = new Model();
    m.ips.set('192.0.2.1', 1000);
    const d = decodeRequest(Buffer.from('I192.0.2.1\0Tnot-a-sender\0\0', 'latin1'));
    assert.ok(d.ok);
    const out = m.decide(1001, d.request);
    assert.ok(!('malformed' in out) && out.verdict === 'known-good');
  });
});

describe('rule 3: triplets', () => {
  it('no recipients: 01 03, nothing stored', () => {
    const m = new Model();
    assert.equal(m.ask(1000, '192.0.2.1', 'a@b', []), '01:03');
    assert.equal(m.triplets.size + m.ips.size, 0);
  });

  it('a bad tail from an unknown IP is malformed and changes nothing', () => {
    const m = new Model();
    const d = decodeRequest(Buffer.from('I192.0.2.1\0Fa@b\0Tc@d\0Xbad\0\0', 'latin1'));
    assert.ok(d.ok);
    const out = m.decide(1000, d.request);
    assert.ok('malformed' in out);
    assert.equal(m.triplets.size + m.ips.size, 0);
  });

  it('stores the triplet lower-cased, spaces removed, empty sender as "."', () => {
    const m = new Model();
    m.ask(1000, '192.0.2.1', ' Bob @Example.COM', ['N ed@Example.org']);
    assert.deepEqual([...m.triplets.keys()], ['192.0.2.1 bob@example.com ned@example.org']);
    m.ask(1000, '192.0.2.1', '', ['Postmaster@x']);
    assert.ok(m.triplets.has('192.0.2.1 . postmaster@x'));
    m.ask(1000, '192.0.2.1', '   ', ['a@x']);
    assert.ok(m.triplets.has('192.0.2.1 . a@x'));
  });

  it('lower-cases ASCII only: other bytes are compared as they are', () => {
    assert.equal(tripletKey('192.0.2.1', 'ÀB@x', 'c@d'), '192.0.2.1 Àb@x c@d');
  });

  it('too soon keeps the stored time; too late restarts it', () => {
    const m = new Model();
    m.ask(1000, '192.0.2.1', 'a@b', ['c@d']);
    assert.equal(m.ask(1000 + 299, '192.0.2.1', 'a@b', ['c@d']), '00:02');
    assert.equal(m.triplets.get('192.0.2.1 a@b c@d'), 1000);
    assert.equal(m.ask(1000 + 12 * H, '192.0.2.1', 'a@b', ['c@d']), '00:03');
    assert.equal(m.triplets.get('192.0.2.1 a@b c@d'), 1000 + 12 * H);
  });

  it('a retry at exactly min-resend passes and makes the IP known good, triplet untouched', () => {
    const m = new Model();
    m.ask(1000, '192.0.2.1', 'a@b', ['c@d']);
    assert.equal(m.ask(1300, '192.0.2.1', 'a@b', ['c@d']), '01:03');
    assert.equal(m.ips.get('192.0.2.1'), 1300);
    assert.equal(m.triplets.get('192.0.2.1 a@b c@d'), 1000);
  });

  it('[passing, new] replies 00 01 but makes the IP known good', () => {
    const m = new Model();
    m.ask(1000, '192.0.2.2', 'a@b', ['p@x']);
    assert.equal(m.ask(1400, '192.0.2.2', 'a@b', ['p@x', 'n@x']), '00:01');
    assert.equal(m.ips.get('192.0.2.2'), 1400);
    assert.equal(m.ask(1401, '192.0.2.2', 'z@z', ['y@y']), '01:02');
  });

  it('the last recipient that set a defer code decides the code', () => {
    const m = new Model();
    m.ask(1000, '192.0.2.1', 'a@b', ['soon@x']);
    // soon (00 02), new (00 01), late (00 03), passing: late wins
    m.triplets.set('192.0.2.1 a@b late@x', 1000 - 13 * H);
    assert.equal(m.ask(1010, '192.0.2.1', 'a@b', ['soon@x', 'new@x', 'late@x']), '00:03');
    const m2 = new Model();
    m2.ask(1000, '192.0.2.1', 'a@b', ['soon@x']);
    assert.equal(m2.ask(1010, '192.0.2.1', 'a@b', ['new2@x', 'soon@x']), '00:02');
  });

  it('a recipient listed twice sees what its first occurrence stored', () => {
    const m = new Model();
    assert.equal(m.ask(1000, '192.0.2.1', 'a@b', ['c@d', 'C@D']), '00:02');
    assert.equal(m.triplets.get('192.0.2.1 a@b c@d'), 1000);
  });

  it('VERP bounce: 01 04 and stop, whatever earlier recipients set', () => {
    const m = new Model();
    assert.equal(m.ask(1000, '192.0.2.3', '', ['plain@x', 'list-bounce-u=h@l', 'after@x']), '01:04');
    // the recipient before the VERP one was processed and stored; the one after was not
    assert.ok(m.triplets.has('192.0.2.3 . plain@x'));
    assert.ok(!m.triplets.has('192.0.2.3 . after@x'));
  });

  it('VERP needs an empty sender and a - followed later by =', () => {
    const m = new Model();
    assert.equal(m.ask(1000, '192.0.2.3', 'a@b', ['list-bounce-u=h@l']), '00:01');
    assert.equal(m.ask(1000, '192.0.2.3', '', ['list=bounce-u@l']), '00:01');
    assert.equal(m.ask(1000, '192.0.2.3', ' ', ['l-b=@l']), '01:04');
    assert.ok(isVerp('a-b=c'));
    assert.ok(!isVerp('a=b-c'));
    assert.ok(!isVerp('abc'));
  });

  it('fractional settings work (-m 0.05 is three seconds)', () => {
    const m = new Model(settingsFrom(7, 12, 0.05));
    m.ask(1000, '192.0.2.1', 'a@b', ['c@d']);
    assert.equal(m.ask(1002, '192.0.2.1', 'a@b', ['c@d']), '00:02');
    assert.equal(m.ask(1003, '192.0.2.1', 'a@b', ['c@d']), '01:03');
  });
});

describe('expiry predicates', () => {
  it('dead records are the ones that no longer influence a verdict', () => {
    assert.equal(isDeadIp(1000, 1000 + 7 * D - 1, DEFAULTS), false);
    assert.equal(isDeadIp(1000, 1000 + 7 * D, DEFAULTS), true);
    assert.equal(isDeadTriplet(1000, 1000 + 12 * H - 1, DEFAULTS), false);
    assert.equal(isDeadTriplet(1000, 1000 + 12 * H, DEFAULTS), true);
  });

  it('a dead triplet still stored answers 00 03, deleted answers 00 01', () => {
    const m = new Model();
    m.ask(1000, '192.0.2.1', 'a@b', ['c@d']);
    const t = 1000 + 12 * H;
    assert.equal(m.ask(t, '192.0.2.1', 'a@b', ['c@d']), '00:03');
    m.triplets.clear();
    assert.equal(m.ask(t, '192.0.2.1', 'a@b', ['c@d']), '00:01');
  });
});

describe('records dated ahead of now (the clock was set back)', () => {
  const T0 = 1_700_000_000;

  it('a triplet first seen more than the tolerance ahead counts as first seen now: at most min-resend of deferral', () => {
    const m = new Model();
    // touched while the clock was 30 days ahead, then the clock was corrected
    m.triplets.set('192.0.2.1 a@b c@d', T0 + 30 * D);
    assert.equal(m.ask(T0, '192.0.2.1', 'a@b', ['c@d']), '00:02');
    assert.equal(m.triplets.get('192.0.2.1 a@b c@d'), T0, 'normalised to now, so the wait is min-resend');
    assert.equal(m.ask(T0 + 5 * 60 - 1, '192.0.2.1', 'a@b', ['c@d']), '00:02');
    assert.equal(m.ask(T0 + 5 * 60, '192.0.2.1', 'a@b', ['c@d']), '01:03');
    assert.equal(m.ask(T0 + 5 * 60 + 1, '192.0.2.1', 'x@y', ['z@w']), '01:02');
  });

  it('within the tolerance a stored time is left as it is', () => {
    const m = new Model();
    m.triplets.set('192.0.2.1 a@b c@d', T0 + FUTURE_TOLERANCE);
    assert.equal(m.ask(T0, '192.0.2.1', 'a@b', ['c@d']), '00:02');
    assert.equal(m.triplets.get('192.0.2.1 a@b c@d'), T0 + FUTURE_TOLERANCE);
    assert.equal(isFuture(T0 + FUTURE_TOLERANCE, T0, DEFAULTS), false);
    assert.equal(isFuture(T0 + FUTURE_TOLERANCE + 1, T0, DEFAULTS), true);
  });

  it('the tolerance comes from the settings', () => {
    const s: Settings = { ...DEFAULTS, futureTolerance: 5 };
    const m = new Model(s);
    m.triplets.set('192.0.2.1 a@b c@d', T0 + 6);
    assert.equal(m.ask(T0, '192.0.2.1', 'a@b', ['c@d']), '00:02');
    assert.equal(m.triplets.get('192.0.2.1 a@b c@d'), T0);
  });

  it('a known-good IP dated ahead is known good now and refreshed to now', () => {
    const m = new Model();
    m.ips.set('192.0.2.9', T0 + 30 * D);
    assert.equal(m.ask(T0, '192.0.2.9', 'a@b', ['c@d']), '01:02');
    assert.equal(m.ips.get('192.0.2.9'), T0);
    // and it lapses timeout after now, not timeout after its future date
    assert.equal(m.ask(T0 + 7 * D, '192.0.2.9', 'a@b', ['c@d']), '00:01');
  });

  it('future-dated records are not dead: they count as now', () => {
    assert.equal(isDeadIp(T0 + 30 * D, T0, DEFAULTS), false);
    assert.equal(isDeadTriplet(T0 + 30 * D, T0, DEFAULTS), false);
    assert.equal(isDeadTriplet(T0 + 30 * D, T0, { ...DEFAULTS, greyWindow: 0 }), true);
  });
});

// ---- this project's opt-in rules (README: "Policy options") ----

const T = 1_700_000_000;
const grouping = (g: Partial<Grouping>): Grouping => ({ ...GREYDAEMON, ...g });

describe('--ipv4-prefix / --ipv6-prefix: records keyed by the network', () => {
  const g = grouping({ prefixes: { v4: 24, v6: 64 } });

  it('a retry from another host of the /24 passes, and the whole /24 becomes known good', () => {
    const m = new Model(DEFAULTS, () => false, g);
    assert.equal(m.ask(T, '192.0.2.10', 'a@x', ['b@y']), '00:01');
    assert.deepEqual([...m.triplets.keys()], ['192.0.2.0/24 a@x b@y']);
    assert.equal(m.ask(T + 400, '192.0.2.77', 'a@x', ['b@y']), '01:03');
    assert.deepEqual([...m.ips.keys()], ['192.0.2.0/24']);
    assert.equal(m.ask(T + 401, '192.0.2.200', 'other@z', ['c@y']), '01:02');
    // another /24 is another client
    assert.equal(m.ask(T + 402, '192.0.3.10', 'a@x', ['b@y']), '00:01');
  });

  it('a retry from another host of the /64 passes; another /64 does not', () => {
    const m = new Model(DEFAULTS, () => false, g);
    assert.equal(m.ask(T, '2001:db8:1:2::25', 'a@x', ['b@y']), '00:01');
    assert.ok(m.triplets.has('2001:db8:1:2::/64 a@x b@y'));
    assert.equal(m.ask(T + 400, '2001:db8:1:2:aaaa::1', 'a@x', ['b@y']), '01:03');
    assert.equal(m.ask(T + 401, '2001:db8:1:3::25', 'c@x', ['b@y']), '00:01');
  });

  it('the decision names the key it used; with the defaults it is the address', () => {
    const m = new Model(DEFAULTS, () => false, g);
    const out = m.decide(T, req('::ffff:198.51.100.9', 'a@x', ['b@y']));
    assert.ok(!('malformed' in out) && out.client === '198.51.100.0/24');
    const exact = new Model().decide(T, req('198.51.100.9', 'a@x', ['b@y']));
    assert.ok(!('malformed' in exact) && exact.client === '198.51.100.9');
    assert.deepEqual(GREYDAEMON.prefixes, EXACT);
  });

  it('the whitelist is matched by the exact address, not by the network', () => {
    const m = new Model(DEFAULTS, (ip) => ip === '192.0.2.7', g);
    assert.equal(m.ask(T, '192.0.2.7', 'a@x', ['b@y']), '01:01');
    assert.equal(m.ask(T, '192.0.2.8', 'a@x', ['b@y']), '00:01');
  });

  it('a client sent as text (unknown) is its own key', () => {
    const m = new Model(DEFAULTS, () => false, g);
    m.ask(T, 'unknown', 'a@x', ['b@y']);
    assert.ok(m.triplets.has('unknown a@x b@y'));
  });
});

describe('--normalise-senders: per-message tags out of the key', () => {
  const g = grouping({ normaliseSenders: true });

  it('a BATV sender with a new tag on retry passes; the decision keeps the keyed form', () => {
    const m = new Model(DEFAULTS, () => false, g);
    assert.equal(m.ask(T, '192.0.2.1', 'prvs=0123abcd=Bob@Example.com', ['c@d']), '00:01');
    const out = m.decide(T + 400, req('192.0.2.1', 'prvs=9876fedc=bob@example.com', ['c@d']));
    assert.ok(!('malformed' in out));
    assert.equal(replyText(out.verdict), '01:03');
    assert.equal(out.keySender, 'bob@example.com');
    assert.deepEqual([...m.triplets.keys()], ['192.0.2.1 bob@example.com c@d']);
  });

  it('SRS, +extension and VERP numbers come out too', () => {
    const m = new Model(DEFAULTS, () => false, g);
    m.ask(T, '192.0.2.1', 'SRS0=HHH=TT=orig.example=alice@fwd.example', ['c@d']);
    m.ask(T, '192.0.2.1', 'news+4711@list.example', ['c@d']);
    m.ask(T, '192.0.2.1', 'bounce-1234-5678@esp.example', ['c@d']);
    assert.deepEqual([...m.triplets.keys()].sort(), ['192.0.2.1 alice@orig.example c@d', '192.0.2.1 bounce-#-#@esp.example c@d', '192.0.2.1 news@list.example c@d']);
    assert.equal(m.ask(T + 400, '192.0.2.1', 'bounce-9999-0000@esp.example', ['c@d']), '01:03');
  });

  it('off (the default), a new tag is a new triplet, and no keySender is reported', () => {
    const m = new Model();
    m.ask(T, '192.0.2.1', 'prvs=0123abcd=bob@example.com', ['c@d']);
    const out = m.decide(T + 400, req('192.0.2.1', 'prvs=9876fedc=bob@example.com', ['c@d']));
    assert.ok(!('malformed' in out) && out.verdict === 'new' && out.keySender === undefined);
  });

  it('the bounce sender stays "."', () => {
    const m = new Model(DEFAULTS, () => false, g);
    m.ask(T, '192.0.2.1', '', ['c@d']);
    assert.ok(m.triplets.has('192.0.2.1 . c@d'));
  });
});

describe('--exceptions: recipients never greylisted', () => {
  const ex = Exceptions.parse('postmaster@\nabuse@example.org\n@vip.example\n', 'exc');
  const g = grouping({ exceptions: ex });

  it('a request whose every recipient is an exception: 01 06, nothing stored, every time', () => {
    const m = new Model(DEFAULTS, () => false, g);
    assert.equal(m.ask(T, '192.0.2.1', 'spam@x', ['postmaster@example.org', 'Abuse@Example.org', 'ceo@vip.example']), '01:06');
    assert.equal(m.ask(T + 1, '192.0.2.1', 'spam@x', ['PostMaster@other.example']), '01:06');
    assert.equal(m.triplets.size + m.ips.size, 0);
  });

  it('a request that mixes them is decided on the others, and the exception is not stored', () => {
    const m = new Model(DEFAULTS, () => false, g);
    assert.equal(m.ask(T, '192.0.2.1', 'a@x', ['postmaster@example.org', 'b@y']), '00:01');
    assert.deepEqual([...m.triplets.keys()], ['192.0.2.1 a@x b@y']);
    assert.equal(m.ask(T + 400, '192.0.2.1', 'a@x', ['b@y', 'postmaster@example.org']), '01:03');
  });

  it('the decision names the entry that matched', () => {
    const m = new Model(DEFAULTS, () => false, g);
    const out = m.decide(T, req('192.0.2.1', 'a@x', ['bob@vip.example']));
    assert.ok(!('malformed' in out));
    assert.equal(out.detail[0].outcome, 'exception');
    assert.equal(out.detail[0].exception?.line, 3);
  });

  it('whitelist and known good still answer first; no recipients is still 01 03', () => {
    const m = new Model(DEFAULTS, (ip) => ip === '192.0.2.7', g);
    assert.equal(m.ask(T, '192.0.2.7', 'a@x', ['postmaster@x']), '01:01');
    m.ips.set('192.0.2.8', T);
    assert.equal(m.ask(T, '192.0.2.8', 'a@x', ['postmaster@x']), '01:02');
    assert.equal(m.ask(T, '192.0.2.9', 'a@x', []), '01:03');
  });

  it('without the option postmaster@ is greylisted like anyone', () => {
    assert.equal(new Model().ask(T, '192.0.2.1', 'a@x', ['postmaster@example.org']), '00:01');
  });
});

describe('--max-pending: a cap on stored triplets per client network', () => {
  const g = grouping({ maxPending: 3, prefixes: { v4: 24, v6: 64 } });

  it('past the cap a new triplet is deferred 00 05 and not stored', () => {
    const m = new Model(DEFAULTS, () => false, g);
    for (let i = 0; i < 3; i++) assert.equal(m.ask(T, `192.0.2.${i + 1}`, `s${i}@x`, ['r@y']), '00:01');
    assert.equal(m.ask(T, '192.0.2.99', 's9@x', ['r@y']), '00:05');
    assert.equal(m.triplets.size, 3);
    // the cap is per network: another /24 is not affected
    assert.equal(m.ask(T, '192.0.3.1', 's9@x', ['r@y']), '00:01');
  });

  it('counts the triplets a request creates: the recipients past the cap are not stored', () => {
    const m = new Model(DEFAULTS, () => false, g);
    assert.equal(m.ask(T, '192.0.2.1', 'a@x', ['1@y', '2@y', '3@y', '4@y', '5@y']), '00:05');
    assert.equal(m.triplets.size, 3);
  });

  it('stored triplets are still decided at the cap: a retry passes, a stale one restarts', () => {
    const m = new Model(DEFAULTS, () => false, g);
    m.ask(T, '192.0.2.1', 'a@x', ['1@y', '2@y', '3@y']);
    m.triplets.set('192.0.2.0/24 a@x 1@y', T - 13 * H);
    assert.equal(m.ask(T + 10, '192.0.2.1', 'a@x', ['1@y']), '00:03');
    assert.equal(m.ask(T + 400, '192.0.2.1', 'a@x', ['2@y']), '01:03');
    // and a network that passed is known good: no cap applies
    assert.equal(m.ask(T + 401, '192.0.2.1', 'new@x', ['9@y']), '01:02');
  });

  it('the exceptions are never capped', () => {
    const m = new Model(DEFAULTS, () => false, { ...g, exceptions: Exceptions.parse('postmaster@\n', 'e') });
    m.ask(T, '192.0.2.1', 'a@x', ['1@y', '2@y', '3@y']);
    assert.equal(m.ask(T, '192.0.2.1', 'a@x', ['postmaster@y']), '01:06');
  });
});
