import {
  admit,
  Admission,
  AdmissionSettings,
  memoryAdmissionState,
  retryAfterSeconds,
  retryAfterThrottle,
  Schedule,
  takeSlot,
} from '../../../functions/provisioning/admission';
import {
  AWS_DEFAULT_RATES,
  budgetProblems,
  budgetsFor,
  callsOfRequest,
  costMs,
  requestsPerSecond,
  scaledRates,
} from '../../../functions/provisioning/admission-budget';
import { ProvisioningError } from '../../../functions/provisioning/errors';

const settings: AdmissionSettings = {
  rates: budgetsFor(['eu-central-1', 'us-east-1'], {}, {}),
  maxWaitMs: 1_000,
  jitterSeconds: 2,
  maxRetryAfterSeconds: 900,
  whenUnavailable: 'open',
};

/** An admission at a fixed time with no jitter and no real waiting; `slept` records the waits. */
function atTime(nowMs: number, overrides: Partial<Admission> = {}) {
  const slept: number[] = [];
  const admission: Admission = {
    settings,
    state: memoryAdmissionState(),
    clock: () => nowMs,
    random: () => 0,
    sleep: (ms) => {
      slept.push(ms);
      return Promise.resolve();
    },
    ...overrides,
  };
  return { admission, slept };
}

async function refusal(work: Promise<unknown>): Promise<ProvisioningError> {
  try {
    await work;
  } catch (error) {
    if (error instanceof ProvisioningError) return error;
    throw error;
  }
  throw new Error('admitted');
}

describe('what a request costs of its region', () => {
  it('is the slowest API share: RegisterCertificate at 10/s makes 100 ms, undo included', () => {
    expect(costMs(callsOfRequest(), AWS_DEFAULT_RATES)).toBe(100);
    expect(requestsPerSecond(AWS_DEFAULT_RATES)).toBe(10);
  });

  it('counts each certificate a success retires', () => {
    expect(callsOfRequest(3)).toMatchObject({
      UpdateCertificate: 3,
      DeleteCertificate: 3,
      RegisterCertificate: 1,
    });
    expect(costMs(callsOfRequest(3), AWS_DEFAULT_RATES)).toBe(300);
  });

  it('scales with the local stack quota mode: AWS defaults × 0.2 admit 2 requests a second', () => {
    expect(requestsPerSecond(scaledRates(0.2))).toBe(2);
  });

  it('follows a raised quota: RegisterCertificate at 50/s leaves the 15/s APIs binding', () => {
    const raised = {
      ...AWS_DEFAULT_RATES,
      RegisterCertificate: 50,
      UpdateCertificate: 50,
      DeleteCertificate: 50,
    };
    expect(costMs(callsOfRequest(), raised)).toBe(67);
  });
});

describe('the schedule', () => {
  it('admits at once while the region is idle, and within maxWait behind admitted work', () => {
    let schedule: Schedule = {};
    const verdicts = [];
    for (let request = 0; request < 12; request += 1) {
      const decided = takeSlot(schedule, 10_000, 100, 1_000);
      schedule = decided.schedule;
      verdicts.push(decided.verdict);
    }
    expect(verdicts.slice(0, 11).map((verdict) => [verdict.kind, verdict.slotMs])).toEqual(
      Array.from({ length: 11 }, (_, index) => ['admitted', 10_000 + index * 100]),
    );
    expect(verdicts[11]).toMatchObject({ kind: 'refused', slotMs: 11_100, backlogMs: 1_100 });
  });

  it('gives each refused request its own later slot, spaced by the budget', () => {
    let schedule: Schedule = { nextFreeMs: 12_000 };
    const slots: number[] = [];
    for (let request = 0; request < 5; request += 1) {
      const decided = takeSlot(schedule, 10_000, 100, 1_000);
      schedule = { ...decided.schedule };
      slots.push(decided.verdict.slotMs);
    }
    expect(slots).toEqual([12_000, 12_100, 12_200, 12_300, 12_400]);
  });

  it('forgets an old queue: a refusal long after the last one starts after now', () => {
    const decided = takeSlot({ nextFreeMs: 60_000, promisedMs: 5_000 }, 50_000, 100, 1_000);
    expect(decided.verdict).toMatchObject({ kind: 'refused', slotMs: 60_000 });
  });
});

