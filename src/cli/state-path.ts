// A greydaemon save file as the state path. greydaemon's run script ends in
// `... 127.0.0.1 save/savefile`; for it to work with only the program's path changed, a
// regular file given as the state path is imported once (PROTOCOL.md, "The reference save
// file") into a store directory beside it, `<savefile>.qgreyd`, which is used from then on.
// The save file itself is only ever read. The records are read by admin-ops' parseSaveLine
// and written by its Importer, the same code as `qgreyctl import`.
import { chownSync, closeSync, fsyncSync, lstatSync, openSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Importer, type ImportCounts } from '../admin/ops.js';
import { parseSaveLine, type SaveRecord } from '../savefile.js';
import { escapeField, quoted } from '../log/log.js';
import type { Settings } from '../policy.js';
import { Store, StoreError } from '../store/leveldb.js';
import { QgreydError } from '../errors.js';
import { fileLines } from './common.js';

/** The store directory of save file F is F + this. */
export const STORE_SUFFIX = '.qgreyd';
/** Where an import is built before it is renamed into place: a start killed mid-import
 *  leaves only this, which the next start removes and redoes. */
export const IMPORTING_SUFFIX = '.qgreyd.importing';

const BATCH = 2000;
/** unreadable lines named one by one in the log; the rest are counted */
const SHOW_BAD = 20;

export class SaveFileError extends QgreydError {
  constructor(message: string, temporary = false) {
    super('QGREYD_SAVEFILE', message, temporary);
  }
}

export interface SaveFileImport extends ImportCounts {
  lines: number;
  /** the first unreadable lines (line number, what is wrong) */
  bad: Array<{ line: number; error: string }>;
  badCount: number;
  ms: number;
}

export interface StatePath {
  /** the directory to open as the store */
  dir: string;
  /** the greydaemon save file the state path named, if it did */
  savefile: string | null;
  /** what this start imported from it; null when it was imported before (or there is none) */
  imported: SaveFileImport | null;
}

/** The store directory for a state path: the path itself, unless it is a regular file
 *  (a greydaemon save file; an empty file counts), whose store is `<file>.qgreyd`. */
export function storeDirFor(statePath: string): { dir: string; savefile: string | null } {
  const path = resolve(statePath);
  let isFile = false;
  try {
    isFile = statSync(path).isFile();
  } catch {
    // missing or unreadable: the store reports it when it opens the path
  }
  return isFile ? { dir: path + STORE_SUFFIX, savefile: path } : { dir: path, savefile: null };
}

/** Resolves the state path, importing a save file on its first use. `owner` (the -u user)
 *  gets the new directory; the import itself runs as the caller (root, before -u), so that
 *  it can create the directory beside the save file whoever owns that place. */
export async function adoptStatePath(
  statePath: string,
  settings: Settings,
  opts: { now: number; owner?: { uid: number; gid: number } | null },
): Promise<StatePath> {
  const { dir, savefile } = storeDirFor(statePath);
  if (savefile === null || exists(dir)) return { dir, savefile, imported: null };
  return { dir, savefile, imported: await importSaveFile(savefile, dir, settings, opts.now, opts.owner ?? null) };
}

/** Imports the save file into a new store at `dir`, all or nothing: the store is built under
 *  another name and renamed into place once complete and on disk. greydaemon skips a line it
 *  cannot read ("? Strange save entry") and starts; so does this, naming each line. A file of
 *  which no line is a record is refused: it is not a save file but a wrong path. */
