// qgreyctl report: parsing and aggregation on a recorded log with known answers
// (test/fixtures/report.log, tai64n-stamped as multilog t writes it).
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { formatHtml } from '../../src/report/html.js';
import { buildReport, formatReport, GreydaemonRequests, histogram, network, parseGreydaemonLine, parseLine, senderDomain, splitStamp } from '../../src/report/report.js';
import { query, ROOT, removeDir, startDaemon, tempDir } from '../helpers.js';
import { ctlInProcess } from '../ctl-helpers.js';

const FIXTURE = join(ROOT, 'test', 'fixtures', 'report.log');
const T0 = 1700000000;
const lines = () => readFileSync(FIXTURE, 'latin1').replace(/\n$/, '').split('\n');

test('tai64n stamps become Unix seconds (2023-11-14T22:13:20.123456789Z)', () => {
  const [t, rest] = splitStamp('@400000006553f10a075bcd15 client=x');
  assert.equal(rest, 'client=x');
  assert.ok(t !== null && Math.abs(t - (T0 + 0.123456789)) < 1e-6, String(t));
  assert.deepEqual(splitStamp('client=x'), [null, 'client=x']);
});

test('a decision line parses into normalised sender and recipients', () => {
  const p = parseLine('@4000000065540222075bcd15 client=127.0.0.1:5 ip=192.0.2.1 from=<A@X.Example> to=<b\\x20c@y.example>,<d@y.example>,+3 reply=00:01 reason=new');
  assert.equal(p.kind, 'decision');
  if (p.kind !== 'decision') return;
  assert.deepEqual(p.decision.rcpts, ['bc@y.example', 'd@y.example']);
  assert.equal(p.decision.sender, 'a@x.example');
  assert.equal(p.decision.accept, false);
  const bounce = parseLine('client=127.0.0.1:5 ip=192.0.2.1 from=<> to= reply=01:03 reason=passed');
  assert.equal(bounce.kind === 'decision' && bounce.decision.sender, '.');
  assert.equal(parseLine('client=1 reply=none reason=malformed bytes=3 detail="x"').kind, 'malformed');
  assert.equal(parseLine('sweep scanned=1 deleted=0 ms=1').kind, 'other');
  assert.equal(parseLine('client=1 ip=1.2.3.4 reply=zz').kind, 'unreadable');
});

test('networks are /24 and /48, sender domains are the part after @', () => {
  assert.equal(network('192.0.2.77'), '192.0.2.0/24');
  assert.equal(network('2001:db8:1:2::5'), '2001:db8:1::/48');
  assert.equal(network('::1'), '0:0:0::/48');
  assert.equal(senderDomain('.'), '(bounce)');
  assert.equal(senderDomain('a@b.example'), 'b.example');
  assert.equal(senderDomain('postmaster'), '(no domain)');
});

test('the recorded log gives the known answers', () => {
  const r = buildReport(lines(), { retry: 86400 });
  assert.equal(r.lines, 26);
  assert.equal(r.decisions, 19);
  assert.equal(r.malformed, 1);
  assert.equal(r.other, 5);
  assert.equal(r.unreadableCount, 1);
  assert.equal(r.unreadable[0].line, 19);
  assert.equal(r.accepted, 8);
  assert.equal(r.deferred, 11);
  assert.deepEqual(r.reasons, { 'new': 8, 'too-soon': 2, 'too-late': 1, 'passed': 3, 'known-good': 2, 'whitelisted': 1, 'verp-bounce': 1, 'store-error': 1 });
  assert.equal(r.timed, true);
  assert.ok(Math.abs(r.firstTime! - (T0 + 0.123456789)) < 1e-6);
  assert.equal(r.lastTime, T0 + 91900);
  assert.equal(r.episodes, 8);
  const who = (eps: typeof r.cameBack) => eps.map((e) => `${e.sender} ${e.rcpt}`).sort();
  assert.deepEqual(who(r.cameBack), ['alice@good.example bob@local.example', 'news@big.example bob@local.example']);
  assert.deepEqual(
    r.cameBack.map((e) => [e.ip, e.acceptedIp, e.attempts]).sort(),
    [['192.0.2.10', '192.0.2.10', 2], ['203.0.113.7', '203.0.113.8', 2]],
  );
  assert.deepEqual(who(r.cameBackLate), ['slow@slow.example bob@local.example']);
  assert.deepEqual(who(r.keptTrying), ['v6@six.example bob@local.example']);
  assert.deepEqual(who(r.neverCameBack), ['spam1@spam.example x@local.example', 'spam1@spam.example y@local.example', 'spam2@spam.example x@local.example']);
  assert.deepEqual(who(r.tooRecent), ['recent@new.example bob@local.example']);
  assert.deepEqual(r.delays.map((d) => Math.round(d)), [600, 2400, 90400]);
  assert.deepEqual(
    r.networks.map((n) => [n.key, n.deferred, n.neverPassed]),
    [['198.51.100.0/24', 3, 3], ['192.0.2.0/24', 3, 1], ['2001:db8:1::/48', 1, 1], ['203.0.113.0/24', 1, 0]],
  );
  assert.deepEqual(
    r.domains.map((n) => [n.key, n.deferred, n.neverPassed]),
    [['spam.example', 3, 3], ['new.example', 1, 1], ['six.example', 1, 1], ['big.example', 1, 0], ['good.example', 1, 0], ['slow.example', 1, 0]],
  );
});

