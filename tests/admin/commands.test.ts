/**
 * gdp-admin against the local stack, through its command line (in process, `--local --yes`): what
 * an operator sees and what the registry and AWS IoT hold afterwards.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { UpdateCertificateCommand } from '@aws-sdk/client-iot';
import { main, program } from '../../functions/admin/cli';
import { admin } from '../support/admin';
import { addDevice } from '../local/stack';
import {
  certificateStatus,
  clearFaults,
  iotIn,
  localReconcile,
  PLACES,
  post,
  registryClient,
  registryRecord,
  stack,
  thingExists,
  uniqueThingName,
  v1Body,
} from '../integration/requests';

const dir = mkdtempSync(path.join(tmpdir(), 'gdp-admin-'));
const TSX = path.resolve('node_modules/.bin/tsx');

/** gdp-admin in its own process, as a script runs it: stdout and stderr are pipes, not a terminal. */
function adminProcess(command: string, env: Record<string, string> = {}) {
  return spawnSync('bash', ['-c', `set -o pipefail; "${TSX}" functions/admin/cli.ts ${command}`], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 60_000,
  });
}

/** Runs `work` with stderr not a terminal, as in CI or a log, whatever runs the tests. */
async function offTerminal<T>(work: () => Promise<T>): Promise<T> {
  const descriptor = Object.getOwnPropertyDescriptor(process.stderr, 'isTTY');
  const interval = process.env.GDP_PROGRESS_SECONDS;
  Object.defineProperty(process.stderr, 'isTTY', { value: false, configurable: true });
  process.env.GDP_PROGRESS_SECONDS = '0';
  try {
    return await work();
  } finally {
    if (descriptor) Object.defineProperty(process.stderr, 'isTTY', descriptor);
    else delete (process.stderr as { isTTY?: boolean }).isTTY;
    if (interval === undefined) delete process.env.GDP_PROGRESS_SECONDS;
    else process.env.GDP_PROGRESS_SECONDS = interval;
  }
}

async function provisioned(prefix: string, place: Record<string, string> = PLACES.mumbai): Promise<string> {
  const thingName = uniqueThingName(prefix);
  await addDevice(stack, thingName);
  const answer = await post(v1Body(thingName), place);
  expect(answer.status).toBe(200);
  return thingName;
}

const status = async (thingName: string) => (await registryRecord(thingName))?.prov_status?.S;
const certificateOf = async (thingName: string) => (await registryRecord(thingName))?.certificate_id?.S ?? '';

afterEach(clearFaults);

