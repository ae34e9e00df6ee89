// Log lines for multilog: one line per event on stdout, no timestamp (multilog t adds one),
// key=value fields. Anything that came off the wire is escaped so that it cannot end a line,
// start a field or pass for a delimiter.

/** Escape bytes outside printable ASCII, and the characters the log format uses as
 *  delimiters, as \xHH. The input is a latin1 string (one char per byte). */
export function escapeField(s: string): string {
  // nearly every field needs nothing: one native scan says so (a loop of charCodeAt costs
  // more, the more kinds of string reach it)
  if (!NEEDS_ESCAPE.test(s)) return s;
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

/** what escapeField escapes: bytes outside 0x21-0x7e, and \ , < > " */
const NEEDS_ESCAPE = /[^\x21\x23-\x2b\x2d-\x3b\x3d\x3f-\x5b\x5d-\x7e]/;

/** A quoted free-text value: detail="...", with only controls, non-ASCII, \ and " escaped. */
export function quoted(s: string): string {
  return '"' + s.replace(/[^\x20-\x7e]|[\\"]/g, (c) => '\\x' + (c.charCodeAt(0) & 0xff).toString(16).padStart(2, '0')) + '"';
}

/** Bytes of log text held while the reader does not keep up (on top of the stream's own
 *  16 KiB buffer). About 8,000 decision lines: enough to ride out a reader that pauses for a
 *  moment, small next to the daemon's heap. */
export const LOG_BUFFER_BYTES = 1024 * 1024;

/** Collects lines and writes them in one go per flush (one write per batch of decisions).
 *  Replies never wait for the log, and the log never holds more than `maxBytes`: when the
 *  reader stalls (multilog blocked on a full disk, a stopped process), lines past the bound
 *  are dropped and counted, and once the reader drains one line says how many were lost.
 *  When the reader is gone for good (EPIPE), every later line is dropped, and `onClosed` is
 *  told once so that the daemon can say so on stderr. */
export class LineWriter {
  private lines: string[] = [];
  private bytes = 0;
  private scheduled = false;
  /** the stream said stop (write returned false) and has not drained yet */
  private blocked = false;
  private closed = false;
  /** lines dropped since the last report */
  private dropped = 0;
  /** lines dropped since start */
  droppedTotal = 0;

  constructor(
    private readonly out: NodeJS.WritableStream = process.stdout,
    private readonly maxBytes = LOG_BUFFER_BYTES,
    private readonly onClosed: (err: NodeJS.ErrnoException) => void = () => undefined,
  ) {
    // optional: tests hand in bare sinks whose write() always succeeds
    out.on?.('drain', () => {
      this.blocked = false;
      this.flush();
    });
    out.on?.('error', (err: NodeJS.ErrnoException) => this.close(err));
  }

  line(s: string): void {
    if (this.closed || this.bytes + s.length + 1 > this.maxBytes) {
      this.dropped++;
      this.droppedTotal++;
      return;
    }
    this.lines.push(s);
    this.bytes += s.length + 1;
    if (!this.scheduled && !this.blocked) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.blocked || this.closed) return;
    if (this.dropped > 0) {
      this.lines.push(`log dropped=${this.dropped} reason=reader-stalled buffer=${this.maxBytes}`);
      this.dropped = 0;
    }
    if (this.lines.length === 0) return;
    const text = this.lines.join('\n') + '\n';
    this.lines = [];
    this.bytes = 0;
    // a closed pipe can also throw synchronously (e.g. EPIPE on a destroyed stream)
    try {
      if (!this.out.write(text)) this.blocked = true;
    } catch (e) {
      this.close(e as NodeJS.ErrnoException);
    }
  }

  private close(err: NodeJS.ErrnoException): void {
    if (this.closed) return;
    this.closed = true;
    this.droppedTotal += this.lines.length;
    this.lines = [];
    this.bytes = 0;
    this.onClosed(err);
  }
}

/** Lets the first `burst` lines of a kind through in each period, and sums the rest into one
 *  summary line at the end of the period (`<word> suppressed=N total=M period=10s
 *  client=<last>`): a flood of junk from an allowed client cannot flood the log, yet every
 *  event is counted. Before the first event, and after a quiet period, the budget is full. */
export class RateLimitedLines {
  total = 0;
  private used = 0;
  private suppressed = 0;
  private last = '';
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly write: (line: string) => void,
    private readonly word: string,
    private readonly burst = 10,
    private readonly periodMs = 10_000,
  ) {}

  /** Counts one event from `client`; true when the caller should log it in full. */
  admit(client: string): boolean {
    this.total++;
    if (this.timer === null) this.arm();
    if (this.used < this.burst) {
      this.used++;
      return true;
    }
    this.suppressed++;
    this.last = client;
    return false;
  }

  private arm(): void {
    this.timer = setTimeout(() => this.tick(), this.periodMs);
    this.timer.unref();
  }

  private tick(): void {
    this.used = 0;
    if (this.suppressed === 0) {
      this.timer = null;
      return;
    }
    this.report();
    this.arm();
  }

  private report(): void {
    this.write(`${this.word} suppressed=${this.suppressed} total=${this.total} period=${this.periodMs / 1000}s client=${this.last}`);
    this.suppressed = 0;
  }

  /** Report what is pending now (at shutdown). */
  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.used = 0;
    if (this.suppressed > 0) this.report();
  }
}
