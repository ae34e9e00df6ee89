// One qmail-smtpd DATA stage from the command line, for tests that must run the client in
// another network namespace: qmail-client-run FAMILY GREYIP TCPREMOTEIP SENDER RCPT...
// prints the Outcome as one JSON line (the datagram left out).
import { QmailSmtpd, type Family } from './qmail-client.js';

const [family, greyip, remote, sender, ...recipients] = process.argv.slice(2);
const client = new QmailSmtpd({ family: family as Family, greyip, silenceMs: Number(process.env.SILENCE_MS) || undefined });
const outcome = await client.check({ TCPREMOTEIP: remote }, sender, recipients);
process.stdout.write(JSON.stringify({ ...outcome, sent: undefined }) + '\n');
