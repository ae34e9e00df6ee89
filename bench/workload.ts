// What the bench tools agree on: the hot set and the stored triplets. bench/loadgen.c builds
// the same requests in C (stored_request, hot_request); keep the two in step.

/** Triplet number i as the fill tool stores it and the load generator asks for it. */
export function tripletFor(i: number): { ip: string; sender: string; rcpt: string } {
  return {
    ip: `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`,
    sender: `s${i % 9973}@f${i % 101}.example`,
    rcpt: `r${i}@t${i % 37}.example`,
  };
}

/** Hot-set IP number k: even ones are whitelisted, odd ones are known good. */
export function hotIp(k: number): string {
  return k % 2 === 0 ? `192.168.${(k >>> 8) & 255}.${k & 255}` : `172.16.${(k >>> 8) & 255}.${k & 255}`;
}

/** The whitelist the bench daemon runs with: it covers the even hot-set IPs. */
export const BENCH_WHITELIST = '# qgreyd bench: the whitelisted half of the hot set\n192.168.0.0/16\n';

/** 10.a.b.c holds 2^24 distinct addresses; the generator wraps beyond that. */
export const MAX_STORED = 1 << 24;
