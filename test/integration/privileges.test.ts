// -u: the daemon binds first (a port below 1024 needs root), then runs as the user, with that
// user's uid, gid and groups and no capabilities left. Checked on the running process.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { query, removeDir, runDaemon, startDaemon, tempDir, type Daemon } from '../helpers.js';
import { procStatus } from '../proc.js';

const ROOT = process.getuid?.() === 0;
const SKIP = ROOT ? false : 'needs root (to create a user and bind a port below 1024)';


/** A throwaway system user with its own group and one supplementary group; removed by the caller. */
function makeUser(): { name: string; group: string; uid: number; gid: number; groups: number[] } {
  const tag = `${process.pid % 10000}${Math.floor(Math.random() * 1000)}`;
  const name = `qgreyd-t${tag}`;
  const group = `qgreyd-g${tag}`;
  execFileSync('groupadd', ['-r', group]);
  execFileSync('useradd', ['-r', '-M', '-U', '-G', group, '-s', '/bin/false', name]);
  const id = (flag: string) => execFileSync('id', [flag, name], { encoding: 'utf8' }).trim();
  return { name, group, uid: Number(id('-u')), gid: Number(id('-g')), groups: id('-G').split(/\s+/).map(Number).sort((a, b) => a - b) };
}

function removeUser(u: { name: string; group: string }): void {
  for (const [cmd, arg] of [['userdel', u.name], ['groupdel', u.name], ['groupdel', u.group]]) {
    try {
      execFileSync(cmd, [arg], { stdio: 'ignore' });
    } catch {
      // already gone (userdel may remove the user's own group)
    }
  }
}

/** Starts the daemon on a free port below 1024, trying a few. */
async function startLowPort(args: (port: number) => string[]): Promise<{ d: Daemon; port: number }> {
  let last = '';
  for (let i = 0; i < 10; i++) {
    const port = 600 + Math.floor(Math.random() * 400);
    try {
      return { d: await startDaemon(args(port)), port };
    } catch (e) {
      last = (e as Error).message;
      if (!/address in use/.test(last)) throw e;
    }
  }
  throw new Error(`no free port below 1024: ${last}`);
}

test('-u binds a port below 1024 as root, then runs with only the user\'s uid, gid and groups', { skip: SKIP }, async () => {
  const u = makeUser();
  const dir = tempDir();
  chmodSync(dir, 0o755);
  const state = join(dir, 'state');
  let daemon: Daemon | null = null;
  try {
    const { d, port } = await startLowPort((p) => ['-u', u.name, `127.0.0.1:${p}`, state]);
    daemon = d;
    assert.ok(port < 1024);
    assert.match(d.lines[0], new RegExp(` listen=127\\.0\\.0\\.1:${port} .* user=${u.name} `));
    const st = procStatus(d.proc.pid!);
    assert.deepEqual(st.Uid.split(/\s+/).map(Number), [u.uid, u.uid, u.uid, u.uid], 'real, effective, saved and fs uid');
    assert.deepEqual(st.Gid.split(/\s+/).map(Number), [u.gid, u.gid, u.gid, u.gid], 'real, effective, saved and fs gid');
    assert.deepEqual(st.Groups.split(/\s+/).filter(Boolean).map(Number).sort((a, b) => a - b), u.groups, 'supplementary groups are the user\'s, root\'s are gone');
    assert.ok(u.groups.length >= 2, 'the user has a supplementary group, so the check means something');
    assert.equal(BigInt('0x' + st.CapEff), 0n, 'no effective capabilities');
    assert.equal(BigInt('0x' + st.CapPrm), 0n, 'no permitted capabilities');
    // the store was created for the user and works
    assert.equal(await query(port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0001');
    assert.equal(statSync(state).uid, u.uid);
    for (const f of readdirSync(state)) assert.equal(statSync(join(state, f)).uid, u.uid, f);
  } finally {
    await daemon?.stop();
    removeDir(dir);
    removeUser(u);
  }
});

test('-u with a state directory the user cannot write: exit 100 naming the path and the user', { skip: SKIP }, async () => {
  const u = makeUser();
  const dir = tempDir();
  chmodSync(dir, 0o755);
  const state = join(dir, 'state');
  mkdirSync(state, { mode: 0o755 }); // root's, not writable by the user
  try {
    const r = await runDaemon(['-u', u.name, '127.0.0.1:0', state]);
    assert.equal(r.code, 100, r.stderr);
    assert.match(r.stderr, new RegExp(`^qgreyd: state directory ${state}: cannot open the store .*writable by the daemon's user \\(running as ${u.name}\\)\\n$`));
  } finally {
    removeDir(dir);
    removeUser(u);
  }
});

test('-u with an unknown user: exit 100 before binding', async () => {
  const r = await runDaemon(['-u', 'no-such-user-qgreyd', '127.0.0.1:0', '/nonexistent/x']);
  assert.equal(r.code, 100);
  assert.match(r.stderr, /-u: user "no-such-user-qgreyd" does not exist/);
});
