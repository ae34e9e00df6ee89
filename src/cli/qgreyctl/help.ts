// qgreyctl's --help texts, one per command (man/qgreyctl.8 is checked against them).
import { DEFAULT_WAIT_MS } from '../../admin/client.js';
import { DEFAULT_RETRY } from '../../report/report.js';
import { DEFAULT_STATE } from '../args.js';
import { SPF_WHITELIST_HELP } from './spf-whitelist.js';

import { EXIT_OK } from '../common.js';
import type { CtlIo } from './io.js';

export const GLOBAL_USAGE = `usage: qgreyctl [--state DIR] COMMAND [ARGS]

commands:
  query [--server IP:PORT] [--wait S] CLIENT-IP SENDER RCPT...   ask the daemon, as qmail-smtpd does
  dump [--json] [--ip IP] [--sender S] [--rcpt R] [--ips|--triplets] list stored records
  stats [--json]                                   counts, dead records, oldest/newest, disk use
  import [--skip-bad] [--dry-run] FILE             load a greydaemon save file
  export                                           write the store as a greydaemon save file
  whitelist check FILE IP                          does IP match the whitelist, and which line
  allow IP                                         mark IP known good from now
  forget IP [SENDER RCPT]                          delete IP's records, or one triplet
  report [--retry S] [--top N] [--json] [--html FILE] [LOGFILE...]  summarise the decision log
  spf-whitelist [-o FILE] [--resolver IP:PORT] DOMAIN... | -f LISTFILE
                                                   a whitelist from big senders' SPF records

  --state DIR   the daemon's state directory (default ${DEFAULT_STATE}); before or after COMMAND.
                A greydaemon save file qgreyd was given stands for the store made from it.
                When qgreyd runs, qgreyctl works through DIR/admin.sock; else it opens DIR itself.
  --wait S      (after COMMAND) seconds to wait for each answer from a running daemon
                (default ${DEFAULT_WAIT_MS / 1000}; query: for the UDP reply, default 3); no answer
                in time: exit 111. --timeout always means days (the daemon's -t).
  --store URL   (after COMMAND) the daemon's --store (default: QGREYD_STORE): with the
                daemon stopped, qgreyctl works on that Redis itself.
  COMMAND --help shows a command's options.

exit codes: 0 done (accept, match); 1 a "no" (defer, no match, nothing to forget);
            100 permanent error (usage, unreadable file); 111 temporary (no answer, store locked)`;

export const SETTINGS_HELP = `  -t, --timeout DAYS        the daemon's -t  } used only when the daemon is stopped, instead of
  -g, --grey-window HOURS   the daemon's -g  } the settings qgreyd recorded in DIR/qgreyd.settings
  -m, --min-resend MINUTES  the daemon's -m  } at its last start (or 7, 12, 5 without that file);
                                                a running daemon's own settings win`;

