#!/usr/bin/env node
// qgreyctl: the administrator's tool for qgreyd. Query the daemon, inspect and change its
// store (through the running daemon's admin socket, or directly when it is stopped), migrate
// from greydaemon, and report on the decision log.
// Exit codes: 0 success (accept, match), 1 a negative answer (defer, no match, nothing to
// forget), 100 permanent error (usage, bad file), 111 temporary error (no answer, locked).
import { cmdQuery } from './qgreyctl/query.js';
import { cmdDump } from './qgreyctl/dump.js';
import { cmdStats } from './qgreyctl/stats.js';
import { cmdImport } from './qgreyctl/import.js';
import { cmdExport } from './qgreyctl/export.js';
import { cmdWhitelist } from './qgreyctl/whitelist.js';
import { cmdAllow } from './qgreyctl/allow.js';
import { cmdForget } from './qgreyctl/forget.js';
import { cmdReport } from './qgreyctl/report.js';
import { cmdSpfWhitelist } from './qgreyctl/spf-whitelist.js';
import { GLOBAL_USAGE, HELP } from './qgreyctl/help.js';
import { guardStdout, Usage } from './qgreyctl/shared.js';
import { EXIT_OK, EXIT_TEMPORARY, exitOnError, fail, version } from './common.js';
import { StoreError } from '../store.js';

const COMMANDS: Record<string, (argv: string[], globalState: string | undefined) => Promise<number>> = {
  query: cmdQuery,
  dump: cmdDump,
  stats: cmdStats,
  import: cmdImport,
  export: cmdExport,
  whitelist: cmdWhitelist,
  allow: cmdAllow,
  forget: cmdForget,
  report: cmdReport,
  'spf-whitelist': cmdSpfWhitelist,
};

async function main(argv: string[]): Promise<number> {
  guardStdout();
  // options before the command: only --state, --help and --version
  let globalState: string | undefined;
  let i = 0;
  for (; i < argv.length && argv[i].startsWith('-'); i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(GLOBAL_USAGE + '\n');
      return EXIT_OK;
    }
    if (arg === '--version') {
      process.stdout.write(`qgreyctl ${version()}\n`);
      return EXIT_OK;
    }
    if (arg === '--state') {
      if (i + 1 >= argv.length) throw new Usage('--state needs a directory');
      globalState = argv[++i];
    } else if (arg.startsWith('--state=')) {
      globalState = arg.slice('--state='.length);
    } else {
      throw new Usage(`unknown option ${arg} before the command; see qgreyctl --help`);
    }
    if (globalState === '') throw new Usage("--state: an empty path; give the daemon's state directory");
  }
  const cmd = argv[i];
  if (cmd === undefined) throw new Usage('no command given; see qgreyctl --help');
  if (cmd === 'help') {
    const which = argv[i + 1];
    process.stdout.write((which !== undefined && HELP[which] ? HELP[which] : GLOBAL_USAGE) + '\n');
    return EXIT_OK;
  }
  const run = COMMANDS[cmd];
  if (run === undefined) throw new Usage(`unknown command ${JSON.stringify(cmd)}; commands: ${Object.keys(COMMANDS).join(', ')}`);
  return run(argv.slice(i + 1), globalState);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    // met while working on an open store (a corrupt block): the message carries the advice,
    // and the same command succeeds once the store is repaired
    if (e instanceof StoreError) fail('qgreyctl', e.message, EXIT_TEMPORARY);
    exitOnError('qgreyctl', e);
  },
);
