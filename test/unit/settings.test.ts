// The settings table (src/cli/settings.ts) against every place that restates it: --help, the
// daemontools run script, the README's options table and the env/ table of docs/operations.md.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DEFAULT_CACHE_SIZE, DEFAULT_PORT, DEFAULT_STATE, USAGE } from '../../src/cli/args.js';
import { SETTINGS } from '../../src/cli/settings.js';
import { ROOT } from '../helpers.js';

const read = (...p: string[]): string => readFileSync(join(ROOT, ...p), 'utf8');
const flags = SETTINGS.filter((s) => !('positional' in s));

test('the run script reads every env/ file, clears it first, and turns it into its flag', () => {
  const run = read('supervise', 'qgreyd', 'run');
  const header = run.split('\n').filter((l) => l.startsWith('#   ')).join(' ');
  const unset = run.split('\n').filter((l) => l.startsWith('unset ')).join(' ').split(/\s+/);
  for (const s of SETTINGS) {
    assert.match(header, new RegExp(`\\b${s.env}\\b`), `the header lists ${s.env}`);
    assert.ok(unset.includes(s.env), `run unsets ${s.env}`);
    assert.match(run, new RegExp(`\\$${s.env}\\b|\\$\\{${s.env}[:}]`), `run reads $${s.env}`);
  }
  const viaEnvironment: string[] = [];
  for (const s of flags) {
    if ('environment' in s) {
      // in qgreyd's environment, never on its command line, and cleared from svscan's first
      assert.match(run, new RegExp(`\\b${s.environment}=\\$${s.env}\\b`), `run hands $${s.env} over as ${s.environment}`);
      assert.match(run, new RegExp(`export ${s.environment}\\b`), `run exports ${s.environment}`);
      assert.ok(unset.includes(s.environment), `run unsets ${s.environment}`);
      viaEnvironment.push(s.environment);
      continue;
    }
    const flag = 'short' in s ? `-${s.short}` : `--${s.name}`;
    assert.match(run, new RegExp(`set -- "\\$@" ${flag}\\b`), `run passes ${flag} for ${s.env}`);
  }
  assert.equal(new Set(unset.filter((w) => /^[A-Z_0-9]+$/.test(w))).size, SETTINGS.length + viaEnvironment.length, 'and nothing else');
});

test('--help names every flag, and the numeric defaults from the table', () => {
  for (const s of flags) {
    const line = USAGE.split('\n').find((l) => l.includes(`--${s.name}`) && /^\s+(-\w, )?--/.test(l));
    assert.ok(line !== undefined, `--help has a line for --${s.name}`);
    if ('short' in s) assert.match(line, new RegExp(`-${s.short}, --${s.name}`));
    if ('default' in s && 'unit' in s) assert.match(line, new RegExp(`\\(${s.default}\\)`), `--help gives --${s.name}'s default ${s.default}`);
  }
  assert.equal(DEFAULT_PORT, SETTINGS.find((s) => s.env === 'PORT')?.default);
  assert.equal(DEFAULT_CACHE_SIZE, SETTINGS.find((s) => s.env === 'CACHE_SIZE')?.default);
  assert.equal(DEFAULT_STATE, SETTINGS.find((s) => s.env === 'STATE')?.conf);
});

test("the README's options table has a row for every flag, with the table's unit and default", () => {
  const rows = read('README.md').split('\n').filter((l) => l.startsWith('| `-'));
  for (const s of flags) {
    const row = rows.find((r) => r.split('|')[1].includes(`\`--${s.name}\``));
    assert.ok(row !== undefined, `README has a row for --${s.name}`);
    const cells = row.split('|').map((c) => c.trim());
    if ('short' in s) assert.match(cells[1], new RegExp(`\`-${s.short}\``));
    if ('unit' in s) assert.equal(cells[3], s.unit, `--${s.name}'s unit`);
    if ('default' in s && 'unit' in s) assert.equal(cells[4], String(s.default), `--${s.name}'s default`);
  }
});

test("docs/operations.md's env/ table has a row for every file, naming its flag and what qgreyd-conf writes", () => {
  const rows = read('docs', 'operations.md').split('\n').filter((l) => /^\| `[A-Z_0-9]+`/.test(l));
  for (const s of SETTINGS) {
    const row = rows.find((r) => r.split('|')[1].includes(`\`${s.env}\``));
    assert.ok(row !== undefined, `docs/operations.md has a row for ${s.env}`);
    const cells = row.split('|').map((c) => c.trim());
    if (!('positional' in s)) assert.ok(cells[2].includes(`\`--${s.name}\``) || ('short' in s && cells[2].includes(`\`-${s.short}\``)), `${s.env} names its flag`);
    if (s.conf !== '' && s.env !== 'STATE') assert.equal(cells[4], `\`${s.conf}\``, `${s.env}: what qgreyd-conf writes`);
    if (s.conf === '' && !['IP', 'PORT', 'USER'].includes(s.env)) assert.equal(cells[4], 'empty', `${s.env}: qgreyd-conf leaves it empty`);
  }
});
