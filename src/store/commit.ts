// Conditional commit against an authoritative view, for local backends: every group's
// expectations are checked against the values before the commit and the groups applied
// before it in the same commit, so a commit means the same on every backend.
import type { Change, CommitGroup, CommitResult, Value } from './types.js';

/** Checks each group in order against `read` (which must see the changes accepted so far
 *  through `accept`), accepts the changes of those that hold, and returns the conflicts. */
export function checkGroups(groups: readonly CommitGroup[], read: (key: string) => Value, accept: (change: Change) => void): CommitResult {
  let conflicts: CommitResult = null;
  for (let g = 0; g < groups.length; g++) {
    const group = groups[g];
    const expect = group.expect;
    let holds = true;
    for (let i = 0; i < expect.length; i++) {
      if (read(expect[i][0]) !== expect[i][1]) {
        holds = false;
        break;
      }
    }
    if (!holds) {
      (conflicts ??= new Map()).set(
        g,
        expect.map(([k]) => read(k)),
      );
      continue;
    }
    const changes = group.changes;
    for (let i = 0; i < changes.length; i++) accept(changes[i]);
  }
  return conflicts;
}
