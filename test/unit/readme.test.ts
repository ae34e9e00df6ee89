// The user documentation stays usable: a README an admin can read (at most ~300 lines), links
// that lead somewhere, and no project history (issue numbers, "first cut", "tried") in it.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from '../helpers.js';

const README_MAX_LINES = 300;

function userDocs(): string[] {
  const docs = join(ROOT, 'docs');
  const files = [join(ROOT, 'README.md')];
  if (existsSync(docs)) {
    for (const f of readdirSync(docs).sort()) if (f.endsWith('.md')) files.push(join(docs, f));
  }
  return files;
}

/** Text outside fenced code blocks (``` or ~~~), with line numbers kept. */
function prose(text: string): string[] {
  let fenced = false;
  return text.split('\n').map((line) => {
    if (/^\s*(```|~~~)/.test(line)) {
      fenced = !fenced;
      return '';
    }
    return fenced ? '' : line;
  });
}

/** GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens, -N for repeats. */
function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const line of prose(text)) {
    const m = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const slug = m[1]
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/ /g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    out.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return out;
}

/** Markdown links `[text](target)` in prose; inline code spans are not links. */
function links(text: string): { line: number; target: string }[] {
  const out: { line: number; target: string }[] = [];
  prose(text).forEach((raw, i) => {
    const line = raw.replace(/`[^`]*`/g, (code) => ' '.repeat(code.length));
    for (const m of line.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) out.push({ line: i + 1, target: m[1] });
  });
  return out;
}

/** Lines that tell the project's history or point at its issue tracker. */
function historyLines(text: string): { line: number; text: string }[] {
  const patterns = [
    /\bissues?\s+#?\d+/i,
    /(^|[\s([,;])#\d+(?![\w-]|\.\d)/, // "#12" as an issue reference; not "(#4.3.0)" nor "(#1-who-may-ask)"
    /\bfirst cut\b/i,
    /tried and reverted/i,
    /next steps \(not done\)/i,
    /targets \(issue/i,
  ];
  const out: { line: number; text: string }[] = [];
  text.split('\n').forEach((line, i) => {
    if (patterns.some((p) => p.test(line))) out.push({ line: i + 1, text: line });
  });
  return out;
}

function checkLinks(file: string): string[] {
  const problems: string[] = [];
  const text = readFileSync(file, 'utf8');
  for (const { line, target } of links(text)) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto: — not ours to check
    const [path, anchor] = target.split('#', 2) as [string, string | undefined];
    const where = `${relative(ROOT, file)}:${line}: ${target}`;
    const dest = path === '' ? file : resolve(dirname(file), decodeURIComponent(path));
    if (!existsSync(dest)) {
      problems.push(`${where}: no such file`);
      continue;
    }
    if (anchor === undefined) continue;
    if (!statSync(dest).isFile() || !dest.endsWith('.md')) {
      problems.push(`${where}: an anchor into a file that is not Markdown`);
      continue;
    }
    if (!anchors(readFileSync(dest, 'utf8')).has(anchor)) problems.push(`${where}: no heading with that anchor`);
  }
  return problems;
}

describe('README and docs', () => {
  it(`README.md has at most ${README_MAX_LINES} lines`, () => {
    const lines = readFileSync(join(ROOT, 'README.md'), 'utf8').replace(/\n$/, '').split('\n').length;
    assert.ok(lines <= README_MAX_LINES, `README.md has ${lines} lines; move detail to a file under docs/ and link it`);
  });

  it('every relative link in README.md and docs/*.md leads to a file and heading that exist', () => {
    const problems = userDocs().flatMap(checkLinks);
    assert.deepEqual(problems, []);
  });

  it('README.md and docs/*.md tell no project history (issue numbers, "first cut", "tried")', () => {
    const found = userDocs().flatMap((f) => historyLines(readFileSync(f, 'utf8')).map((h) => `${relative(ROOT, f)}:${h.line}: ${h.text.trim()}`));
    assert.deepEqual(found, []);
  });

  it('the checks themselves catch what they are for', () => {
    // anchors as GitHub makes them, so the link check accepts exactly what GitHub resolves
    const a = anchors('# qgreyd\n## 1. Who may ask: `--allow`\n## Log format\n## Log format\n```\n# not a heading\n```\n');
    assert.deepEqual([...a], ['qgreyd', '1-who-may-ask---allow', 'log-format', 'log-format-1']);
    assert.deepEqual(
      links('see [a](docs/x.md#y) and `[b](not-a-link)`\n```\n[c](nor-this)\n```\n[d](#z)').map((l) => l.target),
      ['docs/x.md#y', '#z'],
    );
    for (const bad of ['fixed in issue 15', 'see #12.', 'the first cut was slow', 'Tried and reverted: x', '### Next steps (not done)', '### Targets (issue 6)']) {
      assert.equal(historyLines(bad).length, 1, bad);
    }
    for (const good of ['451 greylist temporary failure (#4.3.0)', 'see [Who may ask](#1-who-may-ask---allow)', '# stop greydaemon first', 'a first cutover']) {
      assert.deepEqual(historyLines(good), [], good);
    }
  });
});
