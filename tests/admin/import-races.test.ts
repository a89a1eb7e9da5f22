/**
 * gdp-admin import racing devices and itself, on the local stack: an import whose existence check
 * is overtaken (by another import of the same batch, then by the devices provisioning) writes
 * nothing over their records. Before, its BatchWriteItem turned every provisioned record back to
 * `unprovisioned`, and the reconciler then retired the devices' live certificates.
 */
import { importDevices, ImportSummary } from '../../functions/admin/import-devices';
import { checkImportFile } from '../../functions/admin/import-file';
import type { Registry } from '../../functions/provisioning/registry';
import { loadReconcilerConfig } from '../../functions/reconciler/config';
import { reconcilerDependencies } from '../../functions/reconciler/wiring';
import {
  PLACES,
  post,
  registryRecord,
  stack,
  uniqueThingName,
  useLocalAws,
  v1Body,
} from '../integration/requests';

useLocalAws();
const config = loadReconcilerConfig({ ...process.env, ...stack.functionEnvironment });
const registry: Registry = reconcilerDependencies(config).registry;

/** An import of `names`, held after its existence check until `go` resolves. */
function heldImport(
  names: readonly string[],
  go: Promise<void>,
): { checked: Promise<void>; done: Promise<ImportSummary> } {
  let checked!: () => void;
  const checkedPromise = new Promise<void>((resolve) => (checked = resolve));
  const file = checkImportFile(['thing_name', ...names].join('\n'), 'csv', config.regions);
  const done = importDevices(
    {
      registry: {
        ...registry,
        existingNames: async (thingNames, signal) => {
          const found = await registry.existingNames(thingNames, signal);
          checked();
          await go;
          return found;
        },
      },
      caller: async () => 'import-races test',
      confirm: async () => undefined,
      log: () => undefined,
    },
    file,
    { file: 'batch.csv', update: false, dryRun: false, concurrency: 4, tableName: config.tableName },
  );
  return { checked: checkedPromise, done };
}

const statusOf = async (thingName: string) => (await registryRecord(thingName))?.prov_status?.S;

it('an import overtaken by the same batch and by its devices provisioning leaves every provisioned record as it is', async () => {
  const prefix = uniqueThingName('race');
  const names = Array.from({ length: 5 }, (_, index) => `${prefix}-${index}`);
  let releaseFirst!: () => void;
  let releaseSecond!: () => void;
  const first = heldImport(names, new Promise((resolve) => (releaseFirst = resolve)));
  const second = heldImport(names, new Promise((resolve) => (releaseSecond = resolve)));
  // Both have checked: neither saw a record.
  await Promise.all([first.checked, second.checked]);

  releaseFirst();
  expect(await first.done).toMatchObject({ new: 5, written: 5, appeared: 0 });
  for (const thingName of names) expect((await post(v1Body(thingName), PLACES.mumbai)).status).toBe(200);
  const provisioned = await Promise.all(names.map(registryRecord));

  releaseSecond();
  expect(await second.done).toMatchObject({ new: 5, written: 0, appeared: 5 });
  expect(await Promise.all(names.map(registryRecord))).toEqual(provisioned);
  expect(await Promise.all(names.map(statusOf))).toEqual(names.map(() => 'provisioned'));
});

it('two imports of the same batch at once, while its devices provision, write each record once', async () => {
  const prefix = uniqueThingName('twice');
  const names = Array.from({ length: 300 }, (_, index) => `${prefix}-${String(index).padStart(3, '0')}`);
  const file = checkImportFile(['thing_name', ...names].join('\n'), 'csv', config.regions);
  const run = () =>
    importDevices(
      {
        registry,
        caller: async () => 'import-races test',
        confirm: async () => undefined,
        log: () => undefined,
      },
      file,
      { file: 'batch.csv', update: false, dryRun: false, concurrency: 4, tableName: config.tableName },
    );
  // Devices of the batch provision as soon as their record exists, while both imports run.
  const devices = names.slice(0, 10);
  const provisioning = (async () => {
    const done = new Set<string>();
    for (let round = 0; round < 100 && done.size < devices.length; round += 1) {
      for (const thingName of devices.filter((name) => !done.has(name))) {
        if ((await post(v1Body(thingName), PLACES.mumbai)).status === 200) done.add(thingName);
      }
    }
    return done;
  })();

  const [a, b] = await Promise.all([run(), run()]);
  const provisioned = await provisioning;

  expect(a.written + b.written).toBe(names.length);
  expect(a.written + a.appeared + (a.existing ?? 0)).toBe(names.length);
  expect(b.written + b.appeared + (b.existing ?? 0)).toBe(names.length);
  expect(provisioned.size).toBe(devices.length);
  expect(await Promise.all(devices.map(statusOf))).toEqual(devices.map(() => 'provisioned'));
}, 60_000);