export const HELP: Record<string, string> = {
  query: `usage: qgreyctl query [--server IP:PORT] [--wait SECONDS] CLIENT-IP SENDER RCPT...

Sends the request qmail-smtpd would send and prints the reply, e.g. "defer 00:01 new triplet".
SENDER '' or '<>' is a bounce. --server defaults to 127.0.0.1:1999; --wait, how long to wait
for the reply, to 3 seconds (qmail-smtpd's wait).
A whitelisted probe address makes this a health check that changes no state.
exit: 0 accept, 1 defer, 100 usage, 111 no answer within --wait.`,
  dump: `usage: qgreyctl dump [--json] [--ip IP] [--sender S] [--rcpt R] [--ips | --triplets] [--state DIR]

Lists known-good IPs and triplets with their times (ISO 8601 UTC and age), streaming.
--ip, --sender, --rcpt filter (exact address, or @domain); --sender '' (or '<>') is the bounce
sender, shown as <> (and "" in --json). --json prints one JSON object per line. Dead records (by the daemon's settings) are marked.
${SETTINGS_HELP}
exit: 0 done, 100 usage or bad state directory, 111 store locked, daemon gone, or no answer within --wait SECONDS (default 30)`,
  stats: `usage: qgreyctl stats [--json] [--state DIR]

Counts of known-good IPs and triplets, how many are dead but not yet swept, the oldest and
newest times, and the store's size on disk. Through a running daemon, also its live counters
since it started (requests, malformed, refused, overload, store health, the last sweep; with
qgreyd --metrics, replies by reason and each whitelist entry's hits); --json: "live".
${SETTINGS_HELP}
exit: 0 done, 100 usage or bad state directory, 111 store locked, daemon gone, or no answer within --wait SECONDS (default 30)`,
  import: `usage: qgreyctl import [--skip-bad] [--dry-run] SAVEFILE [--state DIR]

Loads a greydaemon save file ("I time ip" and "G time ip sender recipient" lines), keeping the
times. The whole file is read and checked first: if any line is unreadable, nothing is
imported (each bad line is named) unless --skip-bad imports the good lines. Records already
dead by the settings are skipped; a record the store holds with better evidence (a later
last-good time, an earlier live first-seen time) is kept. Importing twice changes nothing.
--dry-run checks the file and counts, and writes nothing. Stop greydaemon first: it rewrites
its save file every few minutes.
${SETTINGS_HELP}
exit: 0 imported, 100 usage, unreadable file or bad lines, 111 store locked, daemon gone, or no answer within --wait SECONDS (default 30)`,
  export: `usage: qgreyctl export [--state DIR] > SAVEFILE

Writes every stored record as a greydaemon save file on standard output, streaming.
exit: 0 done, 100 usage or bad state directory, 111 store locked, daemon gone, or no answer within --wait SECONDS (default 30)`,
  whitelist: `usage: qgreyctl whitelist check FILE IP

Says whether IP matches the whitelist FILE, and which line matches (the most specific).
Lines not in a clean form (greydaemon's sloppy forms) are read as greydaemon read them, and
each is named on stderr with how it was read, as qgreyd logs it.
exit: 0 match, 1 no match, 100 usage or a bad or unreadable file.`,
  allow: `usage: qgreyctl allow IP [--state DIR]

Marks IP known good from now on, as if one of its triplets had just passed: its mail is
accepted until it has been idle for the daemon's timeout (-t). Logged by a running daemon.
exit: 0 done, 100 usage, 111 store locked, daemon gone, or no answer within --wait SECONDS (default 30)`,
  forget: `usage: qgreyctl forget IP [SENDER RCPT] [--state DIR]

Deletes IP's known-good record and all of its triplets; or, with SENDER and RCPT, that one
triplet (keyed as the daemon keys it: spaces removed, lower-cased, '' or '<>' for a bounce).
Logged by a running daemon.
exit: 0 deleted, 1 nothing to delete, 100 usage, 111 store locked, daemon gone, or no answer within --wait SECONDS (default 30)`,
  report: `usage: qgreyctl report [--retry SECONDS] [--top N] [--json] [--html FILE] [LOGFILE...]

Reads the daemon's log (multilog output, raw "@4000..." stamps or tai64nlocal times, or no
stamps; greydaemon's log too, so the weeks before the switch can be compared) from the files
in order, or standard input, and reports per deferred message
(sender, recipient): those that came back (accepted later, from any address) and their retry
delay; those that kept trying and never passed; those that never came back (likely spam);
the top deferred client networks (/24, /48) and sender domains; a histogram of retry delays.
A message counts as retried if it came back within --retry seconds (default ${DEFAULT_RETRY});
one deferred in the last --retry seconds of the log is "too recent to tell".
Without stamps, delays are unknown. --top limits each list (default 10). A per-day table
(UTC) ends the report. --html FILE also writes the report as one self-contained HTML page
with charts (decisions per hour and per day, retry delays, top deferred networks and
senders); --html - prints the page instead of the text.
exit: 0 done, 100 usage, unreadable log or unwritable FILE, 111 FILE could not be written
for lack of space.`,
  'spf-whitelist': SPF_WHITELIST_HELP,
};

export async function help(cmd: string, io: CtlIo): Promise<number> {
  await io.out(HELP[cmd] + '\n');
  return EXIT_OK;
}