describe('gdp-admin import', () => {
  it('adds the good rows, reports the bad ones by line, and leaves existing records alone unless --update', async () => {
    const prefix = uniqueThingName('imp');
    const existing = await provisioned(`${prefix}-old`);
    const file = path.join(dir, `${prefix}.csv`);
    writeFileSync(
      file,
      [
        'thing_name,region,device_public_key',
        `${prefix}-a,,`,
        `${prefix}-b,ap-south-1,`,
        'not a name,,',
        `${prefix}-c,us-west-1,`,
        `${prefix}-d,,"-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----"`,
        `${existing},eu-west-1,`,
        `${prefix}-a,,`,
      ].join('\n'),
    );

    const dry = await admin('import', file, '--dry-run', '--json');
    expect(dry.code).toBe(5);
    expect(JSON.parse(dry.out)).toMatchObject({ new: 2, existing: 1, rejected: 4, written: 0 });
    expect(await registryRecord(`${prefix}-a`)).toBeUndefined();

    const run = await admin('import', file, '--json');
    expect(run.code).toBe(5);
    expect(JSON.parse(run.out)).toMatchObject({ new: 2, written: 2, rejected: 4 });
    expect(run.err).toContain(`${file}:4: thing_name must be`);
    expect(run.err).toContain(`${file}:5: region us-west-1 is not enabled`);
    expect(run.err).toContain(
      `${file}:6: device_public_key refused: the PUBLIC KEY block is not well-formed PEM`,
    );
    expect(run.err).toContain(`${file}:10: ${prefix}-a is already on line 2`);
    expect(await registryRecord(`${prefix}-b`)).toMatchObject({
      prov_status: { S: 'unprovisioned' },
      region_pin: { S: 'ap-south-1' },
    });
    expect((await registryRecord(existing))?.region_pin).toBeUndefined();

    // Again: idempotent. With --update the existing record gets its pin, and nothing else changes.
    expect(JSON.parse((await admin('import', file, '--json')).out)).toMatchObject({ new: 0, written: 0 });
    const before = await registryRecord(existing);
    await admin('import', file, '--update');
    const after = await registryRecord(existing);
    expect(after?.region_pin?.S).toBe('eu-west-1');
    expect(after?.certificate_id).toEqual(before?.certificate_id);
    expect(after?.prov_status?.S).toBe('provisioned');
  });

  it('sends a pinned device to its pin, wherever it is', async () => {
    const thingName = uniqueThingName('pin');
    const file = path.join(dir, `${thingName}.ndjson`);
    writeFileSync(file, `${JSON.stringify({ thing_name: thingName, region: 'sa-east-1' })}\n`);
    expect((await admin('import', file)).code).toBe(0);
    expect(await post(v1Body(thingName), PLACES.tokyo)).toMatchObject({
      status: 200,
      body: { region: 'sa-east-1' },
    });
  });
});

describe('gdp-admin list, show and stats', () => {
  it('filters by status, region and prefix, and counts by status × region', async () => {
    const prefix = uniqueThingName('lst');
    const device = await provisioned(`${prefix}-p`, PLACES.sydney);
    await addDevice(stack, `${prefix}-u`);

    const listed = await admin('list', '--prefix', prefix, '--status', 'provisioned', '--json');
    expect(JSON.parse(listed.out)).toEqual([
      expect.objectContaining({ thingName: device, status: 'provisioned', region: 'ap-southeast-2' }),
    ]);
    const ndjson = await admin('list', '--prefix', prefix, '--region', 'ap-southeast-2', '--ndjson');
    expect(ndjson.out.split('\n').map((line) => JSON.parse(line).thingName)).toEqual([device]);
    const count = await admin('list', '--prefix', prefix, '--count', '--json');
    expect(JSON.parse(count.out)).toEqual({
      provisioned: { 'ap-southeast-2': 1 },
      unprovisioned: { '-': 1 },
    });

    const stats = await admin('stats', '--json');
    const parsed = JSON.parse(stats.out) as {
      perHour: { provisioned: number }[];
      counts: Record<string, unknown>;
    };
    expect(parsed.perHour).toHaveLength(24);
    expect(parsed.perHour[23]?.provisioned).toBeGreaterThanOrEqual(1);
    expect(parsed.counts).toHaveProperty('provisioned');
  });

  it('shows the record beside AWS IoT and warns where they disagree', async () => {
    const thingName = await provisioned('show');
    const shown = await admin('show', thingName);
    expect(shown.code).toBe(0);
    expect(shown.out).toContain(`${thingName}: provisioned in ap-south-1`);
    expect(shown.out).toMatch(
      /ACTIVE {2}valid .* issuer our CA {2}policies global-device-provisioning-device/,
    );
    // The certificate's own dates, from its PEM, labelled (moto's DescribeCertificate invents others).
    const [, from, to] = /ACTIVE {2}valid (\d{4})-\S+ → (\d{4})-\S+ \(its PEM\)/.exec(shown.out) ?? [];
    expect(Number(to) - Number(from)).toBe(10);
    expect(shown.out).not.toContain('WARNINGS');
    expect(shown.out).not.toContain('BEGIN CERTIFICATE');
    // The deployment's certificate policy, and where this certificate stands in it.
    expect(shown.out).toMatch(/renews from +\d{4}-.*\(status answers "renew"\)/);
    expect(shown.out).toContain(
      'certificate policy: valid 3650 days, renewal from 80 % of the lifetime, previous certificate kept 168 h after a renewal',
    );

    // Someone deactivates the certificate behind the registry's back.
    await iotIn('ap-south-1').send(
      new UpdateCertificateCommand({ certificateId: await certificateOf(thingName), newStatus: 'INACTIVE' }),
    );
    const warned = JSON.parse((await admin('show', thingName, '--json')).out) as { warnings: string[] };
    expect(warned.warnings).toEqual([expect.stringContaining('its certificate is INACTIVE')]);

    expect((await admin('show', uniqueThingName('nobody'))).code).toBe(3);
  });
});