test('--retry decides what counts as retried and what is too recent', () => {
  const r = buildReport(lines(), { retry: 1800 });
  assert.equal(r.cameBack.length, 1); // alice, 10 minutes; news came back after 40
  assert.equal(r.cameBackLate.length, 2);
  assert.equal(r.tooRecent.length, 1);
  assert.equal(r.neverCameBack.length, 3);
});

test('without stamps the delays are unknown and nothing is too recent', () => {
  const bare = lines().map((l) => l.replace(/^@[0-9a-f]{24} /, ''));
  const r = buildReport(bare, { retry: 86400 });
  assert.equal(r.timed, false);
  assert.equal(r.decisions, 19);
  assert.deepEqual(r.delays, []);
  assert.equal(r.cameBack.length, 3);
  assert.equal(r.cameBackLate.length, 0);
  assert.equal(r.tooRecent.length, 0);
  assert.equal(r.neverCameBack.length, 4);
  const text = formatReport(r);
  assert.match(text, /retry delays unknown/);
  assert.doesNotMatch(text, /^retry delays \(/m);
});

test('the text report shows the sections and a histogram', () => {
  const text = formatReport(buildReport(lines(), { retry: 86400 }));
  assert.match(text, /^qgreyd report: 19 decisions in 26 lines from 2023-11-14T22:13:20Z to 2023-11-15T23:45:00Z$/m);
  assert.match(text, /^ {2}came back within 86400 s: 2 \(1 from another address\)$/m);
  assert.match(text, /^ {2}never came back \(likely spam\): 3$/m);
  assert.match(text, /^ {2}00:40:00 203\.0\.113\.7 <news@big\.example> -> <bob@local\.example> \(accepted from 203\.0\.113\.8\)$/m);
  assert.match(text, /^ {2}10-15m {2}\|#+ +1$/m);
  assert.match(text, /^ {2}30m-1h {2}\|#+ +1$/m);
  assert.match(text, /^ {2}> 24h {3}\|#+ +1$/m);
  assert.match(text, /^ {9}3 {12}3 {2}198\.51\.100\.0\/24$/m);
  assert.equal(histogram([100, 100, 700]).filter((l) => l.includes('#')).length, 2);
});

test('stamps written by the real multilog agree with tai64nlocal', async () => {
  const dir = tempDir('qgreyd-multilog-');
  try {
    const line = 'client=127.0.0.1:1 ip=192.0.2.1 from=<a@x.example> to=<b@y.example> reply=00:01 reason=new';
    await new Promise<void>((resolve, reject) => {
      const p = spawn('multilog', ['t', join(dir, 'log')], { stdio: ['pipe', 'ignore', 'pipe'] });
      p.on('error', reject);
      p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`multilog exit ${code}`))));
      p.stdin.end(line + '\n');
    });
    const raw = readFileSync(join(dir, 'log', 'current'), 'latin1').split('\n')[0];
    assert.match(raw, /^@[0-9a-f]{24} client=/);
    const local = execFileSync('tai64nlocal', { input: raw + '\n', encoding: 'latin1' }).split('\n')[0];
    const [a, restA] = splitStamp(raw);
    const [b, restB] = splitStamp(local);
    assert.equal(restA, line);
    assert.equal(restB, line);
    assert.ok(a !== null && b !== null && Math.abs(a - b) < 1e-3, `${a} vs ${b}`);
    assert.ok(Math.abs(a - Date.now() / 1000) < 3600, 'the stamp is about now');
  } finally {
    removeDir(dir);
  }
});

