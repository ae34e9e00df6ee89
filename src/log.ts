// Log lines for multilog: one line per event on stdout, no timestamp (multilog t adds one),
// key=value fields. Anything that came off the wire is escaped so that it cannot end a line,
// start a field or pass for a delimiter.

/** Escape bytes outside printable ASCII, and the characters the log format uses as
 *  delimiters, as \xHH. The input is a latin1 string (one char per byte). */
export function escapeField(s: string): string {
  let out = '';
  let from = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x20 && c < 0x7f && c !== 0x5c /* \ */ && c !== 0x2c /* , */ && c !== 0x3c /* < */ && c !== 0x3e /* > */ && c !== 0x22 /* " */) continue;
    out += s.slice(from, i) + '\\x' + (c < 16 ? '0' : '') + (c & 0xff).toString(16);
    from = i + 1;
  }
  return from === 0 ? s : out + s.slice(from);
}

/** A quoted free-text value: detail="...", with only controls, non-ASCII, \ and " escaped. */
export function quoted(s: string): string {
  return '"' + s.replace(/[^\x20-\x7e]|[\\"]/g, (c) => '\\x' + (c.charCodeAt(0) & 0xff).toString(16).padStart(2, '0')) + '"';
}

/** Collects lines and writes them in one go per flush (one write per batch of decisions). */
export class LineWriter {
  private lines: string[] = [];
  private scheduled = false;

  constructor(private readonly out: NodeJS.WritableStream = process.stdout) {}

  line(s: string): void {
    this.lines.push(s);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.lines.length === 0) return;
    const text = this.lines.join('\n') + '\n';
    this.lines = [];
    this.out.write(text);
  }
}