describe('gdp-admin disable, enable, revoke, reset', () => {
  it('disable refuses the device with 403, --revoke deactivates its certificate, enable lets it back', async () => {
    const thingName = await provisioned('dis');
    const certificateId = await certificateOf(thingName);
    const disabled = await admin('disable', thingName, '--revoke');
    expect(disabled.code).toBe(0);
    expect(await status(thingName)).toBe('disabled');
    expect(await certificateStatus('ap-south-1', certificateId)).toBe('INACTIVE');
    const refused = await post(v1Body(thingName), PLACES.mumbai);
    expect(refused).toMatchObject({
      status: 403,
      body: { message: expect.stringContaining(`gdp-admin enable ${thingName}`) },
    });

    // enable gives back what disable --revoke took (issue 17 item 15): the device connects again.
    const enabled = await admin('enable', thingName);
    expect(enabled.out).toContain(`reactivated certificate ${certificateId} in ap-south-1`);
    expect(await status(thingName)).toBe('provisioned');
    expect(await certificateStatus('ap-south-1', certificateId)).toBe('ACTIVE');
    const record = await registryRecord(thingName);
    expect(record?.history?.L?.map((entry) => entry.M?.what?.S)).toEqual(['disable --revoke', 'enable']);
    expect(record?.history?.L?.[0]?.M?.by?.S).toMatch(/^arn:aws:sts::/);
  });

  it('revoke deactivates, revoke --delete deletes certificate and thing, reset lets the device provision again', async () => {
    const thingName = await provisioned('rev');
    const certificateId = await certificateOf(thingName);
    await admin('revoke', thingName);
    expect(await status(thingName)).toBe('revoked');
    expect(await certificateStatus('ap-south-1', certificateId)).toBe('INACTIVE');
    expect(await post(v1Body(thingName), PLACES.mumbai)).toMatchObject({
      status: 403,
      body: { message: expect.stringContaining(`gdp-admin reset ${thingName}`) },
    });

    await admin('revoke', thingName, '--delete');
    expect(await certificateStatus('ap-south-1', certificateId)).toBeUndefined();
    expect(await thingExists('ap-south-1', thingName)).toBe(false);
    expect((await registryRecord(thingName))?.certificate_id).toBeUndefined();

    expect((await admin('reset', thingName)).code).toBe(0);
    const record = await registryRecord(thingName);
    expect(record?.prov_status?.S).toBe('unprovisioned');
    expect(record?.first_prov_epoch).toBeUndefined();
    expect(await post(v1Body(thingName), PLACES.mumbai)).toMatchObject({ status: 200 });
  });

  it('reset of a provisioned device retires its certificate and thing, ending the 409', async () => {
    const thingName = uniqueThingName('rst');
    // Provisioned long ago, outside the re-issue window: the device gets 409, which names the fix.
    await addDevice(stack, thingName);
    expect((await post(v1Body(thingName), PLACES.mumbai)).status).toBe(200);
    const certificateId = await certificateOf(thingName);
    await registryClient().send(
      new UpdateItemCommand({
        TableName: stack.tableName,
        Key: { thing_name: { S: thingName } },
        // Long ago: its answer-recovery window (sealed_key_until) is long over too.
        UpdateExpression: 'SET first_prov_epoch = :old REMOVE sealed_key, sealed_key_until',
        ExpressionAttributeValues: { ':old': { N: '1500000000' } },
      }),
    );
    expect(await post(v1Body(thingName), PLACES.mumbai)).toMatchObject({
      status: 409,
      body: { message: expect.stringContaining(`use \`gdp-admin reset ${thingName}\` to allow it again`) },
    });

    const reset = await admin('reset', thingName);
    expect(reset.out).toContain(`retired certificate ${certificateId} in ap-south-1`);
    expect(await certificateStatus('ap-south-1', certificateId)).toBeUndefined();
    expect(await thingExists('ap-south-1', thingName)).toBe(false);
    expect(await post(v1Body(thingName), PLACES.mumbai)).toMatchObject({ status: 200 });
  });

  it('waits for a provisioning request in flight, then refuses without changing anything', async () => {
    const thingName = uniqueThingName('busy');
    await addDevice(stack, thingName, {
      claim_id: { S: 'someone-else' },
      claim_expires: { N: String(Math.floor(Date.now() / 1000) + 60) },
    });
    const refused = await admin('--wait', '1', 'disable', thingName);
    expect(refused.code).toBe(4);
    expect(refused.err).toContain('a provisioning request for');
    expect(await status(thingName)).toBe('unprovisioned');
  });

  it('asks before changing anything when not told --yes', async () => {
    const thingName = await provisioned('ask');
    const code = await main(['node', 'gdp-admin', '--local', 'revoke', thingName]);
    expect(code).toBe(2); // not a terminal: --yes is required
    expect(await status(thingName)).toBe('provisioned');
  });
});

