/**
 * gdp-admin import, row by row: a PEM in a CSV cell (quoted, with its line breaks), everything in
 * device_public_key that is not a public key a device can hold, refused by line; an empty file;
 * a bad name shown; and --update's counts, the same in --dry-run as in the real run.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { toPem } from '../../functions/provisioning/ca-certificate';
import { admin } from '../support/admin';
import { exponentOneKey } from '../support/unsound-keys';
import { registryRecord, stack, uniqueThingName } from '../integration/requests';

const dir = mkdtempSync(path.join(tmpdir(), 'gdp-import-keys-'));

/** A CSV cell as RFC 4180 quotes it: in double quotes, line breaks kept, quotes doubled. */
const cell = (text: string) => `"${text.replace(/"/g, '""')}"`;

describe('gdp-admin import: device_public_key', () => {
  it('imports a PEM public key written into the CSV as a quoted cell with its line breaks', async () => {
    const thingName = uniqueThingName('pem-csv');
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const pem = publicKey.export({ type: 'spki', format: 'pem' }) as string;
    const file = path.join(dir, `${thingName}.csv`);
    writeFileSync(file, `thing_name,device_public_key\n${thingName},${cell(pem)}\n`);

    const run = await admin('import', file, '--json');
    expect(run.code).toBe(0);
    expect(JSON.parse(run.out)).toMatchObject({ new: 1, written: 1, rejected: 0 });
    expect((await registryRecord(thingName))?.device_public_key?.S).toBe(pem);
  });

  it('refuses private keys, encrypted keys, certificates and keys nobody holds by line (exit 5), writing none', async () => {
    const prefix = uniqueThingName('not-public');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const refused: [string, string, string][] = [
      ['pkcs8', rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 'export the public half'],
      ['pkcs1', rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }) as string, 'export the public half'],
      ['sec1', ec.privateKey.export({ type: 'sec1', format: 'pem' }) as string, 'export the public half'],
      [
        'encrypted',
        ec.privateKey.export({
          type: 'pkcs8',
          format: 'pem',
          cipher: 'aes-256-cbc',
          passphrase: 'factory',
        }) as string,
        'export the public half',
      ],
      ['certificate', readFileSync(stack.deviceCaCertificate, 'utf8'), 'is a certificate'],
      ['exponent-one', toPem(exponentOneKey().spki, 'PUBLIC KEY'), 'RSA public exponent is 1'],
    ];
    const lines = ['thing_name,device_public_key'];
    const expected: string[] = [];
    for (const [name, pem, reason] of refused) {
      expected.push(`:${lines.join('\n').split('\n').length + 1}: device_public_key refused: `, reason);
      lines.push(`${prefix}-${name},${cell(pem)}`);
    }
    const file = path.join(dir, `${prefix}.csv`);
    writeFileSync(file, `${lines.join('\n')}\n`);

    const run = await admin('import', file, '--json');
    expect(run.code).toBe(5);
    expect(JSON.parse(run.out)).toMatchObject({ rejected: refused.length, new: 0, written: 0 });
    for (const [index, [name]] of refused.entries()) {
      const [where, reason] = [expected[index * 2] as string, expected[index * 2 + 1] as string];
      const said = run.err.split('\n').find((line) => line.startsWith(`${file}${where}`));
      expect(said).toContain(reason);
      expect(await registryRecord(`${prefix}-${name}`)).toBeUndefined();
    }
    // No key material in what the operator sees.
    expect(run.err).not.toMatch(/BEGIN|MII/);
  });
});

describe('gdp-admin import: what it says', () => {
  it('refuses an empty file and a file with only its header (exit 5), naming the file', async () => {
    for (const [name, text] of [
      ['empty.csv', ''],
      ['header-only.csv', 'thing_name,region\n'],
      ['empty.ndjson', '\n'],
    ] as const) {
      const file = path.join(dir, `${uniqueThingName('empty')}-${name}`);
      writeFileSync(file, text);
      const run = await admin('import', file);
      expect(run.code).toBe(5);
      expect(run.err).toContain(`${file}:1: no devices: the file is empty`);
    }
  });

  it('shows the bad value of a thing name', async () => {
    const file = path.join(dir, `${uniqueThingName('bad-name')}.csv`);
    writeFileSync(file, 'thing_name\nshop 1\n');
    const run = await admin('import', file);
    expect(run.code).toBe(5);
    expect(run.err).toContain(
      `${file}:2: thing_name must be 1–128 characters of letters, digits, ':', '_' or '-'; got "shop 1"`,
    );
  });

  it('--update counts in --dry-run what the real run updates, and says so honestly', async () => {
    const prefix = uniqueThingName('upd');
    const names = [0, 1, 2].map((index) => `${prefix}-${index}`);
    const file = path.join(dir, `${prefix}.csv`);
    writeFileSync(file, ['thing_name,region', ...names.map((name) => `${name},`)].join('\n'));
    expect((await admin('import', file)).code).toBe(0);
    // Two of the three get a pin.
    writeFileSync(
      file,
      ['thing_name,region', `${names[0]},eu-west-1`, `${names[1]},ap-south-1`, `${names[2]},`].join('\n'),
    );

    const dry = await admin('import', file, '--update', '--dry-run');
    expect(dry.out).toContain('dry run: would add 0 devices, update 2, leave 1 existing as they are');
    const real = await admin('import', file, '--update', '--json');
    expect(JSON.parse(real.out)).toMatchObject({ new: 0, existing: 3, updated: 2, written: 0 });
    expect((await registryRecord(names[1] as string))?.region_pin?.S).toBe('ap-south-1');
    const again = await admin('import', file, '--update');
    expect(again.out).toMatch(
      /^added 0 devices, updated 0, left 3 existing as they are, rejected 0 — 3 rows in [\d.]+ s, \d+ rows\/s/,
    );
  });
});
