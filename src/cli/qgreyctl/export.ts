// qgreyctl export: see its --help (cli/qgreyctl/help.ts) and man/qgreyctl.8.
import { formatSaveLine } from '../../savefile.js';

import { EXIT_OK } from '../common.js';
import { Usage, parse, withBackend } from './shared.js';
import { help } from './help.js';
import type { CtlContext } from './io.js';

export async function cmdExport(argv: string[], ctx: CtlContext): Promise<number> {
  const { a, pos } = parse('export', argv, { string: ['wait'] });
  if (a.help) return help('export', ctx.io);
  if (pos.length > 0) throw new Usage(`export: unexpected argument ${JSON.stringify(pos[0])}; export writes to standard output (qgreyctl export > savefile)`);
  return withBackend('export', a, ctx, false, async (b) => {
    let ips = 0;
    let triplets = 0;
    for await (const records of b.export()) {
      let text = '';
      for (const r of records) {
        if (r.kind === 'ip') ips++;
        else triplets++;
        text += formatSaveLine(r) + '\n';
      }
      await ctx.io.out(text, 'latin1');
    }
    ctx.io.err(`qgreyctl: exported ${ips} known-good IPs and ${triplets} triplets from ${b.stateDir}\n`);
    return EXIT_OK;
  });
}
