// The decision rules of PROTOCOL.md ("Decision, in order"), as a pure function of the request,
// the stored records, the clock and the settings. It returns the verdict and the record
// changes; storing them is the caller's business.
import type { ExceptionEntry, Exceptions } from './exceptions.js';
import { EXACT, networkOf, type Prefixes } from './network.js';
import { Verdict, type Envelope, type Request } from './protocol.js';
import { stripSenderTags } from './sender-tags.js';

/** All in seconds. */
export interface Settings {
  /** how long a known-good IP stays known (-t, days) */
  timeout: number;
  /** latest acceptable retry after first sight (-g, hours) */
  greyWindow: number;
  /** earliest acceptable retry (-m, minutes) */
  minResend: number;
  /** how far ahead of now a stored time may be before it counts as now (default FUTURE_TOLERANCE) */
  futureTolerance?: number;
}

/** A stored time more than this ahead of now was written under a clock that has since been
 *  set back (or imported from a machine whose clock is ahead); a few seconds of difference
 *  between clocks is normal and is left alone. */
export const FUTURE_TOLERANCE = 60;

/** This project's opt-in rules for the senders greylisting hurts. GREYDAEMON (all off) keys
 *  and decides exactly as greydaemon does. */
export interface Grouping {
  /** --ipv4-prefix / --ipv6-prefix: records are keyed by the client's network */
  prefixes: Prefixes;
  /** --normalise-senders: per-message tags are taken out of the sender in the key */
  normaliseSenders: boolean;
  /** --exceptions: recipients that are never greylisted */
  exceptions: Exceptions | null;
  /** --max-pending: stored triplets a client network may have before its new ones are
   *  deferred without being stored; null: no cap */
  maxPending: number | null;
}

export const GREYDAEMON: Grouping = { prefixes: EXACT, normaliseSenders: false, exceptions: null, maxPending: null };

/** What the policy may know about stored state. Dead records may still be present. */
export interface RecordView {
  /** by client key (see clientKey) */
  lastGood(client: string): number | undefined;
  firstSeen(tripletKey: string): number | undefined;
  /** triplets stored for a client key, for --max-pending (see src/pending.ts) */
  pending?(client: string): number;
}

export interface TripletOutcome {
  key: string;
  /** what this recipient did: passed, new, too-soon, too-late, verp-bounce (and stopped),
   *  exception (not greylisted) or pending-cap (new, not stored) */
  outcome: Verdict;
  /** the exceptions entry that matched, for outcome exception */
  exception?: ExceptionEntry;
  /** age of the stored entry in seconds, when there was one */
  age?: number;
}

export interface Decision {
  verdict: Verdict;
  /** the key of the request's IP record and the first part of its triplet keys: the address,
   *  or its network under --ipv4-prefix / --ipv6-prefix */
  client: string;
  /** the sender as keyed, when --normalise-senders changed it */
  keySender?: string;
  /** set last-good of the client key to this time */
  knownGood?: number;
  /** set these triplets' first-seen time */
  triplets: Array<[key: string, time: number]>;
  /** per-recipient detail, for debug logging */
  detail: TripletOutcome[];
}

export type Outcome = Decision | { malformed: string };

export function decide(req: Request, whitelisted: boolean, view: RecordView, now: number, s: Settings, g: Grouping = GREYDAEMON): Outcome {
  const client = clientKey(req, g);
  // 1. whitelisted (the exact address, whatever the grouping): nothing is stored
  if (whitelisted) return { verdict: Verdict.Whitelisted, client, triplets: [], detail: [] };

  // 2. known good and not idle for `timeout`: refresh it
  if (isKnownGood(view.lastGood(client), now, s)) {
    return { verdict: Verdict.KnownGood, client, knownGood: now, triplets: [], detail: [] };
  }

  // The rest needs the sender and recipients; validate them all before changing anything.
  if ('error' in req.tail) return { malformed: req.tail.error };
  const env = req.tail;

  // 3. every recipient's triplet
  const plain = normaliseSender(env.sender);
  const sender = keySender(env.sender, g);
  const decision: Decision = { verdict: Verdict.Passed, client, triplets: [], detail: [] };
  if (sender !== plain) decision.keySender = sender;
  // a recipient listed twice must see what the first occurrence stored
  const stored = new Map<string, number>();
  let exceptions = 0;
  let created = 0;
  for (const raw of env.recipients) {
    const rcpt = stripSpaces(raw);
    const exception = g.exceptions?.match(rcpt);
    if (exception !== undefined) {
      // never greylisted: decided on the other recipients, and nothing stored for it
      exceptions++;
      decision.detail.push({ key: tripletKey(client, sender, rcpt), outcome: Verdict.Exception, exception });
      continue;
    }
    if (sender === '.' && isVerp(rcpt)) {
      decision.verdict = Verdict.VerpBounce;
      decision.detail.push({ key: tripletKey(client, sender, rcpt), outcome: Verdict.VerpBounce });
      break;
    }
    const key = tripletKey(client, sender, rcpt);
    let t = stored.get(key) ?? view.firstSeen(key);
    if (t !== undefined && isFuture(t, now, s)) {
      // first seen "in the future": count it as first seen now, and store that, so the sender
      // waits min-resend once rather than for as long as the clock was wrong
      t = now;
      stored.set(key, now);
    }
    if (t === undefined) {
      if (g.maxPending !== null && (view.pending?.(client) ?? 0) + created >= g.maxPending) {
        // past the cap: deferred, and the store does not grow
        decision.verdict = Verdict.PendingCap;
        decision.detail.push({ key, outcome: Verdict.PendingCap });
        continue;
      }
      created++;
      stored.set(key, now);
      decision.verdict = Verdict.New;
      decision.detail.push({ key, outcome: Verdict.New });
    } else if (now - t < s.minResend) {
      decision.verdict = Verdict.TooSoon;
      decision.detail.push({ key, outcome: Verdict.TooSoon, age: now - t });
    } else if (now - t < s.greyWindow) {
      decision.knownGood = now;
      decision.detail.push({ key, outcome: Verdict.Passed, age: now - t });
    } else {
      stored.set(key, now);
      decision.verdict = Verdict.TooLate;
      decision.detail.push({ key, outcome: Verdict.TooLate, age: now - t });
    }
  }
  if (exceptions > 0 && exceptions === env.recipients.length) decision.verdict = Verdict.Exception;
  decision.triplets = [...stored];
  return decision;
}

