// -u: look the user up, then (after binding) take its uid, gid and supplementary groups.
import { execFileSync } from 'node:child_process';
import { UsageError } from './args.js';

export interface Account {
  name: string;
  uid: number;
  gid: number;
  groups: number[];
}

/** Looks a user up through the system's own `id` (so NSS sources count, not only /etc/passwd). */
export function lookupUser(name: string): Account {
  try {
    const uid = Number(execFileSync('id', ['-u', '--', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    const gid = Number(execFileSync('id', ['-g', '--', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    const groups = execFileSync('id', ['-G', '--', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      .trim()
      .split(/\s+/)
      .map(Number);
    if (!Number.isInteger(uid) || !Number.isInteger(gid) || !groups.every(Number.isInteger)) throw new Error('bad id output');
    return { name, uid, gid, groups };
  } catch {
    throw new UsageError(`-u: user ${JSON.stringify(name)} does not exist; create it (e.g. useradd -r -s /usr/sbin/nologin ${name}) or give another user`);
  }
}

export function dropPrivileges(account: Account): void {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    throw new UsageError(`-u ${account.name}: only root can change user; run qgreyd as root, or leave out -u`);
  }
  process.setgroups!(account.groups);
  process.setgid!(account.gid);
  process.setuid!(account.uid);
}