describe('Retry-After', () => {
  it('is when the budget has room for the request, in whole seconds, at least 1', () => {
    expect(retryAfterSeconds(12_300, 10_000, 0, 900, () => 0)).toBe(3);
    expect(retryAfterSeconds(10_000, 10_000, 0, 900, () => 0)).toBe(1);
    expect(retryAfterSeconds(5_000_000, 10_000, 0, 900, () => 0)).toBe(900);
  });

  it('adds jitter within [0, jitterSeconds], so one wave of refusals returns spread', () => {
    const seen = new Set<number>();
    for (let draw = 0; draw < 200; draw += 1) {
      const value = retryAfterSeconds(14_000, 10_000, 3, 900);
      expect(value).toBeGreaterThanOrEqual(4);
      expect(value).toBeLessThanOrEqual(7);
      seen.add(value);
    }
    expect(seen.size).toBeGreaterThan(1);
    expect(retryAfterSeconds(14_000, 10_000, 3, 900, () => 0.999)).toBe(7);
  });
});

describe('admit', () => {
  it('waits for a slot within maxWait, then refuses with the backlog as Retry-After', async () => {
    const { admission, slept } = atTime(10_000);
    for (let request = 0; request < 11; request += 1) await admit(admission, 'eu-central-1', 0);
    expect(slept).toEqual(Array.from({ length: 10 }, (_, index) => (index + 1) * 100));
    const refused = await refusal(admit(admission, 'eu-central-1', 0));
    expect(refused).toMatchObject({ status: 429, retryAfterSeconds: 2 });
    expect(refused.message).toContain('eu-central-1');
  });

  it('keeps regions independent: a storm in one leaves the other idle', async () => {
    const { admission, slept } = atTime(10_000);
    for (let request = 0; request < 50; request += 1)
      await admit(admission, 'eu-central-1', 0).catch(() => undefined);
    const waitsBefore = slept.length;
    await admit(admission, 'us-east-1', 0);
    expect(slept.length).toBe(waitsBefore); // admitted at once, no wait
  });

  it('admits when the state is unavailable and the choice is open; refuses when closed or busy', async () => {
    const failing = {
      take: () => Promise.resolve({ kind: 'unavailable' as const, busy: false, cause: new Error('gone') }),
      queue: () => Promise.resolve({ kind: 'unavailable' as const, busy: false, cause: new Error('gone') }),
    };
    await expect(admit(atTime(0, { state: failing }).admission, 'eu-central-1', 0)).resolves.toBeUndefined();
    const closed = atTime(0, { state: failing, settings: { ...settings, whenUnavailable: 'closed' } });
    expect(await refusal(admit(closed.admission, 'eu-central-1', 0))).toMatchObject({ status: 429 });
    const busy = {
      ...failing,
      take: () => Promise.resolve({ kind: 'unavailable' as const, busy: true, cause: 0 }),
    };
    expect(await refusal(admit(atTime(0, { state: busy }).admission, 'eu-central-1', 0))).toMatchObject({
      status: 429,
      retryAfterSeconds: 1,
    });
  });

  it('gives a request AWS IoT throttled a place at the end of the queue', async () => {
    const { admission } = atTime(10_000);
    for (let request = 0; request < 40; request += 1)
      await admit(admission, 'eu-central-1', 0).catch(() => undefined);
    // 11 admitted (to 11.1 s), 29 queued (to 14.0 s): the throttled one returns after them.
    expect(await retryAfterThrottle(admission, 'eu-central-1', 1)).toBe(4);
  });
});

describe('budget tables', () => {
  const names = { rates: 'admission.rates', regionRates: 'admission.regionRates' };
  it('accepts AWS defaults and raised quotas of enabled regions', () => {
    expect(
      budgetProblems(
        { RegisterCertificate: 10 },
        { 'eu-central-1': { CreateThing: 100 } },
        ['eu-central-1'],
        names,
      ),
    ).toEqual([]);
  });

  it.each([
    [{ RegisterCertificate: -1 }, {}, 'admission.rates.RegisterCertificate: expected a positive number'],
    [{ RegisterCertificate: 0 }, {}, 'admission.rates.RegisterCertificate: expected a positive number'],
    [{ CreateThings: 15 }, {}, 'admission.rates.CreateThings: unknown API'],
    [{}, { 'eu-west-9': { CreateThing: 15 } }, 'admission.regionRates.eu-west-9: not an enabled region'],
    [
      {},
      { 'eu-central-1': { AttachPolicy: '15' } },
      'admission.regionRates.eu-central-1.AttachPolicy: expected a positive number',
    ],
  ])('names the bad setting: %j %j', (rates, regionRates, message) => {
    expect(budgetProblems(rates, regionRates, ['eu-central-1'], names).join('; ')).toContain(message);
  });
});
