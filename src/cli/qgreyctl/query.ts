// qgreyctl query: see its --help (cli/qgreyctl/help.ts) and man/qgreyctl.8.
import dgram from 'node:dgram';
import { isIP } from 'node:net';
import { CtlError } from '../../admin/client.js';
import { decodeReply, encodeRequest, isAccept, replyText, type Verdict } from '../../protocol.js';
import { parseListen, UsageError } from '../args.js';

import { EXIT_NO, EXIT_OK, EXIT_TEMPORARY, last } from '../common.js';
import { Usage, bounce, parse, requireIp } from './shared.js';
import { help } from './help.js';
import type { CtlContext } from './io.js';

export const VERDICT_TEXT: Record<Verdict, string> = {
  'whitelisted': 'whitelisted',
  'known-good': 'known-good IP',
  'passed': 'triplet passed',
  'verp-bounce': 'VERP bounce',
  'new': 'new triplet',
  'too-soon': 'retried too soon',
  'too-late': 'retried too late',
  'not-decided': 'not decided (accepted)',
  'not-decided-closed': 'not decided (deferred: fail closed)',
  'exception': 'every recipient is an exception',
  'pending-cap': 'new triplet over the pending cap (not stored)',
};

export async function cmdQuery(argv: string[], ctx: CtlContext): Promise<number> {
  const { a, pos } = parse('query', argv, { string: ['server', 'wait'] });
  if (a.help) return help('query', ctx.io);
  let server: { host: string; port: number };
  try {
    server = parseListen(last(a.server) ?? '');
  } catch (e) {
    if (e instanceof UsageError) throw new Usage(`query: --server: ${e.message.replace(/^\w+: /, '')}`);
    throw e;
  }
  const timeoutText = last(a.wait) ?? '3';
  const timeout = Number(timeoutText);
  if (timeoutText.trim() === '' || !Number.isFinite(timeout) || timeout <= 0 || timeout > 3600) {
    throw new Usage(`query: --wait ${JSON.stringify(timeoutText)} is not a number of seconds (more than 0, at most 3600); qmail-smtpd waits 3`);
  }
  if (pos.length < 2) throw new Usage('query: needs CLIENT-IP SENDER [RCPT...]; see qgreyctl query --help');
  const ip = requireIp('query', pos[0]);
  const msg = encodeRequest(ip, bounce(pos[1]), pos.slice(2));
  const where = isIP(server.host) === 6 ? `[${server.host}]:${server.port}` : `${server.host}:${server.port}`;
  if (server.port === 0) throw new Usage('query: --server needs a port other than 0');
  const reply = await new Promise<Buffer | null>((resolve, reject) => {
    const sock = dgram.createSocket(isIP(server.host) === 6 ? 'udp6' : 'udp4');
    const timer = setTimeout(() => {
      sock.close();
      resolve(null);
    }, timeout * 1000);
    sock.on('message', (m) => {
      clearTimeout(timer);
      sock.close();
      resolve(m);
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      sock.close();
      reject(new CtlError(`query: ${where}: ${e.message}`, EXIT_TEMPORARY));
    });
    sock.send(msg, server.port, server.host);
  });
  if (reply === null) {
    // qmail-smtpd accepts the mail in this case: say so, a monitor wants to know
    throw new CtlError(`query: no answer from ${where} within ${timeout} s (qmail-smtpd would accept the mail unchecked); give --wait SECONDS to wait longer`, EXIT_TEMPORARY);
  }
  const v = decodeReply(reply);
  if (v === null) {
    const hex = [...reply.subarray(0, 2)].map((b) => b.toString(16).padStart(2, '0')).join(':');
    const accept = reply.length > 0 && reply[0] !== 0;
    await ctx.io.out(`${accept ? 'accept' : 'defer'} ${hex} unknown reply (${reply.length} bytes)\n`);
    return accept ? EXIT_OK : EXIT_NO;
  }
  await ctx.io.out(`${isAccept(v) ? 'accept' : 'defer'} ${replyText(v)} ${VERDICT_TEXT[v]}\n`);
  return isAccept(v) ? EXIT_OK : EXIT_NO;
}
