import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'qgreyctl');

test('each qgreyctl command module can be imported without anything running', async () => {
  const modules = readdirSync(DIR).filter((f) => f.endsWith('.js'));
  assert.ok(modules.length >= 12, `the command modules are there (${modules.join(', ')})`);
  const listeners = process.stdout.listenerCount('error');
  const written: string[] = [];
  const out = process.stdout.write.bind(process.stdout);
  const err = process.stderr.write.bind(process.stderr);
  // the test runner reports through stdout in Buffers; a module would write text
  process.stdout.write = ((s: unknown) => (typeof s === 'string' && written.push(s), true)) as typeof process.stdout.write;
  process.stderr.write = ((s: unknown) => (typeof s === 'string' && written.push(s), true)) as typeof process.stderr.write;
  try {
    for (const f of modules) {
      const m = (await import(join(DIR, f))) as Record<string, unknown>;
      assert.ok(Object.keys(m).length > 0, `${f} exports something`);
      if (!['shared.js', 'help.js', 'main.js', 'io.js'].includes(f)) assert.ok(Object.values(m).some((v) => typeof v === 'function' && /^cmd/.test((v as () => void).name)), `${f} exports its command`);
    }
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
  assert.deepEqual(written, [], 'nothing written');
  assert.equal(process.stdout.listenerCount('error'), listeners, 'no handler installed on stdout');
  assert.equal(process.exitCode, undefined, 'no exit code set');
});

test('no command touches the process but through its CtlIo: no exit, no process streams, no environment', () => {
  // what lets ctlInProcess run every command inside a test; io.ts's processIo is the program's
  for (const f of readdirSync(DIR).filter((x) => x.endsWith('.js') && x !== 'io.js')) {
    const text = readFileSync(join(DIR, f), 'utf8');
    assert.doesNotMatch(text, /process\.(exit|stdout|stderr|stdin|env|exitCode|chdir|umask|set[ug]id)\b/, f);
  }
});