test('qgreyctl report reads files and standard input alike', async () => {
  const fromFile = await ctlInProcess(['report', FIXTURE]);
  assert.equal(fromFile.code, 0, fromFile.stderr);
  const fromStdin = await ctlInProcess(['report'], { input: readFileSync(FIXTURE, 'latin1') });
  assert.equal(fromStdin.code, 0, fromStdin.stderr);
  assert.equal(fromFile.stdout, fromStdin.stdout);
  assert.match(fromFile.stdout, /never came back \(likely spam\): 3/);
  const json = await ctlInProcess(['report', '--json', '--retry', '1800', FIXTURE]);
  assert.equal((JSON.parse(json.stdout) as { cameBackLate: unknown[] }).cameBackLate.length, 2);
  const missing = await ctlInProcess(['report', '/nonexistent/current']);
  assert.equal(missing.code, 100);
  assert.match(missing.stderr, /^qgreyctl: report: cannot read \/nonexistent\/current \(ENOENT\)/);
  const badRetry = await ctlInProcess(['report', '--retry', 'soon']);
  assert.equal(badRetry.code, 100);
  assert.match(badRetry.stderr, /--retry "soon" is not a positive number of seconds/);
});

test('qgreyctl report reads what the real daemon logs', async () => {
  const dir = tempDir();
  const d = await startDaemon(['-m', '0', '127.0.0.1:0', join(dir, 'data')]);
  try {
    assert.equal(await query(d.port, '192.0.2.1', 'a@x.example', ['b@y.example', 'c@y.example']), '0001');
    assert.equal(await query(d.port, '192.0.2.1', 'A@X.example', ['B@y.example']), '0103');
    assert.equal(await query(d.port, '198.51.100.1', '', ['postmaster@y.example']), '0001');
    await d.waitForLine(/ip=198\.51\.100\.1 /);
    const r = await ctlInProcess(['report', '--json'], { input: d.lines.join('\n') + '\n' });
    assert.equal(r.code, 0, r.stderr);
    const rep = JSON.parse(r.stdout) as { decisions: number; unreadableCount: number; cameBack: unknown[]; neverCameBack: Array<{ sender: string; rcpt: string }> };
    assert.equal(rep.decisions, 3);
    assert.equal(rep.unreadableCount, 0);
    assert.equal(rep.cameBack.length, 1);
    assert.deepEqual(rep.neverCameBack.map((e) => `${e.sender} ${e.rcpt}`).sort(), ['. postmaster@y.example', 'a@x.example c@y.example']);
  } finally {
    await d.stop();
    removeDir(dir);
  }
});

// ---- greydaemon's log (test/fixtures/greydaemon.log, written as greydaemon prints: ----
// ---- "ADDR:PORT EVENT DATAGRAM", NULs as spaces, one line per recipient) ----

const GREYDAEMON = join(ROOT, 'test', 'fixtures', 'greydaemon.log');
const gdLines = () => readFileSync(GREYDAEMON, 'latin1').replace(/\n$/, '').split('\n');
const G0 = 1699776000; // 2023-11-12T08:00:00Z

test('a greydaemon line parses into client, event and the datagram fields', () => {
  const stamp = '@' + (2n ** 62n + 10n + BigInt(G0 + 700)).toString(16).padStart(16, '0') + '00000000';
  const g = parseGreydaemonLine(`${stamp} 127.0.0.1:50004 new grey I198.51.100.5 FSpam1@Spam.example Tx@local.example Tbo b@local.example  `);
  assert.ok(g !== null);
  assert.equal(g.client, '127.0.0.1:50004');
  assert.equal(g.event, 'new grey');
  assert.equal(g.time, G0 + 700);
  assert.equal(g.ip, '198.51.100.5');
  assert.equal(g.sender, 'spam1@spam.example');
  assert.deepEqual(g.rcpts, ['x@local.example', 'bob@local.example']); // spaces removed, as greydaemon keys them
  assert.equal(parseGreydaemonLine('127.0.0.1:1 new grey I192.0.2.1 F Ta@b.example  ')?.sender, '.');
  assert.equal(parseGreydaemonLine('127.0.0.1:1 bad req no I Z192.0.2.1 Fa@b  ')?.event, 'bad req');
  assert.equal(parseGreydaemonLine('started greydaemon on 127.0.0.1:1999'), null);
  assert.equal(parseGreydaemonLine('save status to save/savefile'), null);
});

