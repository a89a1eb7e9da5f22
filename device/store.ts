/**
 * What a provisioned device keeps between runs, in its data directory:
 *   private.key      PEM, mode 0600 (generated on the device, or the one the service returned)
 *   certificate.pem  the certificate registered in the device's region
 *   device.json      thing name, region, endpoint address, distance, when and how provisioned
 * A device whose directory holds all three goes straight to publishing.
 */
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';

export interface DeviceIdentity {
  readonly thingName: string;
  readonly region: string;
  /** "host" or "host:port", as the service answered it. */
  readonly endpointAddress: string;
  readonly distance: number;
  readonly provisionedAt: string;
  /** `device`: key generated here and a CSR sent; `service`: key returned by the service. */
  readonly keySource: 'device' | 'service';
}

export interface DeviceCredentials {
  readonly identity: DeviceIdentity;
  readonly privateKeyPem: string;
  readonly certificatePem: string;
}

export const PRIVATE_KEY_FILE = 'private.key';
export const CERTIFICATE_FILE = 'certificate.pem';
export const IDENTITY_FILE = 'device.json';

export function defaultDataDir(thingName: string): string {
  return resolve('device-data', thingName);
}

/** The stored credentials, or undefined when the device was never (completely) provisioned. */
export async function loadCredentials(dataDir: string): Promise<DeviceCredentials | undefined> {
  try {
    const [identityText, privateKeyPem, certificatePem] = await Promise.all([
      readFile(join(dataDir, IDENTITY_FILE), 'utf8'),
      readFile(join(dataDir, PRIVATE_KEY_FILE), 'utf8'),
      readFile(join(dataDir, CERTIFICATE_FILE), 'utf8'),
    ]);
    return { identity: JSON.parse(identityText) as DeviceIdentity, privateKeyPem, certificatePem };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/**
 * Writes the credentials; device.json goes last, so an interrupted run leaves a device that
 * still counts as unprovisioned rather than one with a half-written identity.
 */
export async function saveCredentials(dataDir: string, credentials: DeviceCredentials): Promise<void> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  await writeAtomically(join(dataDir, PRIVATE_KEY_FILE), credentials.privateKeyPem, 0o600);
  await writeAtomically(join(dataDir, CERTIFICATE_FILE), credentials.certificatePem, 0o644);
  await writeAtomically(
    join(dataDir, IDENTITY_FILE),
    JSON.stringify(credentials.identity, null, 2) + '\n',
    0o644,
  );
}

/** Removes what loadCredentials reads (`--reset`); the directory itself stays. */
export async function forgetCredentials(dataDir: string): Promise<boolean> {
  const existed = existsSync(join(dataDir, IDENTITY_FILE));
  await Promise.all(
    [IDENTITY_FILE, PRIVATE_KEY_FILE, CERTIFICATE_FILE].map((file) =>
      rm(join(dataDir, file), { force: true }),
    ),
  );
  return existed;
}

async function writeAtomically(path: string, content: string, mode: number): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`;
  await writeFile(temporary, content, { mode });
  // The mode passed to writeFile is filtered by the umask; the key must end up 0600 regardless.
  await chmod(temporary, mode);
  await rename(temporary, path);
}
