// The policy options on qgreyd's command line: off by default, values checked.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseArgs, UsageError } from '../../src/cli/args.js';

function run(argv: string[]) {
  const p = parseArgs(argv);
  assert.equal(p.kind, 'run');
  return p.kind === 'run' ? p.options : assert.fail();
}

test('with none given, every policy option is off (greydaemon-exact keys and verdicts)', () => {
  const o = run([]);
  assert.deepEqual(o.prefixes, { v4: 32, v6: 128 });
  assert.equal(o.normaliseSenders, false);
  assert.equal(o.exceptions, null);
  assert.equal(o.maxPending, null);
  assert.deepEqual(o.whitelist, []);
});

test('each policy option is read; -w repeats', () => {
  const o = run(['--ipv4-prefix', '24', '--ipv6-prefix', '64', '--normalise-senders', '--exceptions', 'exc', '--max-pending', '5000', '-w', 'a', '--whitelist', 'b.d']);
  assert.deepEqual(o.prefixes, { v4: 24, v6: 64 });
  assert.equal(o.normaliseSenders, true);
  assert.equal(o.exceptions, 'exc');
  assert.equal(o.maxPending, 5000);
  assert.deepEqual(o.whitelist, ['a', 'b.d']);
});

test('bad values are named with what to give', () => {
  const bad = (argv: string[], re: RegExp) => assert.throws(() => parseArgs(argv), (e: unknown) => e instanceof UsageError && re.test(e.message));
  bad(['--ipv4-prefix', '7'], /--ipv4-prefix: 7 is out of range; give a prefix length from 8 to 32/);
  bad(['--ipv6-prefix', '/64'], /--ipv6-prefix: "\/64" is not a prefix length/);
  bad(['--max-pending', '0'], /--max-pending: "0" is not a positive whole number/);
  bad(['--exceptions', ''], /--exceptions: needs a file name/);
  bad(['-w', 'a', '-w', ''], /-w \(--whitelist\): needs a file or directory name/);
});
