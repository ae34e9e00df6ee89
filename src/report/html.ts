// qgreyctl report --html: the Report as one self-contained page. The charts are inline SVG
// drawn here (no script, no external file, no font), so the page opens from a mail
// attachment or a file:// URL on a machine without network, and stays readable in a browser
// with scripts off. Every bar carries a <title> so hovering shows the exact figure.
import { escapeField } from '../log/log.js';
import { bucketCounts, dayTable, duration, iso, type DayCount, type NetCount, type Report } from './report.js';

/** Fill colours, one pair per chart, so each chart can be told apart (also by the tests). */
export const COLOURS = {
  hourAccepted: '#4caf50',
  hourDeferred: '#ff9800',
  dayAccepted: '#2e7d32',
  dayDeferred: '#e65100',
  delays: '#1e88e5',
  netDeferred: '#ba68c8',
  netNeverPassed: '#6a1b9a',
  senderDeferred: '#4db6ac',
  senderNeverPassed: '#00695c',
} as const;

/** Text from the log (attacker-chosen addresses) made safe for HTML: bytes outside printable
 *  ASCII and the log's delimiters as \xHH, as the text report shows them, then entities. */
function h(s: string): string {
  return escapeField(s).replace(/&/g, '&amp;').replace(/'/g, '&#39;');
}

/** For text that the report itself made (labels, dates, numbers). */
function t(s: string | number): string {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const W = 900;
const LEFT = 56;
const RIGHT = 12;
const TOP = 12;

interface Stack {
  label: string;
  /** one value per series, drawn bottom to top */
  values: number[];
  /** the axis label under the bar, if any */
  tick?: string | undefined;
}

/** Vertical bars, stacked; `series` gives each series' class and colour. */
function columns(id: string, bars: Stack[], series: Array<{ name: string; colour: string }>, height = 240): string {
  const bottom = height - 36;
  const plotW = W - LEFT - RIGHT;
  const most = Math.max(1, ...bars.map((b) => b.values.reduce((a, v) => a + v, 0)));
  const step = plotW / Math.max(1, bars.length);
  const gap = step > 4 ? Math.min(step * 0.2, 6) : 0;
  const out: string[] = [];
  out.push(`<svg id="${id}-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${height}" width="${W}" height="${height}" role="img">`);
  for (const frac of [0, 0.5, 1]) {
    const y = bottom - (bottom - TOP) * frac;
    out.push(`<line x1="${LEFT}" y1="${y.toFixed(1)}" x2="${W - RIGHT}" y2="${y.toFixed(1)}" stroke="#ddd"/>`);
    out.push(`<text x="${LEFT - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end" font-size="11">${t(fmtCount(most * frac, most))}</text>`);
  }
  // few bars (a week of days) would otherwise be slabs
  const barW = Math.max(Math.min(step - gap, 48), 0.5);
  bars.forEach((b, i) => {
    const x = LEFT + i * step + (step - barW) / 2;
    let y = bottom;
    b.values.forEach((v, s) => {
      if (v <= 0) return;
      const hgt = ((bottom - TOP) * v) / most;
      y -= hgt;
      out.push(
        `<rect class="bar ${series[s].name}" x="${x.toFixed(2)}" y="${y.toFixed(2)}" width="${barW.toFixed(2)}" height="${hgt.toFixed(2)}" fill="${series[s].colour}">` +
          `<title>${t(b.label)}: ${series[s].name} ${v}</title></rect>`,
      );
    });
    if (b.tick !== undefined) {
      out.push(`<text class="tick" x="${(x + barW / 2).toFixed(1)}" y="${bottom + 16}" text-anchor="middle" font-size="11">${t(b.tick)}</text>`);
    }
  });
  out.push(`<line x1="${LEFT}" y1="${bottom}" x2="${W - RIGHT}" y2="${bottom}" stroke="#555"/>`);
  out.push('</svg>');
  return out.join('\n');
}

/** An axis label: whole numbers once the scale is large enough that halves mean nothing. */
function fmtCount(n: number, scale: number): string {
  return Number.isInteger(n) || scale >= 10 ? String(Math.round(n)) : n.toFixed(1);
}

/** Horizontal bars for a top list: the whole bar is deferred, its dark part never passed. */
function topBars(id: string, rows: NetCount[], colours: { deferred: string; neverPassed: string }): string {
  const rowH = 22;
  const labelW = 300;
  const height = rows.length * rowH + 8;
  const most = Math.max(1, ...rows.map((r) => r.deferred));
  const plotW = W - labelW - 170; // room for the count after the longest bar
  const out: string[] = [];
  out.push(`<svg id="${id}-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${height}" width="${W}" height="${height}" role="img">`);
  rows.forEach((r, i) => {
    const y = 4 + i * rowH;
    const w = (plotW * r.deferred) / most;
    const wn = (plotW * r.neverPassed) / most;
    const key = h(r.key);
    out.push(`<text class="label" x="${labelW - 8}" y="${y + 15}" text-anchor="end" font-size="12">${key.length > 44 ? key.slice(0, 43) + '&#8230;' : key}</text>`);
    out.push(`<rect class="bar deferred" x="${labelW}" y="${y + 2}" width="${w.toFixed(2)}" height="${rowH - 6}" fill="${colours.deferred}"><title>${key}: deferred ${r.deferred}</title></rect>`);
    if (r.neverPassed > 0) {
      out.push(`<rect class="bar never-passed" x="${labelW}" y="${y + 2}" width="${wn.toFixed(2)}" height="${rowH - 6}" fill="${colours.neverPassed}"><title>${key}: never passed ${r.neverPassed}</title></rect>`);
    }
    out.push(`<text class="count" x="${(labelW + w + 6).toFixed(1)}" y="${y + 15}" font-size="12">${r.deferred} (${r.neverPassed} never passed)</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

/** A stray stamp years off must not make a page of a million bars: the charts show the last
 *  MAX_HOURS hours and MAX_DAYS days (the per-day table still has every day). */
const MAX_HOURS = 62 * 24;
const MAX_DAYS = 400;

/** Every hour from the first to the last stamped decision, empty hours included. */
function hourBars(r: Report): Stack[] {
  if (r.hours.length === 0) return [];
  const byStart = new Map(r.hours.map((x) => [x.start, x]));
  const last = r.hours[r.hours.length - 1].start;
  const first = Math.max(r.hours[0].start, last - (MAX_HOURS - 1) * 3600);
  const n = (last - first) / 3600 + 1;
  const days = Math.ceil(n / 24);
  const every = Math.max(1, Math.ceil(days / 12)); // at most about a dozen date labels
  const bars: Stack[] = [];
  for (let s = first; s <= last; s += 3600) {
    const x = byStart.get(s);
    const label = iso(s).slice(0, 13).replace('T', ' ') + ':00Z';
    const midnight = s % 86400 === 0 && (s / 86400) % every === 0;
    let tick: string | undefined;
    if (n <= 48) tick = s % (n <= 24 ? 3 * 3600 : 6 * 3600) === 0 ? iso(s).slice(11, 13) + 'h' : undefined;
    else if (midnight) tick = iso(s).slice(5, 10);
    bars.push({ label, values: [x?.accepted ?? 0, x?.deferred ?? 0], tick });
  }
  return bars;
}

/** Every day from the first to the last, so that a day without decisions shows as a gap. */
function dayBars(days: DayCount[]): Stack[] {
  const byStart = new Map(days.map((d) => [d.start, d]));
  const first = Math.max(days[0].start, days[days.length - 1].start - (MAX_DAYS - 1) * 86400);
  const n = (days[days.length - 1].start - first) / 86400 + 1;
  const every = Math.max(1, Math.ceil(n / 15));
  const bars: Stack[] = [];
  for (let i = 0; i < n; i++) {
    const start = first + i * 86400;
    const d = byStart.get(start);
    const day = iso(start).slice(0, 10);
    bars.push({ label: day, values: [d?.accepted ?? 0, d?.deferred ?? 0], tick: i % every === 0 ? day.slice(5) : undefined });
  }
  return bars;
}

function legend(items: Array<[string, string]>): string {
  return `<p class="legend">${items.map(([c, name]) => `<span class="swatch" style="background:${c}"></span>${t(name)}`).join(' ')}</p>`;
}

function dayRows(r: Report): string {
  // the same columns as the text report's table, one source for both
  const [head, ...rows] = dayTable(r).map((l) => l.trim().split(/ +/));
  const out = [`<table id="per-day-table"><thead><tr>${head.map((c) => `<th>${t(c)}</th>`).join('')}</tr></thead><tbody>`];
  for (const cells of rows) out.push(`<tr>${cells.map((c, i) => `<td${i > 0 && i < cells.length - 1 ? ' class="num"' : ''}>${t(c)}</td>`).join('')}</tr>`);
  out.push('</tbody></table>');
  return out.join('\n');
}

export function formatHtml(r: Report, top = 10): string {
  const span = r.firstTime !== null ? `${iso(r.firstTime)} to ${iso(r.lastTime)}` : 'no timestamps';
  const gd = r.greydaemonDecisions > 0 ? `, ${r.greydaemonDecisions} of them from greydaemon's log` : '';
  const p: string[] = [];
  p.push('<!DOCTYPE html>');
  p.push('<html lang="en"><head><meta charset="utf-8"><title>qgreyd report</title>');
  p.push('<meta name="viewport" content="width=device-width">');
  p.push(`<style>
body { font: 14px/1.4 sans-serif; color: #222; background: #fff; margin: 16px auto; max-width: 940px; padding: 0 8px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 20px 0 4px; }
figure { margin: 8px 0 16px; } figcaption { font-weight: bold; margin-bottom: 4px; }
svg { display: block; max-width: 100%; height: auto; }
.legend { margin: 2px 0; font-size: 12px; } .swatch { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px; }
table { border-collapse: collapse; font-size: 13px; } td, th { padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: left; }
td.num { text-align: right; } .note { color: #666; font-size: 12px; }
</style></head><body>`);
  p.push('<h1>qgreyd report</h1>');
  p.push(`<p id="summary">${r.decisions} decisions${t(gd)} in ${r.lines} lines, ${t(span)} (times UTC).<br>`);
  p.push(`Accepted ${r.accepted}, deferred ${r.deferred}; malformed datagrams ${r.malformed}; unreadable lines ${r.unreadableCount}.<br>`);
  p.push(
    `Deferred messages (sender, recipient): ${r.episodes}: came back ${r.cameBack.length}` +
      (r.timed ? `, came back after more than ${r.retry} s ${r.cameBackLate.length}` : '') +
      `, kept trying ${r.keptTrying.length}, never came back ${r.neverCameBack.length}` +
      (r.timed ? `, too recent to tell ${r.tooRecent.length}` : '') +
      '.</p>',
  );
  if (!r.timed) p.push('<p class="note">Not every decision line has a timestamp: the time charts show only those that do, and retry delays are unknown. Keep multilog t.</p>');

  const hours = hourBars(r);
  const hourSpan = r.hours.length > 0 ? (r.hours[r.hours.length - 1].start - r.hours[0].start) / 3600 + 1 : 0;
  p.push(`<figure id="per-hour"><figcaption>Decisions per hour${hourSpan > MAX_HOURS ? ` (the last ${MAX_HOURS / 24} days)` : ''}</figcaption>`);
  if (hours.length > 0) {
    p.push(legend([[COLOURS.hourAccepted, 'accepted'], [COLOURS.hourDeferred, 'deferred']]));
    p.push(columns('per-hour', hours, [{ name: 'accepted', colour: COLOURS.hourAccepted }, { name: 'deferred', colour: COLOURS.hourDeferred }]));
  } else p.push('<p class="note">No timestamped decisions.</p>');
  p.push('</figure>');

  const daySpan = r.days.length > 0 ? (r.days[r.days.length - 1].start - r.days[0].start) / 86400 + 1 : 0;
  p.push(`<figure id="per-day"><figcaption>Decisions per day${daySpan > MAX_DAYS ? ` (chart: the last ${MAX_DAYS} days)` : ''}</figcaption>`);
  if (r.days.length > 0) {
    p.push(legend([[COLOURS.dayAccepted, 'accepted'], [COLOURS.dayDeferred, 'deferred']]));
    p.push(columns('per-day', dayBars(r.days), [{ name: 'accepted', colour: COLOURS.dayAccepted }, { name: 'deferred', colour: COLOURS.dayDeferred }], 200));
    p.push(dayRows(r));
    p.push('<p class="note">msgs-deferred: messages first deferred that day; came-back: of those, accepted later within the retry limit; log: which daemon wrote the day\'s lines.</p>');
  } else p.push('<p class="note">No timestamped decisions.</p>');
  p.push('</figure>');

  p.push('<figure id="retry-delays"><figcaption>Retry delays of deferred messages that came back</figcaption>');
  if (r.delays.length > 0) {
    const median = r.delays[Math.floor((r.delays.length - 1) / 2)];
    p.push(`<p class="note">${r.delays.length} delays; shortest ${duration(r.delays[0])}, median ${duration(median)}, longest ${duration(r.delays[r.delays.length - 1])}.</p>`);
    const bars = bucketCounts(r.delays).map(([label, n]) => ({ label, values: [n], tick: label }));
    p.push(columns('retry-delays', bars, [{ name: 'delays', colour: COLOURS.delays }], 200));
  } else p.push(`<p class="note">${r.timed ? 'No deferred message came back.' : 'Unknown without timestamps.'}</p>`);
  p.push('</figure>');

  const topList = (id: string, title: string, rows: NetCount[], colours: { deferred: string; neverPassed: string }) => {
    p.push(`<figure id="${id}"><figcaption>${t(title)}${rows.length > top ? ` (first ${top} of ${rows.length})` : ''}</figcaption>`);
    if (rows.length > 0) {
      p.push(legend([[colours.deferred, 'deferred messages'], [colours.neverPassed, 'of which never passed']]));
      p.push(topBars(id, rows.slice(0, top), colours));
    } else p.push('<p class="note">Nothing deferred.</p>');
    p.push('</figure>');
  };
  topList('top-networks', 'Top deferred client networks (/24, /48)', r.networks, { deferred: COLOURS.netDeferred, neverPassed: COLOURS.netNeverPassed });
  topList('top-senders', 'Top deferred senders', r.senders, { deferred: COLOURS.senderDeferred, neverPassed: COLOURS.senderNeverPassed });
  p.push('</body></html>');
  return p.join('\n') + '\n';
}
