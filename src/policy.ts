// The decision rules of PROTOCOL.md ("Decision, in order"), as a pure function of the request,
// the stored records, the clock and the settings. It returns the verdict and the record
// changes; storing them is the caller's business.
import { Verdict, type Envelope, type Request } from './protocol.js';

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

/** What the policy may know about stored state. Dead records may still be present. */
export interface RecordView {
  lastGood(ip: string): number | undefined;
  firstSeen(tripletKey: string): number | undefined;
}

export interface TripletOutcome {
  key: string;
  /** what this recipient did: passed, new, too-soon, too-late, or verp-bounce (and stopped) */
  outcome: Verdict;
  /** age of the stored entry in seconds, when there was one */
  age?: number;
}

export interface Decision {
  verdict: Verdict;
  /** set last-good of the request's IP to this time */
  knownGood?: number;
  /** set these triplets' first-seen time */
  triplets: Array<[key: string, time: number]>;
  /** per-recipient detail, for debug logging */
  detail: TripletOutcome[];
}

export type Outcome = Decision | { malformed: string };

export function decide(req: Request, whitelisted: boolean, view: RecordView, now: number, s: Settings): Outcome {
  // 1. whitelisted: nothing is stored
  if (whitelisted) return { verdict: Verdict.Whitelisted, triplets: [], detail: [] };

  // 2. known good and not idle for `timeout`: refresh it
  if (isKnownGood(view.lastGood(req.ip), now, s)) {
    return { verdict: Verdict.KnownGood, knownGood: now, triplets: [], detail: [] };
  }

  // The rest needs the sender and recipients; validate them all before changing anything.
  if ('error' in req.tail) return { malformed: req.tail.error };
  const env = req.tail;

  // 3. every recipient's triplet
  const sender = normaliseSender(env.sender);
  const decision: Decision = { verdict: Verdict.Passed, triplets: [], detail: [] };
  // a recipient listed twice must see what the first occurrence stored
  const stored = new Map<string, number>();
  for (const raw of env.recipients) {
    const rcpt = stripSpaces(raw);
    if (sender === '.' && isVerp(rcpt)) {
      decision.verdict = Verdict.VerpBounce;
      decision.detail.push({ key: tripletKey(req.ip, sender, rcpt), outcome: Verdict.VerpBounce });
      break;
    }
    const key = tripletKey(req.ip, sender, rcpt);
    let t = stored.get(key) ?? view.firstSeen(key);
    if (t !== undefined && isFuture(t, now, s)) {
      // first seen "in the future": count it as first seen now, and store that, so the sender
      // waits min-resend once rather than for as long as the clock was wrong
      t = now;
      stored.set(key, now);
    }
    if (t === undefined) {
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

/** All triplet keys a request could touch, so the caller can fetch them in one go. */
export function tripletKeys(ip: string, env: Envelope): string[] {
  const sender = normaliseSender(env.sender);
  return env.recipients.map((r) => tripletKey(ip, sender, stripSpaces(r)));
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
