import { criticalPath } from '../../bench/critical-path';

const call = (startMs: number, endMs: number) => ({ startMs, endMs });

describe("a request's dependent AWS stages, from the proxy's call log", () => {
  it('counts calls in series one stage each', () => {
    expect(criticalPath([call(0, 50), call(51, 101), call(102, 152)])).toBe(3);
  });

  it('counts overlapping calls as one stage', () => {
    expect(criticalPath([call(0, 50), call(2, 53), call(60, 110), call(61, 112), call(120, 170)])).toBe(3);
  });

  it('follows the longest chain when a long call spans two short ones', () => {
    // read ∥ (key then sign): the chain through the two short calls is the longer one.
    expect(criticalPath([call(0, 120), call(1, 50), call(55, 100), call(125, 175)])).toBe(3);
  });

  it('is 0 without calls, and does not depend on the order the log lists them', () => {
    expect(criticalPath([])).toBe(0);
    expect(criticalPath([call(102, 152), call(0, 50), call(51, 101)])).toBe(3);
  });
});
