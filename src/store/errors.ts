// The store's one error type: a stable code, and whether retrying later may succeed
// (temporary: exit 111) or not (exit 100).
export type StoreErrorCode =
  | 'QGREYD_STORE_NOT_DIR'
  | 'QGREYD_STORE_LOCKED'
  | 'QGREYD_STORE_ACCESS'
  | 'QGREYD_STORE_CORRUPT'
  | 'QGREYD_STORE_FORMAT'
  | 'QGREYD_STORE_IO'
  | 'QGREYD_STORE_FULL';

export class StoreError extends Error {
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    readonly temporary = false,
    /** for QGREYD_STORE_LOCKED: who holds the store, when known ("qgreyd pid 123") */
    readonly holder?: string,
  ) {
    super(message);
  }
}
