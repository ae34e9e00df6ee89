// `npm start` runs the daemon on its embedded defaults (127.0.0.1:1999, ./data), and
// `npm start -- ADDR:PORT DIR` (any qgreyd arguments after --) runs it elsewhere.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { query, removeDir, ROOT, tempDir } from '../helpers.js';

function npmStart(args: string[]): { lines: string[]; started: Promise<string>; stop: () => Promise<number | null> } {
  // detached: npm runs the daemon through a shell; the whole group is signalled at the end
  const proc = spawn('npm', ['start', '--silent', '--', ...args], { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let err = '';
  proc.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const started = new Promise<string>((resolve, reject) => {
    let partial = '';
    proc.stdout.on('data', (c: Buffer) => {
      const parts = (partial + c.toString()).split('\n');
      partial = parts.pop()!;
      lines.push(...parts);
      const start = parts.find((l) => l.startsWith('start '));
      if (start) resolve(start);
    });
    void exited.then((code) => reject(new Error(`npm start exited ${code}: ${lines.join('\n')} ${err}`)));
    setTimeout(() => reject(new Error(`npm start printed no start line in 60 s: ${lines.join('\n')} ${err}`)), 60_000).unref();
  });
  return {
    lines,
    started,
    stop: async () => {
      process.kill(-proc.pid!, 'SIGTERM');
      const code = await exited;
      // npm may exit before the daemon below it has closed its store: wait for the whole group
      for (let i = 0; i < 200 && groupAlive(proc.pid!); i++) await new Promise((r) => setTimeout(r, 50));
      return code;
    },
  };
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('npm start', () => {
  it('takes a listen address and a state directory after --', async () => {
    const dir = tempDir();
    const state = join(dir, 'state');
    const run = npmStart(['127.0.0.1:0', state]);
    try {
      const start = await run.started;
      const m = /listen=127\.0\.0\.1:(\d+) /.exec(start);
      assert.ok(m, start);
      assert.match(start, new RegExp(` state=${state} `));
      assert.match(start, / whitelist=whitelist\/whitelist /);
      assert.equal(await query(Number(m[1]), '192.0.2.1', 'a@x.example', ['b@y.example']), '0001');
      assert.ok(existsSync(join(state, 'CURRENT')));
    } finally {
      await run.stop();
      removeDir(dir);
    }
  });
});
