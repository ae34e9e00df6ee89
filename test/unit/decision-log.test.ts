import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatDecisionLine, formatMalformedLine, LOG_RECIPIENTS, parseDecisionLine, type DecisionFields } from '../../src/decision-log.js';
import { parseLine } from '../../src/report/report.js';

// every byte a latin1 address can hold, delimiters of the log format among them
const nasty = 'a<b>c,d"e\\f g\x00\x0a\x0d\xff@x.example';

test('a decision line round-trips: what the daemon writes is what the report reads', () => {
  const cases: DecisionFields[] = [
    { client: '127.0.0.1:5', ip: '192.0.2.1', envelope: { sender: 'a@x.example', recipients: ['b@y.example'] }, reply: '00:01', reason: 'new' },
    { client: '[::1]:7', ip: '2001:db8::1', envelope: { sender: '', recipients: [''] }, reply: '01:04', reason: 'verp-bounce' },
    { client: '127.0.0.1:5', ip: 'unknown', envelope: { sender: nasty, recipients: [nasty, 'c@y.example'] }, reply: '01:03', reason: 'passed',
      net: '192.0.2.0/24', keyFrom: 'a@x.example', whitelist: { file: '/etc/w l', line: 3 }, exception: { file: 'ex', line: 9 } },
    { client: '127.0.0.1:5', ip: '192.0.2.9', reply: '01:01', reason: 'store-error', error: 'disk "full"\n' },
  ];
  for (const f of cases) {
    const line = formatDecisionLine(f);
    assert.ok(!/[\n\r]/.test(line), 'one line');
    const p = parseDecisionLine(line);
    assert.equal(p.kind, 'decision', line);
    if (p.kind !== 'decision') continue;
    assert.equal(p.line.client, f.client);
    assert.equal(p.line.ip, f.ip);
    assert.equal(p.line.sender, f.envelope?.sender);
    assert.deepEqual(p.line.recipients, f.envelope === undefined ? [] : [...f.envelope.recipients]);
    assert.equal(p.line.more, 0);
    assert.equal(p.line.reply, f.reply);
    assert.equal(p.line.reason, f.reason);
    assert.equal(p.line.keyFrom, f.keyFrom);
  }
});

test('recipients past the shown ones are counted, not lost silently', () => {
  const recipients = Array.from({ length: LOG_RECIPIENTS + 7 }, (_, i) => `r${i}@y.example`);
  const p = parseDecisionLine(formatDecisionLine({ client: 'c:1', ip: '192.0.2.1', envelope: { sender: 's@x', recipients }, reply: '00:01', reason: 'new' }));
  assert.ok(p.kind === 'decision');
  assert.deepEqual(p.line.recipients, recipients.slice(0, LOG_RECIPIENTS));
  assert.equal(p.line.more, 7);
});

test('the report reads the formatter\'s line: keyed sender, lower case, spaces removed', () => {
  const line = formatDecisionLine({ client: '127.0.0.1:5', ip: '192.0.2.1', envelope: { sender: 'A+tag@X.example', recipients: ['B C@Y.example'] },
    reply: '00:01', reason: 'new', keyFrom: 'A@X.example' });
  const r = parseLine('@4000000065540222075bcd15 ' + line);
  assert.ok(r.kind === 'decision');
  assert.equal(r.decision.sender, 'a@x.example');
  assert.deepEqual(r.decision.rcpts, ['bc@y.example']);
  assert.equal(r.decision.accept, false);
});

test('malformed lines are told apart from decisions and from other lines', () => {
  assert.equal(parseDecisionLine(formatMalformedLine('127.0.0.1:5', '192.0.2.1', 3, 'field 4 "x"')).kind, 'malformed');
  assert.equal(parseDecisionLine(formatMalformedLine('127.0.0.1:5', undefined, 3, 'x')).kind, 'malformed');
  assert.equal(parseDecisionLine('sweep scanned=1 deleted=0 ms=1').kind, 'other');
  assert.equal(parseDecisionLine('client=1 ip=1.2.3.4 reply=zz reason=x').kind, 'unreadable');
});
