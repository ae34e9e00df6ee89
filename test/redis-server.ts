// Real Redis servers for the tests: Debian's redis-server on ephemeral loopback ports, data in
// a temp dir, always stopped by the test that started them. Without redis-server the tests skip
// saying so; with QGREYD_REQUIRE_REDIS=1 (CI) they fail instead.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, removeDir, sleep, tempDir } from './helpers.js';

export const REQUIRED = process.env.QGREYD_REQUIRE_REDIS === '1';
const INSTALL_HINT = 'redis-server is not installed (apt-get install redis-server)';

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}
export const HAVE_REDIS = has('redis-server') && has('redis-cli');

/** For test(..., { skip: REDIS_SKIP }); with QGREYD_REQUIRE_REDIS=1 nothing skips and
 *  requireRedis() fails the test. */
export const REDIS_SKIP: string | false = HAVE_REDIS || REQUIRED ? false : `${INSTALL_HINT} (QGREYD_REQUIRE_REDIS=1 makes this a failure)`;

export function requireRedis(): void {
  if (!HAVE_REDIS) throw new Error(`QGREYD_REQUIRE_REDIS=1 but ${INSTALL_HINT}`);
}

export function cli(port: number, ...args: string[]): string {
  const r = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`redis-cli ${args.join(' ')}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

export class RedisNode {
  private child: ChildProcess | null = null;
  constructor(
    readonly port: number,
    readonly dir: string,
    private readonly extra: string[],
  ) {}

  /** Starts (or restarts, on the same port and data dir) and waits until it answers PING. */
  async start(): Promise<void> {
    const conf = join(this.dir, 'redis.conf');
    writeFileSync(
      conf,
      [`port ${this.port}`, 'bind 127.0.0.1', `dir ${this.dir}`, 'save ""', 'appendonly no', 'protected-mode no', 'loglevel warning', `logfile ${join(this.dir, 'redis.log')}`, ...this.extra, ''].join('\n'),
    );
    const child = spawn('redis-server', [conf], { stdio: 'ignore' });
    this.child = child;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    for (let i = 0; i < 200; i++) {
      if (child.exitCode !== null) throw new Error(`redis-server on port ${this.port} exited at start (see ${this.dir}/redis.log)`);
      const r = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(this.port), 'ping'], { encoding: 'utf8' });
      // a server with requirepass answers, refusing: it is up
      if (r.stdout.trim() === 'PONG' || /NOAUTH/.test(r.stdout + r.stderr)) return;
      await Promise.race([sleep(50), exited]);
    }
    throw new Error(`redis-server on port ${this.port} did not answer PING`);
  }

  /** SIGKILL: the outage tests want a server that vanishes, not one that says goodbye. */
  async kill(): Promise<void> {
    const child = this.child;
    this.child = null;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGKILL');
    await exited;
  }

  /** SIGSTOP / SIGCONT: a server that is there but does not answer. */
  pause(): void {
    this.child?.kill('SIGSTOP');
  }
  resume(): void {
    this.child?.kill('SIGCONT');
  }
}

export interface RedisSetup {
  /** the --store URL for qgreyd */
  url: string;
  nodes: RedisNode[];
  /** FLUSHALL on every node */
  flush(): void;
  stop(): Promise<void>;
}

export async function startStandalone(extra: string[] = []): Promise<RedisSetup> {
  const dir = tempDir('qgreyd-redis-');
  const node = new RedisNode(await freePort('tcp'), dir, extra);
  try {
    await node.start();
  } catch (e) {
    await node.kill();
    removeDir(dir);
    throw e;
  }
  return {
    url: `redis://127.0.0.1:${node.port}`,
    nodes: [node],
    flush: () => void cli(node.port, 'flushall'),
    stop: async () => {
      await node.kill();
      removeDir(dir);
    },
  };
}

/** Three masters, no replicas, every slot covered. */
export async function startCluster(): Promise<RedisSetup> {
  const dirs: string[] = [];
  const nodes: RedisNode[] = [];
  const stop = async (): Promise<void> => {
    for (const n of nodes) await n.kill();
    for (const d of dirs) removeDir(d);
  };
  try {
    for (let i = 0; i < 3; i++) {
      const dir = tempDir('qgreyd-redis-cluster-');
      dirs.push(dir);
      const node = new RedisNode(await freePort('tcp'), dir, ['cluster-enabled yes', `cluster-config-file ${join(dir, 'nodes.conf')}`, 'cluster-node-timeout 2000']);
      nodes.push(node);
      await node.start();
    }
    cli(nodes[0].port, '--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes');
    for (let i = 0; i < 200; i++) {
      if (nodes.every((n) => /cluster_state:ok/.test(cli(n.port, 'cluster', 'info')))) break;
      if (i === 199) throw new Error('the Redis Cluster did not reach cluster_state:ok');
      await sleep(50);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    url: `redis-cluster://${nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`,
    nodes,
    flush: () => {
      for (const n of nodes) cli(n.port, 'flushall');
    },
    stop,
  };
}
