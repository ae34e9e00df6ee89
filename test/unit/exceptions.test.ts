// --exceptions: recipients that are never greylisted.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Exceptions, ExceptionsError } from '../../src/exceptions.js';

const FILE = `# never greylisted
postmaster@
Abuse@Example.ORG     # one address
@lists.example        # a whole domain
@.corp.example        # its subdomains
`;

describe('exceptions', () => {
  const ex = Exceptions.parse(FILE, 'exc');

  it('matches local parts at every domain, addresses, domains and subdomains, ignoring case', () => {
    assert.equal(ex.size, 4);
    assert.equal(ex.match('postmaster@example.com')?.line, 2);
    assert.equal(ex.match('PostMaster@other.example')?.line, 2);
    assert.equal(ex.match('postmaster')?.line, 2);
    assert.equal(ex.match('abuse@example.org')?.line, 3);
    assert.equal(ex.match('anyone@lists.example')?.line, 4);
    assert.equal(ex.match('bob@hr.corp.example')?.line, 5);
    assert.equal(ex.match('bob@a.b.corp.example')?.line, 5);
  });

  it('does not match what it does not name', () => {
    for (const r of ['abuse@example.com', 'bob@corp.example', 'bob@sub.lists.example', 'postmasterx@example.com', 'bob@example.org', '']) {
      assert.equal(ex.match(r), undefined, r);
    }
    assert.equal(Exceptions.empty().match('postmaster@example.com'), undefined);
  });

  it('names file and line for a bad line', () => {
    for (const [line, why] of [
      ['example.org', /needs exactly one @/],
      ['a@b@c', /needs exactly one @/],
      ['@', /names nothing/],
      ['@bad_domain!', /not a domain name/],
      ['user@-bad.example', /bad domain/],
    ] as const) {
      assert.throws(() => Exceptions.parse(`postmaster@\n${line}\n`, 'exc'), (e: Error) => e instanceof ExceptionsError && /^exceptions exc:2: /.test(e.message) && why.test(e.message));
    }
  });

  it('loads a file and says when it cannot', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qgreyd-exc-'));
    try {
      writeFileSync(join(dir, 'e'), FILE);
      assert.equal(Exceptions.load(join(dir, 'e')).size, 4);
      assert.throws(() => Exceptions.load(join(dir, 'missing')), /exceptions .*missing: cannot read it \(ENOENT\)/);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
});
