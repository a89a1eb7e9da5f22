import { Deadline, MIN_STAGE_MS, UNDO_RESERVE_MS } from '../../../functions/provisioning/deadline';

function clockAt(start: number) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

describe("the request's deadline", () => {
  it('comes from the Lambda context and keeps the undo reserve out of the work', () => {
    const clock = clockAt(1_000);
    const deadline = Deadline.from({ getRemainingTimeInMillis: () => 20_000 }, clock.now);
    expect(deadline.workMs()).toBe(20_000 - UNDO_RESERVE_MS);
    clock.advance(5_000);
    expect(deadline.workMs()).toBe(15_000 - UNDO_RESERVE_MS);
  });

  it('refuses to start a stage it could not finish, with a 503 the device retries', () => {
    const clock = clockAt(0);
    const deadline = Deadline.from(
      { getRemainingTimeInMillis: () => UNDO_RESERVE_MS + MIN_STAGE_MS + 10 },
      clock.now,
    );
    expect(() => deadline.beforeStage('claiming the record')).not.toThrow();
    clock.advance(20);
    expect(() => deadline.beforeStage('claiming the record')).toThrow(
      expect.objectContaining({
        status: 503,
        message: expect.stringContaining('ran out of time before claiming the record'),
      }),
    );
  });
});
