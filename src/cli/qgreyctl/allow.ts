// qgreyctl allow: see its --help (cli/qgreyctl/help.ts) and man/qgreyctl.8.
import { EXIT_OK } from '../common.js';
import { Usage, iso, parse, requireIp, withBackend } from './shared.js';
import { help } from './help.js';
import type { CtlContext } from './io.js';

export async function cmdAllow(argv: string[], ctx: CtlContext): Promise<number> {
  const { a, pos } = parse('allow', argv, { string: ['wait'] });
  if (a.help) return help('allow', ctx.io);
  if (pos.length !== 1) throw new Usage('allow: needs one IP address; see qgreyctl allow --help');
  const ip = requireIp('allow', pos[0]);
  return withBackend('allow', a, ctx, true, async (b) => {
    const r = await b.allow(ip);
    const was = r.previous === null ? 'was not known' : `was last good ${iso(r.previous)}`;
    await ctx.io.out(`allowed ${r.ip}: known good from ${iso(r.time)} (${was})\n`);
    return EXIT_OK;
  });
}
