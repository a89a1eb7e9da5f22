/**
 * The circuit breaker's arithmetic and its gate (functions/reconciler/breaker.ts), and what the
 * reconciler counts as a record it can't read.
 */
import { toDeviceRecord } from '../../../functions/provisioning/device-record';
import {
  BreakerOpen,
  breakerLimit,
  DEFAULT_BREAKER,
  DestructionBudget,
  judgeRun,
} from '../../../functions/reconciler/breaker';
import { quarantinedSince } from '../../../functions/reconciler/quarantine';
import { unreadableReferences } from '../../../functions/reconciler/reconcile';

const plan = (destructive: number, listed: number, unreferencedActive = 0, unreadable: string[] = []) => ({
  destructive,
  listed,
  unreferencedActive,
  unreadable,
});

describe('the circuit breaker', () => {
  it('allows max(N, X % of the listed certificates)', () => {
    expect(breakerLimit(DEFAULT_BREAKER, 0)).toBe(25);
    expect(breakerLimit(DEFAULT_BREAKER, 1_000)).toBe(25);
    expect(breakerLimit(DEFAULT_BREAKER, 100_000)).toBe(2_000);
    expect(judgeRun(plan(25, 10), DEFAULT_BREAKER).tripped).toBe(false);
    expect(judgeRun(plan(26, 10), DEFAULT_BREAKER).tripped).toBe(true);
    expect(judgeRun(plan(2_000, 100_000), DEFAULT_BREAKER).tripped).toBe(false);
    expect(judgeRun(plan(2_001, 100_000), DEFAULT_BREAKER).tripped).toBe(true);
  });

  it('trips when far fewer records reference certificates than the CA has live, whatever the plan', () => {
    const verdict = judgeRun(plan(0, 100_000, 2_001), DEFAULT_BREAKER);
    expect(verdict.tripped).toBe(true);
    expect(verdict.reasons.join()).toContain(
      '2001 ACTIVE certificates of our CA are referenced by no record',
    );
  });

  it('trips on a record it cannot read, and names it', () => {
    const verdict = judgeRun(plan(0, 10, 0, ['wm101: certificate_id']), DEFAULT_BREAKER);
    expect(verdict).toMatchObject({ tripped: true });
    expect(verdict.reasons.join()).toContain('wm101: certificate_id');
  });

  it('gates every destructive step: none when tripped, at most the limit otherwise, any with --allow-large', () => {
    const tripped = judgeRun(plan(30, 10), DEFAULT_BREAKER);
    expect(() => new DestructionBudget(tripped, false).spend('x')).toThrow(BreakerOpen);
    const budget = new DestructionBudget(judgeRun(plan(3, 10), DEFAULT_BREAKER), false);
    for (let step = 0; step < 25; step += 1) budget.spend('x');
    expect(() => budget.spend('x')).toThrow(BreakerOpen);
    const confirmed = new DestructionBudget(tripped, true);
    for (let step = 0; step < 100; step += 1) confirmed.spend('x');
  });
});

describe('records the reconciler cannot read', () => {
  const id = 'a'.repeat(64);
  it('are those naming a certificate in another type, or half an intent', () => {
    const base = {
      thing_name: { S: 'wm101' },
      prov_status: { S: 'provisioned' },
      aws_region: { S: 'eu-west-1' },
    };
    expect(unreadableReferences(toDeviceRecord({ ...base, certificate_id: { S: id } }))).toEqual([]);
    expect(unreadableReferences(toDeviceRecord({ ...base, certificate_id: { B: Buffer.from(id) } }))).toEqual(
      ['wm101: certificate_id'],
    );
    expect(unreadableReferences(toDeviceRecord({ ...base, certificate_id: { SS: [id] } }))).toEqual([
      'wm101: certificate_id',
    ]);
    expect(
      unreadableReferences(
        toDeviceRecord({ ...base, pending_certificate_id: { S: id }, pending_region: { S: 'x' } }),
      ),
    ).toEqual(['wm101: pending_certificate_id']);
    expect(
      unreadableReferences(toDeviceRecord({ thing_name: { S: 'wm101' }, certificate_id: { S: id } })),
    ).toEqual(['wm101: aws_region']);
    expect(unreadableReferences(toDeviceRecord({ ...base, aws_region: { NULL: true } }))).toEqual([]);
  });
});

describe('the quarantine date', () => {
  const created = new Date('2026-01-01T00:00:00Z');
  it('is when the status last changed, after its creation', () => {
    const since = new Date('2026-01-02T00:00:00Z');
    expect(quarantinedSince({ createdAt: created, lastModifiedAt: since })).toEqual(since);
  });
  it('is unknown, so never due, when AWS IoT does not date the change', () => {
    expect(quarantinedSince({ createdAt: created, lastModifiedAt: created })).toBeUndefined();
    expect(quarantinedSince({ createdAt: created })).toBeUndefined();
    expect(quarantinedSince({ lastModifiedAt: created })).toBeUndefined();
  });
});
