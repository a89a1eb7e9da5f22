/**
 * The chaos run in `make test`: 100 devices, v1 and v2, with and without CSR, under random AWS
 * faults of every kind, random kills of the function and answers lost on the device's side; then
 * every device renews its certificate under the same faults.
 * `make chaos` runs a larger one and prints the figures.
 */
import { runChaos } from './chaos';

it('provisions and renews every device exactly once, whatever fails, and leaves nothing behind', async () => {
  const log: string[] = [];
  const report = await runChaos({
    log: (line) => log.push(line),
    devices: 100,
    concurrency: 12,
    faultProbability: 0.015,
    killProbability: 0.01,
    lostAnswerProbability: 0.1,
    // Half the fleet renews: every renewal path meets faults, and `make test` stays short.
    // `make chaos` renews every device.
    renewals: 50,
    // Revoked, moved, reset, disabled and enabled while they provision (tests/chaos/operators.ts).
    operators: 12,
  });
  expect(report.audit.problems).toEqual([]);
  // `make chaos` says when each phase starts and ends, never silent between its figures.
  for (const phase of [
    'devices provisioned',
    'moving the records a day back',
    'devices renewed',
    'reconciling',
  ]) {
    expect(log).toContain(`${phase}…`);
    expect(log).toContainEqual(expect.stringMatching(new RegExp(`^${phase}: done in \\d+ s$`)));
  }
  expect(report.audit).toMatchObject({
    provisionedExactlyOnce: 100,
    notProvisioned: 0,
    unreferencedCertificatesOfOurCa: 0,
    thingsWithTwoLiveCertificates: 0,
    recordsPointingAtMissingCertificates: 0,
  });
  expect(report.reconcile.failures).toEqual([]);
  expect(report.operators?.gaveUp).toEqual([]);
  // Every device that kept its credentials renewed: lost answers and kills are retried, never refused for good.
  expect(report.renewal.renewedExactlyOnce).toBe(report.renewal.devices);
  expect(report.renewal.devices).toBe(Math.min(50, 100 - report.devicesStoppedAt409));
  expect(
    Object.keys(report.renewal.answers).filter(
      (status) => !['0', '200', '429', '500', '503'].includes(status),
    ),
  ).toEqual([]);
  // No 5xx answer was ours to give up on: every device ended on 200 (or 409 after its re-issues).
  expect(
    Object.keys(report.answers).filter(
      (status) => !['0', '200', '409', '429', '500', '503'].includes(status),
    ),
  ).toEqual([]);
}, 900_000);
