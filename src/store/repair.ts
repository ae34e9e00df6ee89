// qgreyd --repair: the documented way back from a corrupt store. Runs LevelDB's RepairDB on
// the state directory, then opens it as qgreyd would and counts what survived.
import { IP_PREFIX, Store, StoreError, TRIPLET_PREFIX } from './leveldb.js';

export interface RepairResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function repairStore(dir: string): Promise<RepairResult> {
  let store: Store;
  try {
    store = await Store.repair(dir, { program: 'qgreyd-repair' });
  } catch (e) {
    if (e instanceof StoreError) return { code: e.temporary ? 111 : 100, stdout: '', stderr: `qgreyd: repair: ${e.message}\n` };
    throw e;
  }
  try {
    let ips = 0;
    let triplets = 0;
    for await (const chunk of store.scan(IP_PREFIX)) ips += chunk.length;
    for await (const chunk of store.scan(TRIPLET_PREFIX)) triplets += chunk.length;
    return { code: 0, stdout: `repair ok state=${store.dir} ips=${ips} triplets=${triplets}\n`, stderr: '' };
  } finally {
    await store.close();
  }
}
