// qgreyctl import: see its --help (cli/qgreyctl/help.ts) and man/qgreyctl.8.
import { fstatSync, openSync } from 'node:fs';
import type { Stats as FsStats } from 'node:fs';
import { CtlError, daemonSettings } from '../../admin/client.js';
import { isDead } from '../../admin/ops.js';
import { parseSaveLine, type SaveRecord } from '../../savefile.js';
import { unixNow } from '../../daemon/queue.js';
import { type Settings } from '../../policy.js';

import { EXIT_OK, EXIT_PERMANENT, EXIT_TEMPORARY } from '../common.js';
import { SETTINGS_SPEC, Usage, fileLines, parse, settingsArgs, settingsText, stateDir, waitArg, withBackend } from './shared.js';
import { help } from './help.js';
import type { CtlContext } from './io.js';

export const IMPORT_BATCH = 2000;
export const SHOW_BAD = 20;

export async function cmdImport(argv: string[], ctx: CtlContext): Promise<number> {
  const { a, pos } = parse('import', argv, { string: SETTINGS_SPEC.string, boolean: ['skip-bad', 'dry-run'], alias: SETTINGS_SPEC.alias });
  if (a.help) return help('import', ctx.io);
  if (pos.length !== 1) throw new Usage('import: needs one greydaemon save file; see qgreyctl import --help');
  const file = pos[0];
  // bad -t/-g/-m are usage errors before any work
  settingsArgs('import', a, null, ctx.io);
  // opened before anything else: qgreyctl may become the state directory's owner later
  let fd: number;
  let before: FsStats;
  try {
    fd = openSync(file, 'r');
    before = fstatSync(fd);
    if (before.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new CtlError(`import: cannot read ${file} (${err.code ?? err.message}); give a greydaemon save file`, EXIT_PERMANENT);
  }

  // A dry run judges deadness by the settings the real import would use: a running daemon's
  // own, else those withBackend chooses (flags, recorded, defaults).
  let running: Settings | null = null;
  let judge: Settings | null = null;
  if (a['dry-run']) {
    const dir = stateDir(a, ctx.globalState);
    running = await daemonSettings(dir, waitArg('import', a));
    judge = running ?? settingsArgs('import', a, dir, ctx.io).settings;
  }

  // pass 1: read and check every line; nothing is written yet
  const now = unixNow();
  let lines = 0;
  let records = 0;
  let bad = 0;
  let deadIps = 0;
  let deadTriplets = 0;
  try {
    for await (const line of fileLines(fd)) {
      lines++;
      const r = parseSaveLine(line, now);
      if (r === null) continue;
      if ('error' in r) {
        bad++;
        if (bad <= SHOW_BAD) ctx.io.err(`qgreyctl: ${file}:${lines}: ${r.error}\n`);
        continue;
      }
      records++;
      if (judge !== null && isDead(r, now, judge)) {
        if (r.kind === 'ip') deadIps++;
        else deadTriplets++;
      }
    }
  } catch (e) {
    throw new CtlError(`import: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); nothing imported`, EXIT_PERMANENT);
  }
  if (bad > SHOW_BAD) ctx.io.err(`qgreyctl: ${file}: ... and ${bad - SHOW_BAD} more unreadable lines\n`);
  if (records === 0 && bad > 0) {
    throw new CtlError(`import: ${file} has no readable record (${bad} unreadable line${bad === 1 ? '' : 's'}); nothing imported; is it a greydaemon save file?`, EXIT_PERMANENT);
  }
  if (bad > 0 && !a['skip-bad'] && !a['dry-run']) {
    throw new CtlError(`import: ${file} has ${bad} unreadable line${bad === 1 ? '' : 's'} of ${lines}; nothing imported (fix ${bad === 1 ? 'it' : 'them'}, or give --skip-bad to import the ${records} good records)`, EXIT_PERMANENT);
  }
  if (a['dry-run']) {
    await ctx.io.out(
      `${file}: ${lines} lines, ${records} records, ${bad} unreadable; dead by ${settingsText(judge!)}${running !== null ? " (the running daemon's)" : ''}: ${deadIps} known-good IPs, ${deadTriplets} triplets; nothing written (dry run)\n`,
    );
    return bad > 0 ? EXIT_PERMANENT : EXIT_OK;
  }

  // pass 2: the same lines again, in batches
  return withBackend('import', a, ctx, true, async (b) => {
    const changed = () => {
      const st = fstatSync(fd);
      return st.size !== before.size || st.mtimeMs !== before.mtimeMs;
    };
    if (changed()) throw new CtlError(`import: ${file} changed while it was being checked (is greydaemon still running?); stop it and import again`, EXIT_TEMPORARY);
    let lineNo = 0;
    async function* batches(): AsyncGenerator<SaveRecord[]> {
      let batch: SaveRecord[] = [];
      for await (const line of fileLines(fd)) {
        lineNo++;
        const r = parseSaveLine(line, now);
        if (r === null || 'error' in r) continue;
        batch.push(r);
        if (batch.length >= IMPORT_BATCH) {
          yield batch;
          batch = [];
        }
      }
      if (lineNo !== lines || changed()) {
        throw new CtlError(`import: ${file} changed while it was being imported (is greydaemon still running?); the records read were imported; stop it and import again`, EXIT_TEMPORARY);
      }
      if (batch.length > 0) yield batch;
    }
    const c = await b.import(batches());
    const via = b.mode === 'daemon' ? ' (through the running daemon, with its settings)' : '';
    await ctx.io.out(
      `imported ${file}${via}: ${lines} lines, ${c.records} records; ${c.imported} written, ${c.dead} skipped as dead, ${c.kept} kept the stored record` +
        (bad > 0 ? `; ${bad} unreadable lines skipped` : '') +
        '\n',
    );
    return EXIT_OK;
  });
}
