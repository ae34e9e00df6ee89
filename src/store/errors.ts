// The store's errors: the project's one error type (errors.ts, a leaf module every layer may
// import) with the store's stable codes.
import { QgreydError } from '../errors.js';

export type StoreErrorCode =
  | 'QGREYD_STORE_NOT_DIR'
  | 'QGREYD_STORE_LOCKED'
  | 'QGREYD_STORE_ACCESS'
  | 'QGREYD_STORE_CORRUPT'
  | 'QGREYD_STORE_FORMAT'
  | 'QGREYD_STORE_IO'
  | 'QGREYD_STORE_FULL';

export class StoreError extends QgreydError {
  declare readonly code: StoreErrorCode;

  constructor(
    code: StoreErrorCode,
    message: string,
    temporary = false,
    /** for QGREYD_STORE_LOCKED: who holds the store, when known ("qgreyd pid 123") */
    readonly holder?: string,
  ) {
    super(code, message, temporary);
  }
}
