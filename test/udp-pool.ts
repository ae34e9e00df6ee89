// A pool of UDP client sockets for load tests. Replies carry no request id, so each socket
// has at most one request outstanding and its source port pairs a reply with its request.
import dgram from 'node:dgram';

interface Slot {
  sock: dgram.Socket;
  pending: ((reply: string | null) => void) | null;
  timer: NodeJS.Timeout | null;
}

export class UdpPool {
  private slots: Slot[] = [];
  private free: Slot[] = [];
  private waiting: Array<(s: Slot) => void> = [];
  private closed = false;

  private constructor(private readonly port: number, private readonly host: string, private readonly timeoutMs: number) {}

  static async open(port: number, size: number, opts: { host?: string; timeoutMs?: number; bindAddress?: string } = {}): Promise<UdpPool> {
    const host = opts.host ?? '127.0.0.1';
    const pool = new UdpPool(port, host, opts.timeoutMs ?? 3000);
    for (let i = 0; i < size; i++) {
      const sock = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
      await new Promise<void>((r) => sock.bind(0, opts.bindAddress, () => r()));
      const slot: Slot = { sock, pending: null, timer: null };
      sock.on('message', (m) => pool.settle(slot, m.toString('hex')));
      pool.slots.push(slot);
      pool.free.push(slot);
    }
    return pool;
  }

  /** Sends one datagram; resolves with the reply as hex, or null on timeout or abort. */
  async request(msg: Buffer): Promise<string | null> {
    if (this.closed) return null;
    const slot = this.free.pop() ?? (await new Promise<Slot>((r) => this.waiting.push(r)));
    if (this.closed) return null;
    return new Promise((resolve) => {
      slot.pending = resolve;
      slot.timer = setTimeout(() => this.settle(slot, null, true), this.timeoutMs);
      slot.sock.send(msg, this.port, this.host);
    });
  }

  private settle(slot: Slot, reply: string | null, timedOut = false): void {
    const p = slot.pending;
    if (p === null) return;
    slot.pending = null;
    if (slot.timer) clearTimeout(slot.timer);
    slot.timer = null;
    p(reply);
    // a socket whose request timed out is retired: a late reply must not pass for the next one's
    if (this.closed || timedOut) return;
    const w = this.waiting.shift();
    if (w) w(slot);
    else this.free.push(slot);
  }

  /** Ends every outstanding request with null and closes the sockets. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.slots) {
      this.settle(s, null);
      s.sock.close();
    }
    for (const w of this.waiting.splice(0)) w(this.slots[0]);
  }
}
