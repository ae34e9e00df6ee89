// The shared backend suite against the local store (LevelDB with its index and log).
import { join } from 'node:path';
import { Store } from '../../src/store/leveldb.js';
import { removeDir, tempDir } from '../helpers.js';
import { runStoreSuite } from '../store-suite.js';

runStoreSuite('leveldb', async () => {
  const dir = tempDir();
  const state = join(dir, 'state');
  return {
    store: await Store.open(state),
    reopen: () => Store.open(state),
    cleanup: () => Promise.resolve(removeDir(dir)),
  };
});
