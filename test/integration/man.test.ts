// The man pages: they render without warnings, have the sections an admin looks for, and
// name every option the programs' --help lists (so a new option cannot be left out).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from '../helpers.js';

const PAGES = [
  { page: 'qgreyd.8', program: 'qgreyd', sections: ['SIGNALS'] },
  { page: 'qgreyctl.8', program: 'qgreyctl', sections: [] },
  { page: 'qgreyd-conf.8', program: 'qgreyd-conf', sections: [] },
] as const;
const COMMON = ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'OPTIONS', 'FILES', 'EXIT STATUS', 'EXAMPLES', 'SEE ALSO'];

const haveGroff = spawnSync('groff', ['--version'], { encoding: 'utf8' }).status === 0;
if (!haveGroff && process.env.QGREYD_REQUIRE_GROFF === '1') {
  throw new Error('groff is not installed but QGREYD_REQUIRE_GROFF=1: apt-get install groff-base');
}

/** the page's text with roff's escaped minus signs made plain */
function source(page: string): string {
  return readFileSync(join(ROOT, 'man', page), 'utf8').replace(/\\-/g, '-');
}

function helpText(program: string, args: string[] = ['--help']): string {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'src', 'cli', `${program}.js`), ...args], { encoding: 'utf8' });
  return r.stdout + r.stderr;
}

describe('man pages', () => {
  for (const { page, program, sections } of PAGES) {
    it(`${page} renders with groff -man -ww without a warning`, { skip: haveGroff ? false : 'groff is not installed (apt-get install groff-base)' }, () => {
      const r = spawnSync('groff', ['-man', '-Tutf8', '-ww', '-z', join(ROOT, 'man', page)], { encoding: 'utf8' });
      assert.equal(r.status, 0);
      assert.equal(r.stderr, '');
    });

    it(`${page} has the usual sections`, () => {
      const src = source(page);
      for (const s of [...COMMON, ...sections]) {
        assert.match(src, new RegExp(`^\\.SH "?${s}"?$`, 'm'), `${page} lacks the section ${s}`);
      }
    });

    it(`${page} names every option of ${program} --help`, () => {
      let help = helpText(program);
      if (program === 'qgreyctl') {
        const commands = [...help.matchAll(/^ {2}([a-z]+)/gm)].map((m) => m[1]);
        for (const c of commands) help += helpText(program, [c, '--help']);
      }
      // every page documents --help, whether or not the usage text mentions it
      const options = new Set(['--help', ...[...help.matchAll(/(?<![\w-])--[a-z][a-z0-9-]*/g)].map((m) => m[0])]);
      const src = source(page);
      const missing = [...options].filter((o) => !new RegExp(`(?<![\\w-])${o}(?![\\w-])`).test(src));
      assert.deepEqual(missing, [], `${page} does not mention ${missing.join(', ')}`);
    });
  }

  it('package.json lists the pages', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { man?: string[]; files?: string[] };
    assert.deepEqual(pkg.man, PAGES.map((p) => `man/${p.page}`));
    assert.ok(pkg.files?.includes('man'));
  });
});
