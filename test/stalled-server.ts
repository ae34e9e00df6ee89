// The daemon's parts in the test's process (store, decision queue, UDP server) with the store
// stalled, as a long exclusive job stalls it: no batch runs until release(). For the tests
// of what the server does meanwhile (in-flight bounds, fairness, shutdown).
import { join } from 'node:path';
import { Greylist } from '../src/daemon/queue.js';
import { LineWriter } from '../src/log/log.js';
import { settingsFrom } from '../src/policy.js';
import { Server } from '../src/daemon/server.js';
import { Store } from '../src/store/leveldb.js';
import { Whitelist } from '../src/whitelist.js';
import { removeDir, tempDir } from './helpers.js';

export interface StalledServer {
  server: Server;
  gl: Greylist;
  port: number;
  log: LineWriter;
  /** the log lines written so far (after log.flush()) */
  lines: string[];
  /** lets the stalled store go on */
  release(): void;
  /** resolves once released and the stall has ended */
  stalled: Promise<void>;
  /** releases, closes everything (the server unless already closed) and removes the store */
  close(): Promise<void>;
}

export async function stalledServer(opts: { failClosed?: boolean; shutdownGraceMs?: number } = {}): Promise<StalledServer> {
  const dir = tempDir();
  const store = await Store.open(join(dir, 's'));
  const lines: string[] = [];
  const log = new LineWriter({ write: (s: string) => (lines.push(...s.split('\n').filter(Boolean)), true) } as unknown as NodeJS.WritableStream);
  const server = new Server({ host: '127.0.0.1', port: 0, debug: false, log, ...opts });
  const gl = new Greylist(store, settingsFrom(7, 12, 5), Whitelist.empty());
  const { port } = await server.listen();
  server.attach(gl);
  let release!: () => void;
  const stalled = gl.exclusive(() => new Promise<void>((res) => (release = res)));
  let closed = false;
  return {
    server,
    gl,
    port,
    log,
    lines,
    release: () => release(),
    stalled,
    async close() {
      if (closed) return;
      closed = true;
      release();
      await stalled;
      await server.close();
      await gl.stop();
      await store.close();
      removeDir(dir);
    },
  };
}