test("greydaemon's per-recipient lines are joined into requests and their replies rebuilt", () => {
  const decide = (lines: string[]) => {
    const g = new GreydaemonRequests();
    const out = lines.flatMap((l) => g.line(parseGreydaemonLine(l)));
    return [...out, ...g.finish()].map((x) => (x === 'malformed' ? x : `${x.reply} ${x.reason} ${x.rcpts.length}`));
  };
  const two = 'I192.0.2.1 Fa@x.example Tb@y.example Tc@y.example  ';
  // [passing, new]: the new recipient decides
  assert.deepEqual(decide([`127.0.0.1:1 retry ok ${two}`, `127.0.0.1:1 new grey ${two}`]), ['00:01 new 2']);
  assert.deepEqual(decide([`127.0.0.1:1 retry ok ${two}`, `127.0.0.1:1 retry ok ${two}`]), ['01:03 passed 2']);
  assert.deepEqual(decide([`127.0.0.1:1 new grey ${two}`, `127.0.0.1:1 retry too soon ${two}`]), ['00:02 too-soon 2']);
  // a bounce ends the request whatever came before
  assert.deepEqual(decide([`127.0.0.1:1 new grey ${two}`, `127.0.0.1:1 bounce ${two}`]), ['01:04 verp-bounce 2']);
  // the same datagram from the same port again after a full run is another request
  const one = 'I192.0.2.1 Fa@x.example Tb@y.example  ';
  assert.deepEqual(decide([`127.0.0.1:1 new grey ${one}`, `127.0.0.1:1 retry too soon ${one}`]), ['00:01 new 1', '00:02 too-soon 1']);
  // a bad field after a recipient: greydaemon sent no reply
  const bad = 'I192.0.2.1 Fa@x.example Tb@y.example Xz  ';
  assert.deepEqual(decide([`127.0.0.1:1 new grey ${bad}`, `127.0.0.1:1 bad req no T ${bad}`]), ['malformed']);
  // a run cut short by another line is decided on what was printed
  assert.deepEqual(decide([`127.0.0.1:1 new grey ${two}`, `127.0.0.1:2 white ${one}`]), ['00:01 new 2', '01:01 whitelisted 1']);
  assert.deepEqual(decide([`127.0.0.1:2 ok ip ${one}`]), ['01:02 known-good 1']);
});

