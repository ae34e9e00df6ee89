// The decision log line, written by the daemon for every reply and read back by
// `qgreyctl report`: both sides live here, so a change to the format is a change to one file
// and the round-trip test (test/unit/decision-log.test.ts) breaks if the two drift apart.
//
//   client=ADDR:PORT ip=IP [from=<S> to=<R>,<R>[,+N]] reply=XX:YY reason=R [extras]
//   client=ADDR:PORT [ip=IP] reply=none reason=malformed bytes=N detail="..."
import { escapeField, quoted } from './log/log.js';

/** At most this many recipients are shown; the rest are counted as ",+N". */
export const LOG_RECIPIENTS = 50;

/** What one reply's line says. Optional fields are left out of the line when absent. */
export interface DecisionFields {
  /** the peer as "[host]:port" or "host:port" */
  client: string;
  ip: string;
  /** absent when the request's tail was not readable (the reply was still sent) */
  envelope?: { sender: string; recipients: readonly string[] } | undefined;
  /** the reply bytes as text, "00:01" */
  reply: string;
  reason: string;
  /** the whitelist entry that matched */
  whitelist?: { file: string; line: number } | undefined;
  /** the client key, when the grouping options made it differ from ip */
  net?: string | undefined;
  /** the sender as keyed, when --normalise-senders changed it */
  keyFrom?: string | undefined;
  /** the exception entry that decided */
  exception?: { file: string; line: number } | undefined;
  /** why no decision was made (store error) */
  error?: string | undefined;
}

export function formatDecisionLine(f: DecisionFields): string {
  // a client IP sent as text is printable without spaces, and escaped like the addresses
  let line = `client=${f.client} ip=${escapeField(f.ip)}`;
  if (f.envelope !== undefined) {
    const rc = f.envelope.recipients;
    line += ` from=<${escapeField(f.envelope.sender)}> to=`;
    const shown = Math.min(rc.length, LOG_RECIPIENTS);
    for (let i = 0; i < shown; i++) line += (i === 0 ? '<' : ',<') + escapeField(rc[i]) + '>';
    if (rc.length > LOG_RECIPIENTS) line += `,+${rc.length - LOG_RECIPIENTS}`;
  }
  line += ` reply=${f.reply} reason=${f.reason}`;
  if (f.whitelist !== undefined) line += ` whitelist=${escapeField(f.whitelist.file)}:${f.whitelist.line}`;
  if (f.net !== undefined) line += ` net=${escapeField(f.net)}`;
  if (f.keyFrom !== undefined) line += ` key-from=<${escapeField(f.keyFrom)}>`;
  if (f.exception !== undefined) line += ` exception=${escapeField(f.exception.file)}:${f.exception.line}`;
  if (f.error !== undefined) line += ` error=${quoted(f.error)}`;
  return line;
}

export function formatMalformedLine(client: string, ip: string | undefined, bytes: number, detail: string): string {
  return `client=${client}${ip ? ` ip=${escapeField(ip)}` : ''} reply=none reason=malformed bytes=${bytes} detail=${quoted(detail)}`;
}

/** The inverse of escapeField. */
export function unescapeField(s: string): string {
  return s.indexOf('\\x') < 0 ? s : s.replace(/\\x([0-9a-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}

/** A decision line read back: addresses unescaped, as the daemon saw them. */
export interface ParsedDecisionLine {
  client: string;
  ip: string | undefined;
  sender: string | undefined;
  /** the recipients shown (at most LOG_RECIPIENTS) */
  recipients: string[];
  /** recipients beyond those shown */
  more: number;
  reply: string;
  reason: string;
  keyFrom: string | undefined;
}

export type DecisionLineRead =
  | { kind: 'decision'; line: ParsedDecisionLine }
  | { kind: 'malformed' }
  | { kind: 'other' }
  | { kind: 'unreadable'; why: string };

const DECISION = /^client=(\S+) (?:ip=(\S+) )?(?:from=<([^>]*)> to=(\S*) )?reply=(\S+) reason=(\S+)/;
const KEY_FROM = / key-from=<([^>]*)>/;

/** Reads a line without its multilog stamp. */
export function parseDecisionLine(text: string): DecisionLineRead {
  if (!text.startsWith('client=')) return { kind: 'other' };
  const m = DECISION.exec(text);
  if (!m) return { kind: 'unreadable', why: 'a client= line without reply= and reason=' };
  const [, client, ip, from, to, reply, reason] = m;
  if (reply === 'none') return { kind: 'malformed' };
  if (!/^0[01]:0\d$/.test(reply)) return { kind: 'unreadable', why: `reply=${reply} is not a reply code` };
  const recipients: string[] = [];
  let more = 0;
  if (to !== undefined && to !== '') {
    for (const part of to.split(',')) {
      if (/^\+\d+$/.test(part)) {
        more = Number(part.slice(1));
        continue;
      }
      if (!part.startsWith('<') || !part.endsWith('>')) return { kind: 'unreadable', why: `to= has ${JSON.stringify(part)}` };
      recipients.push(unescapeField(part.slice(1, -1)));
    }
  }
  const keyed = KEY_FROM.exec(text.slice(m[0].length));
  return {
    kind: 'decision',
    line: {
      client,
      ip: ip === undefined ? undefined : unescapeField(ip),
      sender: from === undefined ? undefined : unescapeField(from),
      recipients,
      more,
      reply,
      reason,
      keyFrom: keyed === null ? undefined : unescapeField(keyed[1]),
    },
  };
}