describe('gdp-admin move', () => {
  it('moves a device with its certificate; both regions accept it until --finish; the reconciler keeps both copies', async () => {
    const thingName = await provisioned('mov');
    const certificateId = await certificateOf(thingName);

    const moved = await admin('move', thingName, '--to', 'eu-west-2');
    expect(moved.code).toBe(0);
    expect(await certificateStatus('eu-west-2', certificateId)).toBe('ACTIVE');
    expect(await certificateStatus('ap-south-1', certificateId)).toBe('ACTIVE');
    expect(await registryRecord(thingName)).toMatchObject({
      aws_region: { S: 'eu-west-2' },
      moved_from_region: { S: 'ap-south-1' },
      certificate_id: { S: certificateId },
    });
    const shown = JSON.parse((await admin('show', thingName, '--json')).out) as {
      acceptedIn: string[];
      warnings: string[];
    };
    expect(shown.acceptedIn).toEqual(['eu-west-2', 'ap-south-1']);
    expect(shown.warnings).toEqual([]);
    expect((await admin('show', thingName)).out).toContain(
      'BOTH eu-west-2 and ap-south-1 accept this device',
    );

    // The reconciler sees both copies referenced.
    await localReconcile({ thingNamePrefix: thingName });
    expect(await certificateStatus('ap-south-1', certificateId)).toBe('ACTIVE');

    // A second run of the same move finishes it: nothing live twice.
    const finished = await admin('move', thingName, '--to', 'eu-west-2');
    expect(finished.out).toContain(`retired certificate ${certificateId} in ap-south-1`);
    expect(await certificateStatus('ap-south-1', certificateId)).toBeUndefined();
    expect(await thingExists('ap-south-1', thingName)).toBe(false);
    expect(await certificateStatus('eu-west-2', certificateId)).toBe('ACTIVE');
    expect((await registryRecord(thingName))?.moved_from_region).toBeUndefined();
  });

  it('resumes a move interrupted after its intent was recorded', async () => {
    const thingName = await provisioned('resume');
    const certificateId = await certificateOf(thingName);
    // An interrupted first run: the intent is on the record, AWS IoT in the target has nothing.
    await registryClient().send(
      new UpdateItemCommand({
        TableName: stack.tableName,
        Key: { thing_name: { S: thingName } },
        UpdateExpression:
          'SET move_to_region = :to, move_started = :now, record_version = record_version + :one',
        ExpressionAttributeValues: { ':to': { S: 'sa-east-1' }, ':now': { N: '1' }, ':one': { N: '1' } },
      }),
    );
    expect((await admin('move', thingName, '--to', 'eu-west-1')).code).toBe(4);
    expect((await admin('move', thingName, '--to', 'sa-east-1')).code).toBe(0);
    expect(await certificateStatus('sa-east-1', certificateId)).toBe('ACTIVE');
    expect((await admin('move', thingName, '--finish')).code).toBe(0);
    expect(await certificateStatus('ap-south-1', certificateId)).toBeUndefined();
    expect(await post(v1Body(thingName), PLACES.mumbai)).toMatchObject({
      status: 200,
      body: { region: 'sa-east-1' },
    });
  });

  it('refuses to move a device that is not provisioned, or to a region not deployed', async () => {
    const thingName = uniqueThingName('nomove');
    await addDevice(stack, thingName);
    expect((await admin('move', thingName, '--to', 'eu-west-1')).code).toBe(4);
    expect((await admin('move', thingName, '--to', 'us-west-1')).code).toBe(2);
  });
});

