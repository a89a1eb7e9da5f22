/**
 * gdp-admin import and the device_public_key column: a PEM in a CSV cell (quoted, with its line
 * breaks), and everything that is not a public key a device can hold, refused by line.
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
