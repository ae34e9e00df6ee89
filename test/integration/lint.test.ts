// The linter runs with the tests: eslint with typescript-eslint, the rule set in
// eslint.config.js, no warnings allowed.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from '../helpers.js';

describe('lint', () => {
  it('eslint finds nothing in src, test and bench', () => {
    const r = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'eslint', 'bin', 'eslint.js'), '--max-warnings', '0', 'src', 'test', 'bench'], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });
});
