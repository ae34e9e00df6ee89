// rediss://: qgreyd on a Redis that speaks only TLS, its certificate from a private CA given to
// Node by NODE_EXTRA_CA_CERTS; without that CA the certificate is refused at start (exit 111).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { freePort, query, removeDir, runDaemon, sleep, startDaemon, tempDir } from '../helpers.js';
import { REDIS_SKIP, REQUIRED, requireRedis } from '../redis-server.js';

if (REQUIRED) requireRedis();
const HAVE_OPENSSL = spawnSync('/bin/sh', ['-c', 'command -v openssl']).status === 0;

function openssl(dir: string, ...args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

test('rediss:// to a TLS-only Redis: decisions with the CA trusted, a refusal (exit 111) without it', { skip: REDIS_SKIP || (HAVE_OPENSSL ? false : 'openssl is not installed') }, async () => {
  const dir = tempDir('qgreyd-tls-');
  const port = await freePort('tcp');
  openssl(dir, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=qgreyd test CA');
  openssl(dir, 'req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'srv.key', '-out', 'srv.csr', '-subj', '/CN=127.0.0.1');
  writeFileSync(join(dir, 'ext'), 'subjectAltName=IP:127.0.0.1\n');
  openssl(dir, 'x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'srv.pem', '-days', '2', '-extfile', 'ext');
  const redis = spawn('redis-server', ['--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1', '--tls-cert-file', join(dir, 'srv.pem'), '--tls-key-file', join(dir, 'srv.key'), '--tls-ca-cert-file', join(dir, 'ca.pem'), '--tls-auth-clients', 'no', '--save', '', '--dir', dir], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 100; i++) {
      const r = spawnSync('redis-cli', ['--tls', '--cacert', join(dir, 'ca.pem'), '-h', '127.0.0.1', '-p', String(port), 'ping'], { encoding: 'utf8' });
      if (r.stdout.trim() === 'PONG') break;
      await sleep(50);
    }
    const url = `rediss://127.0.0.1:${port}`;
    const refused = await runDaemon(['--store', url, '127.0.0.1:0', join(dir, 'state-a')]);
    assert.equal(refused.code, 111, refused.stderr);
    assert.match(refused.stderr, /rediss:\/\/127\.0\.0\.1:\d+: .*certificate/i);
    const d = await startDaemon(['--store', url, '127.0.0.1:0', join(dir, 'state-b')], { env: { ...process.env, NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem') } });
    try {
      assert.equal(await query(d.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0001');
      assert.equal(await query(d.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0002');
    } finally {
      await d.stop();
    }
  } finally {
    redis.kill('SIGTERM');
    await new Promise((r) => redis.once('exit', r));
    removeDir(dir);
  }
});