export function isKnownGood(lastGood: number | undefined, now: number, s: Settings): boolean {
  return lastGood !== undefined && asOfNow(lastGood, now, s) > now - s.timeout;
}

/** Whether a stored time is further ahead of now than the settings tolerate. */
export function isFuture(t: number, now: number, s: Settings): boolean {
  return t > now + (s.futureTolerance ?? FUTURE_TOLERANCE);
}

/** A stored time as the rules read it: one dated too far ahead counts as now. */
export function asOfNow(t: number, now: number, s: Settings): number {
  return isFuture(t, now, s) ? now : t;
}

/** Dead records never influence a verdict and may be deleted (PROTOCOL.md, Expiry). */
export function isDeadIp(lastGood: number, now: number, s: Settings): boolean {
  return !isKnownGood(lastGood, now, s);
}
export function isDeadTriplet(firstSeen: number, now: number, s: Settings): boolean {
  return now - asOfNow(firstSeen, now, s) >= s.greyWindow;
}

/** Spaces removed; the empty sender (a bounce) becomes '.'. */
export function normaliseSender(sender: string): string {
  const s = stripSpaces(sender);
  return s === '' ? '.' : s;
}

export function stripSpaces(s: string): string {
  return s.indexOf(' ') < 0 ? s : s.replace(/ /g, '');
}

/** VERP recipients have a '-' followed later by '='. */
export function isVerp(rcpt: string): boolean {
  const dash = rcpt.indexOf('-');
  return dash >= 0 && rcpt.indexOf('=', dash + 1) > 0;
}

/** "ip sender recipient", lower-cased as a whole (ASCII only: addresses are bytes). */
export function tripletKey(ip: string, sender: string, rcpt: string): string {
  return asciiLower(`${ip} ${sender} ${rcpt}`);
}

/** All triplet keys a request could touch, so the caller can fetch them in one go.
 *  `client` is the request's clientKey(). */
export function tripletKeys(client: string, env: Envelope, g: Grouping = GREYDAEMON): string[] {
  const sender = keySender(env.sender, g);
  return env.recipients.map((r) => tripletKey(client, sender, stripSpaces(r)));
}

/** What a request's records are keyed by: its address, or with --ipv4-prefix /
 *  --ipv6-prefix its network (`192.0.2.0/24`). A client-ip sent as text is its own key. */
export function clientKey(req: Pick<Request, 'ip' | 'family'>, g: Grouping = GREYDAEMON): string {
  return networkOf(req.ip, req.family, g.prefixes);
}

/** The sender as the triplet key holds it: normaliseSender(), and with --normalise-senders
 *  its per-message tags removed (src/sender-tags.ts). */
export function keySender(sender: string, g: Grouping = GREYDAEMON): string {
  const s = normaliseSender(sender);
  return g.normaliseSenders ? stripSenderTags(s) : s;
}

/** The client key of a stored triplet key ("client sender rcpt"): client keys hold no space. */
export function clientOfTriplet(key: string): string {
  const sp = key.indexOf(' ');
  return sp < 0 ? key : key.slice(0, sp);
}

export function asciiLower(s: string): string {
  return /[A-Z]/.test(s) ? s.replace(/[A-Z]+/g, (m) => m.toLowerCase()) : s;
}

/** Settings from the command-line units (days, hours, minutes). */
export function settingsFrom(days: number, hours: number, minutes: number): Settings {
  return { timeout: days * 86400, greyWindow: hours * 3600, minResend: minutes * 60 };
}

/** When a record becomes dead (PROTOCOL.md, Expiry), in Unix seconds, for a store whose
 *  records expire by themselves: the same rule as isDeadIp / isDeadTriplet, for a time not
 *  ahead of now. `ip` says which kind of record it is. */
export function expiresAt(ip: boolean, time: number, s: Settings): number {
  return time + (ip ? s.timeout : s.greyWindow);
}
