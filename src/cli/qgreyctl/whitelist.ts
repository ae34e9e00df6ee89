// qgreyctl whitelist: see its --help (cli/qgreyctl/help.ts) and man/qgreyctl.8.
import { readFileSync } from 'node:fs';
import { CtlError } from '../../admin/client.js';
import { normaliseIp } from '../../ip.js';
import { warningText, Whitelist, WhitelistError } from '../../whitelist.js';

import { EXIT_NO, EXIT_OK, EXIT_PERMANENT } from '../common.js';
import { Usage, parse } from './shared.js';
import { help } from './help.js';
import type { CtlContext } from './io.js';

export async function cmdWhitelist(argv: string[], ctx: CtlContext): Promise<number> {
  const { a, pos } = parse('whitelist', argv, {});
  if (a.help) return help('whitelist', ctx.io);
  if (pos[0] !== 'check' || pos.length !== 3) throw new Usage('whitelist: usage: qgreyctl whitelist check FILE IP');
  const [, file, ipText] = pos;
  if (normaliseIp(ipText) === null) throw new Usage(`whitelist check: ${JSON.stringify(ipText)} is not an IPv4 or IPv6 address`);
  let text: string;
  try {
    text = readFileSync(file, 'latin1');
  } catch (e) {
    throw new CtlError(`whitelist check: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); give the whitelist file (qgreyd -w)`, EXIT_PERMANENT);
  }
  let wl: Whitelist;
  try {
    wl = Whitelist.parse(text, file);
  } catch (e) {
    if (e instanceof WhitelistError) throw new CtlError(`whitelist check: ${e.message}; qgreyd would refuse this file too`, EXIT_PERMANENT);
    throw e;
  }
  for (const w of wl.warnings) ctx.io.err(`qgreyctl: warning: ${warningText(w)}\n`);
  const m = wl.match(ipText);
  if (m === undefined) {
    await ctx.io.out(`${ipText} does not match ${file} (${wl.size} entries)\n`);
    return EXIT_NO;
  }
  await ctx.io.out(`${ipText} matches ${m.file}:${m.line}: ${m.text}\n`);
  return EXIT_OK;
}
