/**
 * A small storm in `make test`: 40 devices power on in eu-central-1 within two seconds, under
 * AWS's quotas scaled by 0.2 and a function that scales out like Lambda, beside a trickle in two
 * other regions. Whatever throttling does to the requests, the account must be left clean without
 * the reconciler, no device may get a 5xx, and no device may cost a second certificate. `make storm`
 * runs a larger one and prints the speed figures; nothing here asserts them.
 * Runs the built package (dist/provisioning): `make build` first, as `make test` does.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { OUR_HANDLER, runStorm, STORM_PLACE } from './storm';

it('leaves the account clean, answers no 5xx and registers one certificate per device under a storm', async () => {
  const entry = join(__dirname, '..', '..', OUR_HANDLER);
  if (!existsSync(entry)) throw new Error(`${entry} is missing: run \`make build\` first`);
  const { ours } = await runStorm({
    devices: 40,
    spreadMs: 2_000,
    scale: 0.2,
    trickleIntervalMs: 2_000,
    baselineDevices: 0,
    deviceBudgetMs: 120_000,
    scaleOut: true,
    processes: 1,
    sample: false,
  });
  const { storm } = ours;
  expect(storm.audit.problems).toEqual([]);
  expect(storm.audit).toMatchObject({
    unreferencedActiveCertificates: 0,
    thingsWithTwoLiveCertificates: 0,
    recordsPointingAtMissingCertificates: 0,
  });
  expect(storm.gaveUp).toEqual([]);
  expect(storm.provisioned).toBe(40);
  const fiveHundreds = (statuses: Readonly<Record<string, number>>) =>
    Object.keys(statuses).filter((status) => Number(status) >= 500);
  expect(fiveHundreds(storm.statuses)).toEqual([]);
  expect(fiveHundreds(storm.trickleStatuses)).toEqual([]);
  // Every provisioned device in the storm's region registered exactly one certificate there:
  // a retry cost no second one (RegisterCertificate bodies are certificates).
  const registered = storm.counts.find(
    (count) => count.region === STORM_PLACE.region && count.api === 'RegisterCertificate',
  );
  expect(registered?.distinctBodies).toBe(40);
}, 300_000);
