// qgreyctl report: see its --help (cli/qgreyctl/help.ts) and man/qgreyctl.8.
import { fstatSync, openSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { CtlError } from '../../admin/client.js';
import { DEFAULT_RETRY, formatReport, ReportBuilder } from '../../report/report.js';
import { formatHtml } from '../../report/html.js';

import { EXIT_OK, EXIT_PERMANENT, EXIT_TEMPORARY, last, streamLines } from '../common.js';
import { Usage, fileLines, parse } from './shared.js';
import { help } from './help.js';
import type { CtlContext } from './io.js';

export async function cmdReport(argv: string[], ctx: CtlContext): Promise<number> {
  const { a, pos } = parse('report', argv, { string: ['retry', 'top', 'html'], boolean: ['json'] });
  if (a.help) return help('report', ctx.io);
  const retryText = last(a.retry) ?? String(DEFAULT_RETRY);
  const retry = Number(retryText);
  if (retryText.trim() === '' || !Number.isFinite(retry) || retry <= 0) throw new Usage(`report: --retry ${JSON.stringify(retryText)} is not a positive number of seconds; e.g. --retry 86400`);
  const topText = last(a.top) ?? '10';
  const top = Number(topText);
  if (!/^\d+$/.test(topText)) throw new Usage(`report: --top ${JSON.stringify(topText)} is not a whole number`);
  const html = last(a.html);
  if (html !== undefined && html.trim() === '') throw new Usage('report: --html needs a file name, e.g. --html /var/www/greylist.html (or - for standard output)');
  if (html !== undefined && a.json) throw new Usage('report: give --json or --html, not both');
  const builder = new ReportBuilder({ retry });
  const sources: Array<{ name: string; fd: number }> = [];
  for (const f of pos) {
    try {
      const fd = openSync(f, 'r');
      if (fstatSync(fd).isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
      sources.push({ name: f, fd });
    } catch (e) {
      throw new CtlError(`report: cannot read ${f} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); give multilog files such as /var/log/qgreyd/current`, EXIT_PERMANENT);
    }
  }
  if (sources.length === 0) {
    // nobody types a log in by hand: a report run on a terminal without files is a mistake,
    // and waiting silently for input looks like a hang
    if (ctx.io.stdinIsTTY) throw new Usage('report: give the log files (e.g. /var/log/qgreyd/current), or pipe the log in: qgreyctl report < current; see qgreyctl report --help');
    sources.push({ name: 'standard input', fd: 0 });
  }
  for (const s of sources) {
    try {
      const lines = s.fd === 0 ? streamLines(ctx.io.stdin) : fileLines(s.fd);
      for await (const line of lines) builder.line(line);
    } catch (e) {
      throw new CtlError(`report: cannot read ${s.name} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, EXIT_PERMANENT);
    }
  }
  const r = builder.finish();
  if (html === '-') {
    await ctx.io.out(formatHtml(r, top), 'latin1');
    return EXIT_OK;
  }
  if (html !== undefined) writeReplacing(html, formatHtml(r, top));
  await ctx.io.out(a.json ? JSON.stringify(r) + '\n' : formatReport(r, top), 'latin1');
  return EXIT_OK;
}

/** Writes beside FILE and renames, so a web server never serves half a page. */
export function writeReplacing(file: string, text: string): void {
  const tmp = `${file}.tmp${process.pid}`;
  try {
    writeFileSync(tmp, text, 'latin1');
    renameSync(tmp, file);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // it was never created
    }
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    const temporary = code === 'ENOSPC' || code === 'EDQUOT' || code === 'EIO';
    throw new CtlError(`report: cannot write ${file} (${code}); give --html a file in a writable directory`, temporary ? EXIT_TEMPORARY : EXIT_PERMANENT);
  }
}
