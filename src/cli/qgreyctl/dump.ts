// qgreyctl dump: see its --help (cli/qgreyctl/help.ts) and man/qgreyctl.8.
import { isDead, shownSender, type DumpFilter } from '../../admin/ops.js';
import { type SaveRecord } from '../../savefile.js';
import { unixNow } from '../../daemon/queue.js';
import { escapeField } from '../../log/log.js';
import { type Settings } from '../../policy.js';

import { EXIT_OK, last } from '../common.js';
import { SETTINGS_SPEC, Usage, age, bounce, iso, parse, requireIp, withBackend } from './shared.js';
import { help } from './help.js';
import type { CtlContext } from './io.js';

export async function cmdDump(argv: string[], ctx: CtlContext): Promise<number> {
  const { a, pos } = parse('dump', argv, {
    string: ['ip', 'sender', 'rcpt', ...SETTINGS_SPEC.string],
    boolean: ['json', 'ips', 'triplets'],
    alias: SETTINGS_SPEC.alias,
  });
  if (a.help) return help('dump', ctx.io);
  if (pos.length > 0) throw new Usage(`dump: unexpected argument ${JSON.stringify(pos[0])}; filter with --ip, --sender, --rcpt`);
  if (a.ips && a.triplets) throw new Usage('dump: --ips and --triplets exclude each other; give neither for both');
  const filter: DumpFilter = {};
  const ip = last(a.ip);
  if (ip !== undefined) filter.ip = requireIp('dump --ip', ip);
  const sender = last(a.sender);
  if (sender !== undefined) filter.sender = bounce(sender);
  const rcpt = last(a.rcpt);
  if (rcpt !== undefined) filter.rcpt = rcpt;
  if (a.ips) filter.only = 'ip';
  if (a.triplets) filter.only = 'triplet';
  const json = Boolean(a.json);
  return withBackend('dump', a, ctx, false, async (b) => {
    for await (const records of b.dump(filter)) {
      const now = unixNow();
      let text = '';
      for (const r of records) text += (json ? dumpJson(r, now, b.settings) : dumpText(r, now, b.settings)) + '\n';
      await ctx.io.out(text);
    }
    return EXIT_OK;
  });
}

export function dumpText(r: SaveRecord, now: number, s: Settings): string {
  const dead = isDead(r, now, s) ? ' dead' : '';
  if (r.kind === 'ip') return `known-good ${r.ip} last-good=${iso(r.time)} age=${age(now - r.time)}${dead}`;
  return `triplet ${r.ip} <${escapeField(shownSender(r.sender))}> <${escapeField(r.rcpt)}> first-seen=${iso(r.time)} age=${age(now - r.time)}${dead}`;
}

export function dumpJson(r: SaveRecord, now: number, s: Settings): string {
  const shown = r.kind === 'triplet' ? { ...r, sender: shownSender(r.sender) } : r;
  return JSON.stringify({ ...shown, iso: iso(r.time), age: now - r.time, dead: isDead(r, now, s) });
}