export async function importSaveFile(file: string, dir: string, settings: Settings, now: number, owner: { uid: number; gid: number } | null): Promise<SaveFileImport> {
  const started = Date.now();
  const tmp = dir.slice(0, -STORE_SUFFIX.length) + IMPORTING_SUFFIX;
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw new SaveFileError(`save file ${file}: cannot read it (${(e as NodeJS.ErrnoException).code}); make it readable by the user that starts qgreyd`);
  }
  try {
    rmSync(tmp, { recursive: true, force: true });
    let store: Store;
    try {
      store = await Store.open(tmp, { cacheSize: 0 });
    } catch (e) {
      if (!(e instanceof StoreError)) throw e;
      throw new SaveFileError(`save file ${file}: cannot create its store directory ${dir} beside it (${e.message}); make ${dirname(file)} writable, or give qgreyd a state directory and load the file with qgreyctl import`, e.temporary);
    }
    const importer = new Importer({ store, settings, clock: () => now, exclusive: (fn) => fn(), write: (ops) => store.write(ops) });
    const result: SaveFileImport = { ...importer.counts, lines: 0, bad: [], badCount: 0, ms: 0 };
    try {
      let batch: SaveRecord[] = [];
      for await (const line of fileLines(fd)) {
        result.lines++;
        const r = parseSaveLine(line, now);
        if (r === null) continue;
        if ('error' in r) {
          if (result.badCount++ < SHOW_BAD) result.bad.push({ line: result.lines, error: r.error });
          continue;
        }
        batch.push(r);
        if (batch.length >= BATCH) {
          await importer.add(batch);
          batch = [];
        }
      }
      if (batch.length > 0) await importer.add(batch);
    } catch (e) {
      await store.close().catch(() => undefined);
      if (e instanceof StoreError) throw new SaveFileError(`save file ${file}: importing into ${tmp} failed (${e.message}); nothing was imported`, e.temporary);
      const err = e as NodeJS.ErrnoException;
      throw new SaveFileError(`save file ${file}: cannot read it (${err.code ?? err.message}); nothing was imported`);
    }
    await store.close();
    Object.assign(result, importer.counts);
    if (importer.counts.records === 0 && result.badCount > 0) {
      const first = result.bad[0];
      throw new SaveFileError(
        `save file ${file}: no line of it is a greydaemon record (line ${first.line}: ${first.error}), so it is not a save file; ` +
          'give the right state path, or empty the file to start with no state',
      );
    }
    onDisk(tmp);
    if (owner !== null) {
      for (const name of readdirSync(tmp)) chownSync(join(tmp, name), owner.uid, owner.gid);
      chownSync(tmp, owner.uid, owner.gid);
    }
    renameSync(tmp, dir);
    syncDir(dirname(dir));
    result.ms = Date.now() - started;
    return result;
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    if (e instanceof SaveFileError) throw e;
    const err = e as NodeJS.ErrnoException;
    throw new SaveFileError(`save file ${file}: cannot import it into ${dir} (${err.code ?? err.message}); nothing was imported`, true);
  } finally {
    closeSync(fd);
  }
}

/** The log lines telling what start-up did with a save file (none for a directory). */
export function statePathLogLines(p: StatePath): string[] {
  if (p.savefile === null) return [];
  const file = escapeField(p.savefile);
  const dir = escapeField(p.dir);
  const r = p.imported;
  if (r === null) return [`savefile=${file} state=${dir} imported earlier; the save file is not read again`];
  const lines = r.bad.map((b) => `warning savefile=${file}:${b.line} skipped, not a record: ${quoted(b.error)}`);
  if (r.badCount > r.bad.length) lines.push(`warning savefile=${file} ${r.badCount - r.bad.length} more lines skipped, not records`);
  lines.push(
    `import savefile=${file} state=${dir} lines=${r.lines} records=${r.records} imported=${r.imported} dead=${r.dead} ` +
      `kept=${r.kept} skipped=${r.badCount} ms=${r.ms}`,
  );
  return lines;
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** fsync every file of the new store and the directory itself: a power loss after the
 *  rename must not leave a store directory with half its records. */
function onDisk(dir: string): void {
  for (const name of readdirSync(dir)) {
    const fd = openSync(join(dir, name), 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
  syncDir(dir);
}

function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

