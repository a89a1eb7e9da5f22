import {
  admit,
  admitIfRoom,
  Admission,
  AdmissionSettings,
  memoryAdmissionState,
  RegionBacklogged,
} from '../../../functions/provisioning/admission';
import { budgetsFor } from '../../../functions/provisioning/admission-budget';
import { placeDevice } from '../../../functions/provisioning/locate';
import { enabledRegionSites } from '../../../functions/provisioning/regions';
import {
  maySpill,
  spillCandidates,
  spillOverProblems,
  spillOverSettings,
} from '../../../functions/provisioning/spill-over';

const FRANKFURT = { latitude: 50.11, longitude: 8.68 };
const MUNICH = { latitude: 48.14, longitude: 11.58 };
const EUROPE = enabledRegionSites(['us-east-1', 'eu-west-1', 'eu-west-2', 'eu-central-1', 'eu-north-1']);
const rules = {
  regions: EUROPE,
  defaultRegion: 'us-east-1',
  countryRegionOverrides: { DE: 'eu-central-1' },
};

describe('spill-over candidates', () => {
  it('are the other enabled regions within the extra distance, nearest first, at most two', () => {
    // From Frankfurt: London 638 km, Dublin 1,088 km, Stockholm 1,187 km, Ashburn 6,549 km.
    expect(spillCandidates(FRANKFURT, 'eu-central-1', EUROPE, 1500)).toEqual([
      { region: 'eu-west-2', distanceKm: 638 },
      { region: 'eu-west-1', distanceKm: 1088 },
    ]);
    expect(spillCandidates(FRANKFURT, 'eu-central-1', EUROPE, 700)).toEqual([
      { region: 'eu-west-2', distanceKm: 638 },
    ]);
    expect(spillCandidates(FRANKFURT, 'eu-central-1', EUROPE, 500)).toEqual([]);
  });

  it("measure the extra distance from the nearest region's, not from the device", () => {
    // Munich is 304 km from Frankfurt: London (918 km) is 614 km farther.
    expect(spillCandidates(MUNICH, 'eu-central-1', EUROPE, 620).map((choice) => choice.region)).toEqual([
      'eu-west-2',
    ]);
    expect(spillCandidates(MUNICH, 'eu-central-1', EUROPE, 610)).toEqual([]);
  });

  it('are none when the nearest region is not enabled', () => {
    expect(spillCandidates(FRANKFURT, 'eu-south-2', EUROPE, 5000)).toEqual([]);
  });
});

describe('who may spill over', () => {
  const byDistance = placeDevice({ point: FRANKFURT, geoSource: 'cloudfront' }, rules);
  const first = { firstProvisioning: true, pinned: false, placement: byDistance, region: 'eu-central-1' };

  it('a first provisioning placed by distance', () => {
    expect(byDistance).toMatchObject({ region: 'eu-central-1', overridden: false });
    expect(maySpill(first)).toBe(true);
    expect(
      maySpill({ ...first, placement: placeDevice({ point: FRANKFURT, geoSource: 'ipstack' }, rules) }),
    ).toBe(true);
  });

  it('never a country override: data residency', () => {
    const overridden = placeDevice({ point: FRANKFURT, country: 'DE', geoSource: 'cloudfront' }, rules);
    expect(overridden.overridden).toBe(true);
    expect(maySpill({ ...first, placement: overridden })).toBe(false);
  });

  it('never the default region of a device nobody could locate', () => {
    const nowhere = placeDevice({ geoSource: 'default' }, rules);
    expect(maySpill({ ...first, placement: nowhere, region: nowhere.region })).toBe(false);
  });

  it('never a pinned device, a re-issue or a resumed intent, nor a request sent elsewhere than placed', () => {
    expect(maySpill({ ...first, pinned: true })).toBe(false);
    expect(maySpill({ ...first, firstProvisioning: false })).toBe(false);
    expect(maySpill({ ...first, region: 'eu-west-1' })).toBe(false);
  });
});

describe('the spill-over setting', () => {
  it('is off as null, milliseconds once read', () => {
    expect(spillOverProblems(null, 'admission.spillOver')).toEqual([]);
    expect(spillOverSettings(null)).toBeUndefined();
    expect(spillOverSettings({ afterWaitSeconds: 60, maxExtraKm: 1500 })).toEqual({
      afterWaitMs: 60_000,
      maxExtraKm: 1500,
    });
  });

  it.each([
    [
      { afterWaitSeconds: -1, maxExtraKm: 1500 },
      'admission.spillOver.afterWaitSeconds: expected a positive number',
    ],
    [{ afterWaitSeconds: 60, maxExtraKm: 0 }, 'admission.spillOver.maxExtraKm: expected a positive number'],
    [
      { afterWaitSeconds: '60', maxExtraKm: 1500 },
      'admission.spillOver.afterWaitSeconds: expected a positive number',
    ],
    [{ maxExtraKm: 1500 }, 'admission.spillOver.afterWaitSeconds: expected a positive number, got nothing'],
    [
      { afterWaitSeconds: 60, maxExtraKm: 1500, toRegion: 'x' },
      'admission.spillOver.toRegion: unknown field',
    ],
    [true, 'admission.spillOver: expected null or'],
  ])('names what is wrong: %j', (value, message) => {
    expect(spillOverProblems(value, 'admission.spillOver').join('; ')).toContain(message);
  });
});

describe('admission for spill-over', () => {
  const settings: AdmissionSettings = {
    rates: budgetsFor(['eu-central-1', 'eu-west-2'], {}, {}),
    maxWaitMs: 1_000,
    jitterSeconds: 0,
    maxRetryAfterSeconds: 900,
    whenUnavailable: 'open',
  };
  const at = (nowMs: number, state = memoryAdmissionState()): Admission & { state: typeof state } => ({
    settings,
    state,
    clock: () => nowMs,
    random: () => 0,
    sleep: () => Promise.resolve(),
  });

  it('refuses past the wait without a place in the queue, and queues a shorter backlog as before', async () => {
    const admission = at(0);
    admission.state.schedules.set('eu-central-1', { nextFreeMs: 90_000, promisedMs: 120_000 });
    const refusal = await admit(admission, 'eu-central-1', 0, undefined, 60_000).catch(
      (error: unknown) => error,
    );
    expect(refusal).toBeInstanceOf(RegionBacklogged);
    expect(refusal).toMatchObject({ backlogMs: 120_000, status: 429, retryAfterSeconds: 120 });
    expect(admission.state.schedules.get('eu-central-1')).toEqual({
      nextFreeMs: 90_000,
      promisedMs: 120_000,
    });

    const shorter = await admit(admission, 'eu-central-1', 0, undefined, 200_000).catch(
      (error: unknown) => error,
    );
    expect(shorter).not.toBeInstanceOf(RegionBacklogged);
    expect(admission.state.schedules.get('eu-central-1')?.promisedMs).toBe(120_100);
  });

  it("takes a candidate's slot only when it fits now, and never joins its queue", async () => {
    const admission = at(0);
    expect(await admitIfRoom(admission, 'eu-west-2', 0)).toBe(true);
    expect(admission.state.schedules.get('eu-west-2')).toEqual({ nextFreeMs: 100 });
    admission.state.schedules.set('eu-west-2', { nextFreeMs: 5_000, promisedMs: 7_000 });
    expect(await admitIfRoom(admission, 'eu-west-2', 0)).toBe(false);
    expect(admission.state.schedules.get('eu-west-2')).toEqual({ nextFreeMs: 5_000, promisedMs: 7_000 });
  });
});
