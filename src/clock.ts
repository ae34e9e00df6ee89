// Clock jumps. The wall clock (Date.now) is what records are dated by; the monotonic clock
// (performance.now) only ever moves steadily forward. Comparing how far each moved between
// two looks tells a step of the wall clock (an administrator's `date`, NTP stepping, a VM
// restored or resumed) from the passing of time.
//
// A forward jump is held back from expiry: until it is cancelled by a jump back, or has
// stood for `memoryMs` of steady time, the sweep judges deadness by the wall clock minus the
// jump. A clock wrongly set a month ahead then deletes nothing it would not have deleted
// anyway; a jump that was a genuine correction only delays expiry (records live longer,
// storage grows a little) for `memoryMs`. A backward jump needs nothing here: the records it
// leaves dated ahead of now count as now (policy.ts, isFuture).

export interface ClockJump {
  /** seconds the wall clock moved beyond (positive) or short of (negative) steady time */
  seconds: number;
  /** seconds of forward jump now held back from expiry */
  heldBack: number;
}

export class ClockWatch {
  private lastWall: number;
  private lastMono: number;
  /** forward jump held back from expiry, ms */
  private ahead = 0;
  /** monotonic time of the last forward jump */
  private aheadSince = 0;

  constructor(
    private readonly wallMs: () => number,
    private readonly monoMs: () => number,
    /** smaller differences are drift or a slow turn of the event loop, not a jump */
    readonly thresholdMs = JUMP_THRESHOLD_MS,
    /** how long a forward jump is held back from expiry */
    public memoryMs = 7 * 86400_000,
    /** told of each jump, once */
    private readonly onJump: (jump: ClockJump) => void = () => undefined,
  ) {
    this.lastWall = wallMs();
    this.lastMono = monoMs();
  }

  /** Compares the clocks' progress since the last look; a jump is told to onJump, once. */
  check(): ClockJump | null {
    const wall = this.wallMs();
    const mono = this.monoMs();
    const skew = wall - this.lastWall - (mono - this.lastMono);
    this.lastWall = wall;
    this.lastMono = mono;
    if (this.ahead > 0 && mono - this.aheadSince >= this.memoryMs) this.ahead = 0;
    if (Math.abs(skew) < this.thresholdMs) return null;
    if (skew > 0) this.aheadSince = mono;
    this.ahead = Math.max(0, this.ahead + skew);
    const jump = { seconds: Math.round(skew / 1000), heldBack: Math.round(this.ahead / 1000) };
    this.onJump(jump);
    return jump;
  }

  /** The wall clock in Unix seconds, less any forward jump held back. */
  expiryNow(): number {
    this.check();
    return Math.floor((this.wallMs() - this.ahead) / 1000);
  }
}

export const JUMP_THRESHOLD_MS = 30_000;