describe('gdp-admin off a terminal', () => {
  const prefix = uniqueThingName('many');
  beforeAll(async () => {
    const file = path.join(dir, `${prefix}.csv`);
    const rows = Array.from({ length: 3000 }, (_, index) => `${prefix}-${index}`);
    writeFileSync(file, ['thing_name', ...rows].join('\n'));
    expect((await admin('import', file)).code).toBe(0);
  });

  it('ends quietly with 0 when the reader closes the pipe: list --ndjson | head -1', () => {
    const run = adminProcess(`--local list --prefix ${prefix} --ndjson | head -1`);
    expect(run.stderr).not.toMatch(/EPIPE|Error/);
    expect(run.status).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ status: 'unprovisioned' });
  });

  it('list, stats and reconcile print progress lines on stderr', async () => {
    const piped = adminProcess(`--local list --prefix ${prefix} --count`, { GDP_PROGRESS_SECONDS: '0' });
    expect(piped.status).toBe(0);
    expect(piped.stderr).toMatch(/^count: 3000 matching records, \d+\/s$/m);

    const stats = await offTerminal(() => admin('stats'));
    expect(stats.err).toMatch(/^stats: \d+ records, \d+\/s(, \d+ % of ~\d+, ETA \d+ s)?$/m);
    const reconcile = await offTerminal(() => admin('reconcile', '--grace', '900', '--prefix', prefix));
    expect(reconcile.code).toBe(0);
    expect(reconcile.err).toMatch(/^reconcile: registry scan: \d+ records, \d+\/s/m);
  });

  it('without --local, says no deployment is configured and suggests --local while a local stack runs', () => {
    const words = adminProcess('list --count');
    expect(words.status).toBe(2);
    expect(words.stderr).toMatch(
      /^gdp-admin: no deployment is configured \(.*\)\. A local stack is running: add --local/,
    );
  });
});

describe('gdp-admin reconcile and --help', () => {
  it('runs the reconciler', async () => {
    const run = await admin('reconcile', '--grace', '900', '--prefix', uniqueThingName('rec'), '--json');
    expect(run.code).toBe(0);
    expect(JSON.parse(run.out)).toMatchObject({ failures: [] });
  });

  it('has an example in every command’s help', async () => {
    for (const command of program().commands) {
      const help: string[] = [];
      command.configureOutput({ writeOut: (text) => help.push(text) });
      command.outputHelp();
      expect(`${command.name()}: ${help.join('')}`).toMatch(/Examples?:\n {2}gdp-admin/);
    }
  });
});
