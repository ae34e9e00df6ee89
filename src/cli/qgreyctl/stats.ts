// qgreyctl stats: see its --help (cli/qgreyctl/help.ts) and man/qgreyctl.8.
import { type Backend } from '../../admin/client.js';
import type { LiveCounters } from '../../metrics.js';
import { type Stats } from '../../admin/ops.js';
import { escapeField } from '../../log/log.js';
import { settingsPath } from '../recorded-settings.js';

import { EXIT_OK } from '../common.js';
import { type SettingsSource, SETTINGS_SPEC, Usage, age, iso, parse, settingsText, withBackend } from './shared.js';
import { help } from './help.js';
import type { CtlContext } from './io.js';

export async function cmdStats(argv: string[], ctx: CtlContext): Promise<number> {
  const { a, pos } = parse('stats', argv, { string: SETTINGS_SPEC.string, boolean: ['json'], alias: SETTINGS_SPEC.alias });
  if (a.help) return help('stats', ctx.io);
  if (pos.length > 0) throw new Usage(`stats: unexpected argument ${JSON.stringify(pos[0])}`);
  return withBackend('stats', a, ctx, false, async (b, source) => {
    const s = await b.stats();
    if (a.json) {
      await ctx.io.out(JSON.stringify({ state: b.stateDir, mode: b.mode, ...s }) + '\n');
      return EXIT_OK;
    }
    await ctx.io.out(statsText(s, b, source));
    return EXIT_OK;
  });
}

export function statsText(s: Stats, b: Backend, source: SettingsSource): string {
  const how = b.mode === 'daemon' ? 'daemon running, asked through its admin socket' : 'daemon not running, store opened directly';
  const whose =
    b.mode === 'daemon'
      ? "the daemon's"
      : source === 'flags'
        ? 'from -t/-g/-m'
        : source === 'recorded'
          ? `recorded by qgreyd at its last start, ${settingsPath(b.stateDir)}`
          : "qgreyd's defaults: no settings recorded in the state directory";
  const kind = (name: string, k: Stats['ips']) =>
    `${name.padEnd(15)} ${k.count} (dead, not yet swept: ${k.dead})` +
    (k.oldest !== null && k.newest !== null ? `; oldest ${iso(k.oldest)} (${ago(s.now - k.oldest)}), newest ${iso(k.newest)} (${ago(s.now - k.newest)})` : '');
  return [
    `state           ${b.stateDir} (${how})`,
    `settings        ${settingsText(s.settings)} (${whose})`,
    kind('known-good IPs', s.ips),
    kind('triplets', s.triplets),
    // a daemon older than this qgreyctl does not report them
    ...(s.future === undefined ? [] : [futureText(s)]),
    `disk            ${s.diskBytes} bytes (${(s.diskBytes / 1048576).toFixed(1)} MiB)`,
    ...(s.live === undefined ? [] : liveText(s.live, s.now)),
  ].join('\n') + '\n';
}

/** The running daemon's counters since it started. */
export function liveText(l: LiveCounters, now: number): string[] {
  const out = [
    `daemon up       since ${iso(l.started)} (${age(now - l.started)}); store ${l.storeHealthy ? 'healthy' : 'FAILING (answering not decided)'}`,
    `requests        received ${l.received}, replied ${l.replied}, in flight ${l.inFlight}, malformed ${l.malformed}, refused (not in --allow) ${l.refused}, overload ${l.overload}, store errors ${l.storeErrors}` +
      (l.shutdown > 0 ? `, shutdown ${l.shutdown}` : ''),
    l.lastSweep === null
      ? 'last sweep      none yet'
      : `last sweep      ${iso(l.lastSweep.at)} (${ago(now - l.lastSweep.at)}): scanned ${l.lastSweep.scanned}, deleted ${l.lastSweep.deleted}, ${l.lastSweep.ms} ms`,
  ];
  if (l.replies === null) {
    out.push(`replies         by reason: counted only with qgreyd --metrics`);
  } else {
    const sorted = [...l.replies].sort((a, b) => b.count - a.count || a.reason.localeCompare(b.reason));
    out.push(`replies         ${sorted.length === 0 ? 'none yet' : sorted.map((r) => `${r.reason} (${r.reply}) ${r.count}`).join(', ')}`);
  }
  if (l.whitelistHits === null) {
    out.push(`whitelist       ${l.whitelistEntries} entries; hits per entry: counted only with qgreyd --metrics`);
  } else {
    const unused = l.whitelistHits.filter((h) => h.hits === 0).length;
    out.push(`whitelist       ${l.whitelistEntries} entries, ${unused} never matched since the daemon started or the list was reloaded`);
    for (const h of l.whitelistHits) out.push(`  ${String(h.hits).padStart(10)}  ${escapeField(h.file)}:${h.line} ${escapeField(h.entry)}`);
  }
  if (l.exceptionEntries !== undefined) {
    if (l.exceptionHits === null || l.exceptionHits === undefined) {
      out.push(`exceptions      ${l.exceptionEntries} entries; recipients per entry: counted only with qgreyd --metrics`);
    } else {
      const unused = l.exceptionHits.filter((h) => h.hits === 0).length;
      out.push(`exceptions      ${l.exceptionEntries} entries, ${unused} never matched since the daemon started or the list was reloaded`);
      for (const h of l.exceptionHits) out.push(`  ${String(h.hits).padStart(10)}  ${escapeField(h.file)}:${h.line} ${escapeField(h.entry)}`);
    }
  }
  return out;
}

/** "5m ago", or "in 5m" for a time ahead of now */
export function ago(seconds: number): string {
  return seconds < 0 ? age(seconds) : `${age(seconds)} ago`;
}

export function futureText(s: Stats): string {
  const f = s.future;
  if (f.count === 0 || f.furthest === null) return `future-dated    0`;
  return `future-dated    ${f.count} (dated ahead of now: the clock was set back, or an import came from a clock ahead; they count as now, and the next sweep sets them to now); furthest ${iso(f.furthest)} (${age(f.furthest - s.now)} ahead)`;
}

