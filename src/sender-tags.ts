// --normalise-senders: the envelope sender with its per-message parts taken out, so that a
// message whose sender changes on every retry (BATV, SRS, VERP, +extension) is still one
// triplet. Pure; the policy applies it when the option is on. The rules:
//
//  1. BATV: `prvs=TAG=local@domain`, `msprvs1=TAG=local@domain` and `btv1==TAG==local@domain`
//     become `local@domain`.
//  2. SRS: `SRS0=HASH=TT=orig-domain=orig-local@forwarder` becomes `orig-local@orig-domain`;
//     `SRS1=HASH=first-forwarder==HASH=TT=orig-domain=orig-local@forwarder` likewise (the
//     original address is carried unchanged). `SRS0+`/`SRS0-` separators are read too.
//  3. `+extension`: `local+anything@domain` becomes `local@domain`. The `-` that qmail uses
//     for extensions is left alone: `john-smith@` and `john-doe@` are different people far
//     more often than one person's extensions.
//  4. Per-message tokens in the local part: splitting it at `-` `.` `_` `+` `=`, a token of
//     four or more digits becomes `#`, and so does a token of four or more hex digits that
//     mixes digits and letters (`bounce-1234-5678@` and `bounce-4321-8765@` are one sender;
//     `nl-a1b2c3d4e5@` and `nl-f6e5d4c3b2@` too, and the UUIDs of Amazon SES return paths).
//     Shorter tokens (`us5`, `mc`) and all-letter words (`deadbeef`) stay.
//
// The domain is never changed. SRS runs first, then BATV (an SRS address may carry the
// original sender's BATV tag), so that the address they recover goes through 3 and 4.

const BATV = /^(?:prvs|msprvs1)=[0-9a-z]+=(.+)$/i;
const BTV1 = /^btv1==[0-9a-z]+==(.+)$/i;
const SRS0 = /^srs0[=+-][^=]*=[^=]*=([^=]+)=(.+)$/i;
const SRS1 = /^srs1[=+-][^=]*=[^=]*==[^=]*=[^=]*=([^=]+)=(.+)$/i;

export function stripSenderTags(sender: string): string {
  const at = sender.lastIndexOf('@');
  if (at <= 0) return sender;
  let local = sender.slice(0, at);
  let domain = sender.slice(at + 1);

  const srs = SRS1.exec(local) ?? SRS0.exec(local);
  if (srs) {
    domain = srs[1];
    local = srs[2];
  }
  const batv = BATV.exec(local) ?? BTV1.exec(local);
  if (batv) local = batv[1];
  const plus = local.indexOf('+');
  if (plus > 0) local = local.slice(0, plus);
  local = local.replace(/[^-._+=]+/g, (token) => (isMessageToken(token) ? '#' : token));
  return `${local}@${domain}`;
}

function isMessageToken(t: string): boolean {
  if (/^\d{4,}$/.test(t)) return true;
  return t.length >= 4 && /^[0-9a-f]+$/i.test(t) && /\d/.test(t) && /[a-f]/i.test(t);
}
