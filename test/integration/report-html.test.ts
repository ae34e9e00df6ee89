// qgreyctl report --html: the page the real qgreyctl writes, opened in headless Chromium. The
// DOM Chromium dumps after rendering must hold the charts' elements with the fixture's known
// figures, and its screenshot must show each chart's bars in its own colours, in page order.
// Without chromium the tests skip, saying so; with QGREYD_REQUIRE_CHROMIUM=1 (CI) they fail.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { accessSync, constants, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { COLOURS, formatHtml } from '../../src/report/html.js';
import { buildReport } from '../../src/report/report.js';
import { ctl } from '../ctl-helpers.js';
import { ROOT, removeDir, tempDir } from '../helpers.js';
import { decodePng, type Image } from '../png.js';

const QGREYD_LOG = join(ROOT, 'test', 'fixtures', 'report.log');
const GREYDAEMON_LOG = join(ROOT, 'test', 'fixtures', 'greydaemon.log');

function executable(f: string): boolean {
  try {
    accessSync(f, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** QGREYD_CHROMIUM names the browser to use (and, set to a missing file, rehearses its absence). */
function findChromium(): string | null {
  const forced = process.env.QGREYD_CHROMIUM;
  if (forced !== undefined) return executable(forced) ? forced : null;
  const dirs = ['/usr/bin', ...(process.env.PATH ?? '').split(delimiter)];
  for (const d of dirs) {
    for (const name of ['chromium', 'chromium-browser']) if (executable(join(d, name))) return join(d, name);
  }
  return null;
}

const CHROMIUM = findChromium();

function needChromium(t: TestContext): string | null {
  if (CHROMIUM !== null) return CHROMIUM;
  if (process.env.QGREYD_REQUIRE_CHROMIUM === '1') assert.fail('chromium is not installed and QGREYD_REQUIRE_CHROMIUM=1: apt-get install chromium');
  t.skip('chromium is not installed (apt-get install chromium); the HTML report was not rendered. Set QGREYD_REQUIRE_CHROMIUM=1 to make this a failure');
  return null;
}

/** Runs headless Chromium on a file; stdout is what --dump-dom prints. */
function chromium(bin: string, dir: string, args: string[], page: string): Promise<string> {
  return new Promise((resolve, reject) => {
    // --no-sandbox: the tests run as root; a profile of its own per run, so parallel runs
    // do not fight over the default profile's lock
    const p = spawn(bin, ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', `--user-data-dir=${join(dir, 'profile')}`, ...args, `file://${page}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.setEncoding('utf8');
    p.stdout.on('data', (c: string) => (out += c));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    // a hang guard, not a speed assertion
    const guard = setTimeout(() => p.kill('SIGKILL'), 90_000);
    p.on('error', reject);
    p.on('exit', (code, signal) => {
      clearTimeout(guard);
      if (code === 0) resolve(out);
      else reject(new Error(`chromium exited ${code ?? signal}: ${err.slice(-2000)}`));
    });
  });
}

async function screenshot(bin: string, dir: string, page: string): Promise<Image> {
  const png = join(dir, 'shot.png');
  await chromium(bin, dir, [`--screenshot=${png}`, '--window-size=1000,1700'], page);
  return decodePng(readFileSync(png));
}

function section(dom: string, id: string): string {
  const m = new RegExp(`<figure id="${id}">([\\s\\S]*?)</figure>`).exec(dom);
  assert.ok(m, `no <figure id="${id}"> in the rendered DOM`);
  return m[1];
}

const count = (s: string, re: RegExp) => (s.match(re) ?? []).length;

/** Per colour: how many pixels, and the middle row of those pixels. */
function colourStats(img: Image): Map<number, { n: number; rows: number[] }> {
  const m = new Map<number, { n: number; rows: number[] }>();
  for (let i = 0; i < img.rgb.length; i++) {
    const c = img.rgb[i];
    let s = m.get(c);
    if (!s) m.set(c, (s = { n: 0, rows: [] }));
    s.n++;
    s.rows.push(Math.floor(i / img.width));
  }
  return m;
}

const hex = (c: string) => parseInt(c.slice(1), 16);

test('qgreyctl report --html: the rendered page holds every chart with the known figures', async (t) => {
  const bin = needChromium(t);
  if (bin === null) return;
  const dir = tempDir('qgreyd-html-');
  try {
    const page = join(dir, 'report.html');
    const r = await ctl(['report', '--html', page, GREYDAEMON_LOG, QGREYD_LOG]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^per day \(UTC\):$/m, 'the text report still goes to stdout');
    const source = readFileSync(page, 'utf8');
    // self-contained: nothing to fetch, nothing to run
    assert.doesNotMatch(source, /<script|\ssrc=|\shref=|url\(|@import/i);
    assert.equal(count(source, /https?:\/\//g), count(source, /xmlns="http:\/\/www\.w3\.org\/2000\/svg"/g));

    const dom = await chromium(bin, dir, ['--dump-dom'], page);
    const hour = section(dom, 'per-hour');
    // hours with accepted / deferred decisions in the two fixtures
    assert.equal(count(hour, /<rect class="bar accepted"/g), 6);
    assert.equal(count(hour, /<rect class="bar deferred"/g), 4);
    assert.match(hour, /<title>2023-11-12 08:00Z: deferred 6<\/title>/);
    assert.match(hour, /<title>2023-11-14 22:00Z: deferred 9<\/title>/);
    const day = section(dom, 'per-day');
    assert.equal(count(day, /<rect class="bar accepted"/g), 3);
    assert.match(day, /<title>2023-11-12: deferred 10<\/title>/);
    assert.match(day, />11-13<\/text>/, 'a day without decisions keeps its place on the axis');
    const rows = [...day.matchAll(/<tr>(.*?)<\/tr>/g)].map((m) => m[1].replace(/<[^>]+>/g, ' ').trim().split(/\s+/).join(' '));
    assert.deepEqual(rows.slice(1), [
      '2023-11-12 16 6 10 62.5 8 3 greydaemon',
      '2023-11-14 15 6 9 60.0 4 2 qgreyd',
      '2023-11-15 4 2 2 50.0 1 0 qgreyd',
    ]);
    const delays = section(dom, 'retry-delays');
    assert.equal(count(delays, /<text class="tick"/g), 10);
    assert.deepEqual([...delays.matchAll(/<title>([^<]+)<\/title>/g)].map((m) => m[1]), ['10-15m: delays 2', '30m-1h: delays 2', '12-24h: delays 1', '&gt; 24h: delays 1']);
    const nets = section(dom, 'top-networks');
    assert.deepEqual([...nets.matchAll(/<text class="label"[^>]*>([^<]+)</g)].map((m) => m[1]), ['192.0.2.0/24', '198.51.100.0/24', '203.0.113.0/24', '2001:db8:1::/48']);
    const senders = section(dom, 'top-senders');
    assert.equal(count(senders, /<rect class="bar deferred"/g), 8);
    assert.match(senders, /<title>spam1@spam\.example: never passed 2<\/title>/);
    assert.match(dom, /35 decisions, 16 of them from greydaemon's log in 52 lines/);
  } finally {
    removeDir(dir);
  }
});

test('qgreyctl report --html: the screenshot shows each chart drawn, in page order', async (t) => {
  const bin = needChromium(t);
  if (bin === null) return;
  const dir = tempDir('qgreyd-html-');
  try {
    const page = join(dir, 'report.html');
    const r = await ctl(['report', '--html', page, GREYDAEMON_LOG, QGREYD_LOG]);
    assert.equal(r.code, 0, r.stderr);
    const img = await screenshot(bin, dir, page);
    assert.equal(img.width, 1000);
    const stats = colourStats(img);
    const white = stats.get(0xffffff)?.n ?? 0;
    assert.ok(stats.size > 100, `only ${stats.size} distinct colours: a blank or unstyled page`);
    assert.ok(img.rgb.length - white > 40_000, `only ${img.rgb.length - white} non-white pixels`);
    // a legend swatch is 10x10 pixels: more than 300 pixels of a colour means its bars are drawn
    const order: Array<[string, string]> = [
      ['hourAccepted', COLOURS.hourAccepted],
      ['hourDeferred', COLOURS.hourDeferred],
      ['dayAccepted', COLOURS.dayAccepted],
      ['dayDeferred', COLOURS.dayDeferred],
      ['delays', COLOURS.delays],
      ['netNeverPassed', COLOURS.netNeverPassed],
      ['senderNeverPassed', COLOURS.senderNeverPassed],
    ];
    const middles: number[] = [];
    for (const [name, colour] of order) {
      const s = stats.get(hex(colour));
      assert.ok(s !== undefined && s.n > 300, `${name} (${colour}): ${s?.n ?? 0} pixels; its chart is not drawn`);
      middles.push(s.rows[Math.floor(s.rows.length / 2)]);
    }
    const sorted = [...middles].sort((a, b) => a - b);
    // per hour, per day, delays, networks, senders, top to bottom (the two per-chart colours share a band)
    assert.ok(Math.max(middles[0], middles[1]) < Math.min(middles[2], middles[3]) && middles[3] < middles[4] && middles[4] < middles[5] && middles[5] < middles[6], `chart bands out of order: ${middles.join(', ')} (sorted ${sorted.join(', ')})`);
  } finally {
    removeDir(dir);
  }
});

test('a report without timestamps or deferrals draws no bars (the screenshot check can tell)', async (t) => {
  const bin = needChromium(t);
  if (bin === null) return;
  const dir = tempDir('qgreyd-html-');
  try {
    const page = join(dir, 'empty.html');
    writeFileSync(page, formatHtml(buildReport(['client=127.0.0.1:1 ip=192.0.2.1 from=<a@x.example> to=<b@y.example> reply=01:02 reason=known-good'])));
    const dom = await chromium(bin, dir, ['--dump-dom'], page);
    assert.equal(count(dom, /<rect /g), 0);
    assert.match(section(dom, 'per-hour'), /No timestamped decisions/);
    const stats = colourStats(await screenshot(bin, dir, page));
    for (const [name, colour] of Object.entries(COLOURS)) assert.ok((stats.get(hex(colour))?.n ?? 0) === 0, `${name} drawn on a page without charts`);
  } finally {
    removeDir(dir);
  }
});
