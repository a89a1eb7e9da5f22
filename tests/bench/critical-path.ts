import type { CallRecord } from '../local/aws-proxy';

/**
 * A request's dependent AWS stages, from the proxy's log of its calls: the longest chain of calls
 * in which each starts after the previous one finished. Calls that overlap in time ran in
 * parallel and count once. With a delay injected before every call, parallel calls overlap by
 * the whole delay, so the count does not depend on how fast moto or this machine is.
 */
export function criticalPath(calls: readonly Pick<CallRecord, 'startMs' | 'endMs'>[]): number {
  const ordered = [...calls].sort((a, b) => a.startMs - b.startMs);
  const chain: number[] = [];
  ordered.forEach((call, index) => {
    let longest = 0;
    for (let before = 0; before < index; before += 1) {
      const earlier = ordered[before];
      if (earlier && earlier.endMs <= call.startMs) longest = Math.max(longest, chain[before] ?? 0);
    }
    chain.push(longest + 1);
  });
  return Math.max(0, ...chain);
}