test("greydaemon's recorded log gives the known answers", () => {
  const r = buildReport(gdLines(), { retry: 86400 });
  assert.equal(r.lines, 26);
  assert.equal(r.decisions, 16);
  assert.equal(r.greydaemonDecisions, 16);
  assert.equal(r.malformed, 3);
  assert.equal(r.other, 3);
  assert.equal(r.unreadableCount, 0);
  assert.deepEqual(r.reasons, { 'new': 7, 'too-soon': 2, 'too-late': 1, 'passed': 3, 'known-good': 1, 'whitelisted': 1, 'verp-bounce': 1 });
  assert.equal(r.firstTime, G0);
  const who = (eps: typeof r.cameBack) => eps.map((e) => `${e.sender} ${e.rcpt} ${e.ip}>${e.acceptedIp ?? '-'}`).sort();
  assert.deepEqual(who(r.cameBack), [
    'alice@good.example bob@local.example 192.0.2.10>192.0.2.10',
    'news@big.example bob@local.example 203.0.113.7>203.0.113.8',
    'slow@slow.example bob@local.example 192.0.2.30>192.0.2.30',
  ]);
  assert.deepEqual(r.delays, [600, 2400, 47160]);
  assert.deepEqual(r.days, [{ day: '2023-11-12', start: G0 - 8 * 3600, decisions: 16, accepted: 6, deferred: 10, episodes: 8, cameBack: 3, greydaemon: 16 }]);
  assert.match(formatReport(r), /^qgreyd report: 16 decisions \(16 from greydaemon's log\) in 26 lines/m);
});

test('per hour and per day: the recorded qgreyd log', () => {
  const r = buildReport(lines(), { retry: 86400 });
  assert.deepEqual(
    r.hours.map((h) => [new Date(h.start * 1000).toISOString().slice(0, 13), h.accepted, h.deferred]),
    [['2023-11-14T22', 4, 9], ['2023-11-14T23', 2, 0], ['2023-11-15T23', 2, 2]],
  );
  assert.deepEqual(
    r.days.map((d) => [d.day, d.decisions, d.accepted, d.deferred, d.episodes, d.cameBack, d.greydaemon]),
    [['2023-11-14', 15, 6, 9, 7, 2, 0], ['2023-11-15', 4, 2, 2, 1, 0, 0]],
  );
  assert.deepEqual(r.senders.slice(0, 2).map((s) => [s.key, s.deferred, s.neverPassed]), [['spam1@spam.example', 2, 2], ['recent@new.example', 1, 1]]);
});

test('the text report ends with the per-day table, saying which daemon wrote each day', () => {
  const text = formatReport(buildReport([...gdLines(), ...lines()], { retry: 86400 }));
  const table = text.slice(text.indexOf('per day (UTC):'));
  assert.deepEqual(table.trimEnd().split('\n'), [
    'per day (UTC):',
    '  day        decisions accepted deferred deferred% msgs-deferred came-back  log',
    '  2023-11-12        16        6       10      62.5             8         3  greydaemon',
    '  2023-11-14        15        6        9      60.0             4         2  qgreyd',
    '  2023-11-15         4        2        2      50.0             1         0  qgreyd',
  ]);
  assert.match(text, /^top deferred senders:$/m);
  const mixed = buildReport(['127.0.0.1:1 new grey I192.0.2.1 Fa@x.example Tb@y.example  ', 'client=1 ip=192.0.2.1 from=<a@x.example> to=<b@y.example> reply=01:03 reason=passed'].map((l) => `@4000000065540222075bcd15 ${l}`));
  assert.match(formatReport(mixed), /^ {2}2023-11-14 .* both$/m);
});

test('the HTML page escapes what came off the wire', () => {
  const r = buildReport(['@4000000065540222075bcd15 client=1 ip=192.0.2.1 from=<"\\x3cscript\\x3ealert(1)\\x3c/script\\x3e"@x.example> to=<b@y.example> reply=00:01 reason=new']);
  const page = formatHtml(r);
  assert.doesNotMatch(page, /<script/i);
  assert.match(page, /\\x3cscript\\x3ealert\(1\)\\x3c\/script\\x3e/);
});

test('qgreyctl report --html: to a file or standard output, and the errors it names', async () => {
  const dir = tempDir('qgreyd-html-cli-');
  try {
    const page = join(dir, 'r.html');
    const r = await ctlInProcess(['report', '--html', page, FIXTURE]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(page, 'latin1'), (await ctlInProcess(['report', '--html', '-', FIXTURE])).stdout);
    assert.match(readFileSync(page, 'latin1'), /^<!DOCTYPE html>/);
    assert.deepEqual(readdirSync(dir), ['r.html'], 'no temporary file left behind');
    const noDir = await ctlInProcess(['report', '--html', join(dir, 'missing', 'r.html'), FIXTURE]);
    assert.equal(noDir.code, 100);
    assert.match(noDir.stderr, /^qgreyctl: report: cannot write .*\/missing\/r\.html \(ENOENT\); give --html a file in a writable directory/);
    const empty = await ctlInProcess(['report', '--html', '', FIXTURE]);
    assert.equal(empty.code, 100);
    assert.match(empty.stderr, /--html needs a file name/);
    const both = await ctlInProcess(['report', '--html', page, '--json', FIXTURE]);
    assert.equal(both.code, 100);
    assert.match(both.stderr, /give --json or --html, not both/);
  } finally {
    removeDir(dir);
  }
});

test('the HTML charts stay bounded when a stray stamp is years away', () => {
  const at = (t: number) => '@' + (2n ** 62n + 10n + BigInt(t)).toString(16).padStart(16, '0') + '00000000 client=1 ip=192.0.2.1 from=<a@x.example> to=<b@y.example> reply=00:01 reason=new';
  const r = buildReport([at(1000), at(T0)]);
  const page = formatHtml(r);
  const hourBars = page.slice(page.indexOf('<figure id="per-hour">'), page.indexOf('<figure id="per-day">')).match(/<rect /g) ?? [];
  assert.equal(hourBars.length, 1);
  assert.match(page, /Decisions per hour \(the last 62 days\)/);
  assert.match(page, /Decisions per day \(chart: the last 400 days\)/);
  assert.equal((page.match(/<tr>/g) ?? []).length, 3, 'the table keeps both days');
});

test('with --normalise-senders a message is counted by the sender as keyed (key-from), so a BATV retry closes its deferral', () => {
  const r = buildReport([
    'client=127.0.0.1:5 ip=192.0.2.10 from=<prvs=1111aaaa=bob@sender.example> to=<ann@here.example> reply=00:01 reason=new key-from=<bob@sender.example>',
    'client=127.0.0.1:5 ip=192.0.2.77 from=<prvs=2222bbbb=bob@sender.example> to=<ann@here.example> reply=01:03 reason=passed net=192.0.2.0/24 key-from=<bob@sender.example>',
  ]);
  assert.deepEqual(r.cameBack.map((e) => `${e.sender} ${e.rcpt} ${e.ip} ${e.acceptedIp}`), ['bob@sender.example ann@here.example 192.0.2.10 192.0.2.77']);
  assert.equal(r.neverCameBack.length, 0);
});
