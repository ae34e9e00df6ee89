// qgreyctl's dispatch: the options before the command, then the command's module. Errors are
// thrown as QgreydErrors; the program's entry (cli/qgreyctl.ts) turns them into an exit code.
import { cmdQuery } from './query.js';
import { cmdDump } from './dump.js';
import { cmdStats } from './stats.js';
import { cmdImport } from './import.js';
import { cmdExport } from './export.js';
import { cmdWhitelist } from './whitelist.js';
import { cmdAllow } from './allow.js';
import { cmdForget } from './forget.js';
import { cmdReport } from './report.js';
import { cmdSpfWhitelist } from './spf-whitelist.js';
import { GLOBAL_USAGE, HELP } from './help.js';
import { Usage } from './shared.js';
import type { CtlContext, CtlIo } from './io.js';
import { EXIT_OK, EXIT_TEMPORARY, version } from '../common.js';
import { StoreError } from '../../store/errors.js';
import { CtlError } from '../../admin/client.js';

const COMMANDS: Record<string, (argv: string[], ctx: CtlContext) => Promise<number>> = {
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

/** qgreyctl with these arguments: its exit code, or a thrown error (a QgreydError) for the
 *  entry's exitOnError. Nothing here or in a command exits the process or touches its streams but
 *  through `io`, so tests run commands in their own process. */
export async function main(argv: string[], io: CtlIo): Promise<number> {
  // options before the command: only --state, --help and --version
  let globalState: string | undefined;
  let i = 0;
  for (; i < argv.length && argv[i].startsWith('-'); i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      await io.out(GLOBAL_USAGE + '\n');
      return EXIT_OK;
    }
    if (arg === '--version') {
      await io.out(`qgreyctl ${version()}\n`);
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
    await io.out((which !== undefined && HELP[which] ? HELP[which] : GLOBAL_USAGE) + '\n');
    return EXIT_OK;
  }
  const run = COMMANDS[cmd];
  if (run === undefined) throw new Usage(`unknown command ${JSON.stringify(cmd)}; commands: ${Object.keys(COMMANDS).join(', ')}`);
  try {
    return await run(argv.slice(i + 1), { globalState, io });
  } catch (e) {
    // met while working on an open store (a corrupt block): the message carries the advice,
    // and the same command succeeds once the store is repaired
    if (e instanceof StoreError) throw new CtlError(e.message, EXIT_TEMPORARY, { cause: e });
    throw e;
  }
}
