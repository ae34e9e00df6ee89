// The shared backend suite against the in-memory store.
import { MemoryStore, type MemoryData } from '../../src/store/memory.js';
import { runStoreSuite } from '../store-suite.js';

runStoreSuite('memory', async () => {
  const data: MemoryData = new Map();
  return {
    store: await MemoryStore.open(data),
    reopen: () => MemoryStore.open(data),
    cleanup: () => Promise.resolve(),
  };
});
