// A decoded request as the daemon sees it, for the in-process tests of the policy, the queue
// and the store: built through the real encoder and decoder, so it is what the wire gives.
import { decodeRequest, encodeRequest, type Request } from '../src/protocol.js';

export function req(ip: string, sender: string, rcpts: string[]): Request {
  const d = decodeRequest(encodeRequest(ip, sender, rcpts));
  if (!d.ok) throw new Error(d.error);
  return d.request;
}
