// How qgreyctl scales: import, export, dump and stats on a store of N records, with the
// daemon stopped (direct) and running (through the admin socket). Prints times, the ratio
// daemon/direct, and peak memory (max RSS) of qgreyctl and of the daemon, which must stay
// flat as N grows: the operations stream.
//   node dist/bench/qgreyctl.js [N=200000]
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { QGREYCTL } from '../test/ctl-helpers.js';
import { removeDir, startDaemon, tempDir } from '../test/helpers.js';

const N = Number(process.argv[2] ?? 200_000);

function run(args: string[]): { ms: number; maxRssKb: number; stdoutBytes: number } {
  const t = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%M', process.execPath, QGREYCTL, ...args], { maxBuffer: 1 << 30 });
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.status !== 0) throw new Error(`qgreyctl ${args.join(' ')}: exit ${r.status}: ${r.stderr.toString()}`);
  const lines = r.stderr.toString().trim().split('\n');
  return { ms, maxRssKb: Number(lines[lines.length - 1]), stdoutBytes: r.stdout.length };
}

function vmHwmKb(pid: number): number {
  const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

async function main(): Promise<void> {
  const dir = tempDir('qgreyctl-bench-');
  try {
    const now = Math.floor(Date.now() / 1000);
    const lines: string[] = [];
    for (let i = 0; i < N; i++) {
      const ip = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
      lines.push(i % 10 === 0 ? `I ${now - (i % 3600)} ${ip}` : `G ${now - (i % 3600)} ${ip} sender${i}@example.com rcpt${i % 97}@example.org`);
    }
    writeFileSync(join(dir, 'save'), lines.join('\n') + '\n');
    const state = join(dir, 'data');
    const ops: Array<[string, string[]]> = [
      ['export', ['export', '--state', state]],
      ['dump --json', ['dump', '--json', '--state', state]],
      ['stats', ['stats', '--state', state]],
      ['import again', ['import', join(dir, 'save'), '--state', state]],
    ];
    const first = run(['import', join(dir, 'save'), '--state', state]);
    console.log(`N=${N} records; first import (direct): ${first.ms.toFixed(0)} ms, qgreyctl max RSS ${(first.maxRssKb / 1024).toFixed(0)} MiB`);
    const direct = ops.map(([name, args]) => [name, run(args)] as const);
    const d = await startDaemon(['127.0.0.1:0', state]);
    const before = vmHwmKb(d.proc.pid!);
    const viaDaemon = ops.map(([name, args]) => [name, run(args)] as const);
    const after = vmHwmKb(d.proc.pid!);
    await d.stop();
    console.log('operation      direct ms  daemon ms  daemon/direct  qgreyctl max RSS (direct/daemon)');
    for (let i = 0; i < ops.length; i++) {
      const [name, a] = direct[i];
      const b = viaDaemon[i][1];
      console.log(
        `${name.padEnd(14)} ${a.ms.toFixed(0).padStart(9)}  ${b.ms.toFixed(0).padStart(9)}  ${(b.ms / a.ms).toFixed(2).padStart(13)}  ${(a.maxRssKb / 1024).toFixed(0)}/${(b.maxRssKb / 1024).toFixed(0)} MiB`,
      );
      if (name === 'export' && a.stdoutBytes !== b.stdoutBytes) {
        console.log(`  output differs: ${a.stdoutBytes} vs ${b.stdoutBytes} bytes`);
      }
    }
    console.log(`daemon peak RSS: ${(before / 1024).toFixed(0)} MiB after start, ${(after / 1024).toFixed(0)} MiB after serving all of the above`);
    console.log(`store on disk: ${execFileSync('du', ['-sh', state]).toString().split('\t')[0]}`);
  } finally {
    removeDir(dir);
  }
}

void main();
