// Clock jumps, with injected wall and monotonic clocks: a jump is told once with its size,
// and a forward jump is held back from expiry until a jump back cancels it or it has stood
// for the memory period.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ClockWatch, type ClockJump } from '../../src/clock.js';

const T0 = 1_700_000_000_000;
const DAY = 86400_000;

function clocks() {
  const c = { wall: T0, mono: 5000, jumps: [] as ClockJump[] };
  const watch = new ClockWatch(() => c.wall, () => c.mono, 30_000, 7 * DAY, (j) => c.jumps.push(j));
  const pass = (ms: number) => {
    c.wall += ms;
    c.mono += ms;
  };
  return { c, watch, pass };
}

describe('ClockWatch', () => {
  it('steady time and small drift are not jumps', () => {
    const { c, watch, pass } = clocks();
    pass(3600_000);
    c.wall += 29_000; // under the threshold
    assert.equal(watch.check(), null);
    assert.equal(watch.expiryNow(), Math.floor(c.wall / 1000));
    assert.deepEqual(c.jumps, []);
  });

  it('a forward jump is told once, with its size, and held back from expiry', () => {
    const { c, watch, pass } = clocks();
    pass(60_000);
    c.wall += 30 * DAY;
    assert.equal(watch.expiryNow(), Math.floor((c.wall - 30 * DAY) / 1000));
    assert.deepEqual(c.jumps, [{ seconds: 30 * 86400, heldBack: 30 * 86400 }]);
    pass(3600_000);
    assert.equal(watch.check(), null, 'told once');
    assert.equal(watch.expiryNow(), Math.floor((c.wall - 30 * DAY) / 1000), 'expiry follows steady time');
    assert.equal(c.jumps.length, 1);
  });

  it('a jump back cancels a forward jump; a jump back alone holds nothing back', () => {
    const { c, watch, pass } = clocks();
    c.wall += 30 * DAY;
    watch.check();
    pass(60_000);
    c.wall -= 30 * DAY;
    assert.equal(watch.expiryNow(), Math.floor(c.wall / 1000));
    assert.deepEqual(c.jumps[1], { seconds: -30 * 86400, heldBack: 0 });
    c.wall -= 3600_000;
    watch.check();
    assert.deepEqual(c.jumps[2], { seconds: -3600, heldBack: 0 });
    assert.equal(watch.expiryNow(), Math.floor(c.wall / 1000));
  });

  it('a forward jump that stands for the memory period is accepted', () => {
    const { c, watch, pass } = clocks();
    c.wall += 30 * DAY;
    watch.check();
    pass(7 * DAY - 1000);
    assert.equal(watch.expiryNow(), Math.floor((c.wall - 30 * DAY) / 1000));
    pass(1000);
    assert.equal(watch.expiryNow(), Math.floor(c.wall / 1000));
  });
});
