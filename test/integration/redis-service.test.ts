// The daemontools service on Redis: qgreyd-conf --store writes env/STORE (mode 0600), the run
// script hands the URL to qgreyd in its environment, and the password shows neither in qgreyd's
// command line (what ps shows) nor in its log.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { procCmdline } from '../proc.js';
import { freePort, query, removeDir, ROOT, sleep, tempDir } from '../helpers.js';
import { REDIS_SKIP, REQUIRED, requireRedis, startStandalone } from '../redis-server.js';

if (REQUIRED) requireRedis();
const CONF = join(ROOT, 'dist', 'src', 'cli', 'qgreyd-conf.js');
const HAVE_ENVDIR = spawnSync('/bin/sh', ['-c', 'command -v envdir']).status === 0;
const skip = REDIS_SKIP || (!HAVE_ENVDIR && process.env.QGREYD_REQUIRE_DAEMONTOOLS !== '1' ? 'envdir is not installed (apt-get install daemontools)' : false);

test('qgreyd-conf --store: env/STORE mode 0600, the URL reaches qgreyd by its environment, the password in neither ps nor the log', { skip }, async () => {
  const redis = await startStandalone(['requirepass s3cret-pw']);
  const dir = tempDir('qgreyd-svc-');
  chmodSync(dir, 0o755);
  const svc = join(dir, 'qgreyd');
  try {
    const user = process.getuid?.() === 0 ? 'nobody' : (process.env.USER ?? 'root');
    const url = redis.url.replace('redis://', 'redis://:s3cret-pw@');
    const bad = spawnSync(process.execPath, [CONF, user, user, svc, '127.0.0.1:1999', '--store', 'redis://host:99999'], { encoding: 'utf8' });
    assert.equal(bad.status, 100);
    assert.match(bad.stderr, /--store "redis:\/\/host:99999": port "99999"/);
    const port = await freePort('tcp');
    const r = spawnSync(process.execPath, [CONF, user, user, svc, `127.0.0.1:${port}`, '--store', url], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readFileSync(join(svc, 'env', 'STORE'), 'utf8'), `${url}\n`);
    assert.equal(statSync(join(svc, 'env', 'STORE')).mode & 0o777, 0o600);
    const proc = spawn('/bin/sh', ['./run'], { cwd: svc, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
    try {
      for (let i = 0; i < 200 && !/^start /m.test(out); i++) await sleep(50);
      assert.match(out, /^start .* store=redis:\/\/:\*\*\*@127\.0\.0\.1:\d+ /m);
      assert.equal(await query(port, '192.0.2.9', 'a@x.example', ['b@y.example']), '0001');
      const cmdline = procCmdline(proc.pid!).join(' ');
      assert.match(cmdline, /qgreyd\.js/, 'the run script exec()s qgreyd');
      assert.ok(!cmdline.includes('s3cret-pw'), 'no password on the command line');
      assert.ok(!cmdline.includes('--store'), 'no --store on the command line');
      const stored = spawnSync('redis-cli', ['-p', String(redis.nodes[0].port), '-a', 's3cret-pw', '--no-auth-warning', 'get', 'qgreyd:1:G:{192.0.2.9} a@x.example b@y.example'], { encoding: 'utf8' });
      assert.match(stored.stdout, /^\d{10}\n$/, 'the record is in Redis');
    } finally {
      proc.kill('SIGTERM');
      await new Promise((res) => proc.once('exit', res));
    }
    assert.ok(!out.includes('s3cret-pw'), 'no password in the log');
  } finally {
    removeDir(dir);
    await redis.stop();
  }
});
