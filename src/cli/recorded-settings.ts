// The settings a running qgreyd decides by, recorded in its state directory at start, so that
// qgreyctl working on the store while the daemon is stopped (stats, dump, import and its dry
// run) judges records dead exactly as the daemon would, without being told -t/-g/-m again.
//
// Written by the daemon after the state directory passed secureStateDir() (nobody else
// controls it) and after privileges were dropped (the file belongs to the daemon's user):
// a fresh file opened with O_EXCL|O_NOFOLLOW, mode 0600, then renamed over the old one, so a
// reader never sees half a file and no symbolic link planted there is written through.
import { closeSync, constants, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export const SETTINGS_FILE = 'qgreyd.settings';

export interface RecordedSettings {
  timeoutDays: number;
  greyHours: number;
  minResendMinutes: number;
}

export function settingsPath(stateDir: string): string {
  return join(stateDir, SETTINGS_FILE);
}

/** One `name value` line per setting, in the units of qgreyd's flags. */
export function formatSettings(s: RecordedSettings, writer: string): string {
  return (
    `# written by ${writer} at start: the settings qgreyctl uses while qgreyd is stopped\n` +
    `timeout-days ${s.timeoutDays}\ngrey-window-hours ${s.greyHours}\nmin-resend-minutes ${s.minResendMinutes}\n`
  );
}

export function writeSettings(stateDir: string, s: RecordedSettings, writer: string): void {
  const path = settingsPath(stateDir);
  const tmp = `${path}.tmp`;
  try {
    unlinkSync(tmp);
  } catch {
    // none left by a daemon that died while writing
  }
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    writeSync(fd, formatSettings(s, writer));
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** The recorded settings, null if there is no file; a string saying what is wrong with a file
 *  that is there but unreadable or incomplete. */
export function readSettings(stateDir: string): RecordedSettings | null | string {
  const path = settingsPath(stateDir);
  let text: string;
  try {
    const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      text = readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    return `${path}: cannot read it (${code ?? (e as Error).message})`;
  }
  const v = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-z-]+) +([0-9.]+)$/.exec(line.trim());
    if (m !== null && Number.isFinite(Number(m[2]))) v.set(m[1], Number(m[2]));
  }
  const t = v.get('timeout-days');
  const g = v.get('grey-window-hours');
  const m = v.get('min-resend-minutes');
  if (t === undefined || g === undefined || m === undefined || t <= 0 || g <= 0 || m < 0) {
    return `${path}: not the settings qgreyd writes (timeout-days, grey-window-hours, min-resend-minutes)`;
  }
  return { timeoutDays: t, greyHours: g, minResendMinutes: m };
}
