// greydaemon's save file (PROTOCOL.md, "The reference save file"): one record a line, read and
// written here only, by the first-start import, qgreyctl import/export and the admin socket.
import { normaliseIp } from './ip.js';
import { asciiLower } from './policy.js';

/** A stored record, as in the greydaemon save file. */
export type SaveRecord =
  | { kind: 'ip'; ip: string; time: number }
  | { kind: 'triplet'; ip: string; sender: string; rcpt: string; time: number };

/** Times further ahead than this are errors, not clock skew: a last-good time far in the
 *  future would keep an IP known good for as long. */
export const MAX_FUTURE = 86400;

// Addresses are bytes off the wire, so a stored one can hold a newline, a tab or any other
// control character, which the whitespace-separated save file cannot carry. Such a record is
// written as an escaped line: kind "I%" or "G%", and in its address fields every byte outside
// printable ASCII, and "%" itself, as %HH. greydaemon writes only "I " and "G " lines, so a
// greydaemon file never holds an escaped line and its plain lines are read byte for byte as
// before; a store without such addresses exports exactly what greydaemon would write.

/** Whether a field must be escaped: a byte the save file or greydaemon's reader would take
 *  for a separator or line end (controls and the space). */
function needsEscape(field: string): boolean {
  for (let i = 0; i < field.length; i++) if (field.charCodeAt(i) <= 0x20) return true;
  return false;
}

function escapeSaveField(field: string): string {
  return field.replace(/[^\x21-\x24\x26-\x7e]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0'));
}

function unescapeSaveField(field: string): string | null {
  if (!/^(?:[^%]|%[0-9A-Fa-f]{2})*$/.test(field)) return null;
  return field.replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}

/** The IP as the daemon keys it: an address in canonical form, or a client that did not know
 *  its address (IndiMail sends the text "unknown"), kept as text. Text that looks like a
 *  botched address (only hex digits, dots and colons) is an error, not a text client. */
export function saveFileIp(text: string): string | { error: string } {
  const n = normaliseIp(text);
  if (n !== null) return n.ip;
  if (text === '' || /^[0-9A-Fa-f.:]*$/.test(text)) return { error: `${JSON.stringify(text.slice(0, 60))} is not an IPv4 or IPv6 address` };
  if (text.includes(' ')) return { error: `client IP ${JSON.stringify(text.slice(0, 60))} holds a space, which the daemon never stores` };
  return text;
}

/** A record, or null for a blank line, or what is wrong with the line. Lines are latin1
 *  text: addresses are bytes, as on the wire. */
export function parseSaveLine(line: string, now: number): SaveRecord | null | { error: string } {
  const text = line.endsWith('\r') ? line.slice(0, -1) : line;
  if (text.trim() === '') return null;
  const f = text.split(' ');
  let kind = f[0];
  if (kind === 'I%' || kind === 'G%') {
    for (let i = 2; i < f.length; i++) {
      const u = unescapeSaveField(f[i]);
      if (u === null) return { error: `field ${i + 1} of an escaped line has a "%" not followed by two hex digits` };
      if (u.includes(' ')) return { error: `field ${i + 1} holds an escaped space, which the daemon removes from every address` };
      f[i] = u;
    }
    kind = kind[0];
  }
  if (kind !== 'I' && kind !== 'G') return { error: `starts with ${JSON.stringify(kind.slice(0, 20))}, not I or G` };
  if (!/^\d{1,12}$/.test(f[1] ?? '')) return { error: `time ${JSON.stringify((f[1] ?? '').slice(0, 20))} is not Unix seconds` };
  const time = Number(f[1]);
  if (time > now + MAX_FUTURE) return { error: `time ${time} is more than a day in the future` };
  const ip = saveFileIp(f[2] ?? '');
  if (typeof ip !== 'string') return ip;
  if (kind === 'I') {
    if (f.length !== 3) return { error: `an I line has 3 fields (I time ip), this one has ${f.length}` };
    return { kind: 'ip', ip, time };
  }
  // the recipient may be empty ("G t ip sender "), never absent
  if (f.length !== 5) return { error: `a G line has 5 fields (G time ip sender recipient), this one has ${f.length}` };
  if (f[3] === '') return { error: 'empty sender (the save file writes a bounce as ".")' };
  return { kind: 'triplet', ip, sender: asciiLower(f[3]), rcpt: asciiLower(f[4]), time };
}

/** A save-file line: greydaemon's plain form, or the escaped form for addresses it cannot carry. */
export function formatSaveLine(r: SaveRecord): string {
  const fields = r.kind === 'ip' ? [r.ip] : [r.ip, r.sender, r.rcpt];
  const kind = r.kind === 'ip' ? 'I' : 'G';
  if (!fields.some(needsEscape)) return `${kind} ${r.time} ${fields.join(' ')}`;
  return `${kind}% ${r.time} ${fields.map(escapeSaveField).join(' ')}`;
}
