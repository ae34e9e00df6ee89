// qgreyctl forget: see its --help (cli/qgreyctl/help.ts) and man/qgreyctl.8.
import { shownSender } from '../../admin/ops.js';
import { escapeField } from '../../log/log.js';

import { EXIT_NO, EXIT_OK } from '../common.js';
import { Usage, bounce, parse, requireIp, withBackend } from './shared.js';
import { help } from './help.js';
import type { CtlContext } from './io.js';

export async function cmdForget(argv: string[], ctx: CtlContext): Promise<number> {
  const { a, pos } = parse('forget', argv, { string: ['wait'] });
  if (a.help) return help('forget', ctx.io);
  if (pos.length !== 1 && pos.length !== 3) throw new Usage('forget: needs IP, or IP SENDER RCPT; see qgreyctl forget --help');
  const ip = requireIp('forget', pos[0]);
  const triplet = pos.length === 3 ? { sender: bounce(pos[1]), rcpt: pos[2] } : undefined;
  return withBackend('forget', a, ctx, false, async (b) => {
    const r = await b.forget(ip, triplet);
    const what = r.triplet !== undefined ? `triplet ${r.ip} <${escapeField(shownSender(r.triplet.sender))}> <${escapeField(r.triplet.rcpt)}>` : `${r.ip} and its triplets`;
    if (r.deleted === 0) {
      await ctx.io.out(`nothing to forget: no record of ${what}\n`);
      return EXIT_NO;
    }
    await ctx.io.out(`forgot ${what}: ${r.deleted} record${r.deleted === 1 ? '' : 's'} deleted\n`);
    return EXIT_OK;
  });
}
