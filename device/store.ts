/**
 * What a provisioned device keeps between runs, in its data directory:
 *   private.key      PEM, mode 0600 (generated on the device, or the one the service returned)
 *   certificate.pem  the certificate registered in the device's region
 *   device.json      thing name, region, endpoint address, distance, when and how provisioned
 * A device whose directory holds all three goes straight to publishing (the layout of the first
 * versions, still read as is). After day one it may also hold:
 *   lifecycle.json   the last status check and the last renewal
 *   pending/         a renewal under way: private.key and request.csr before the request is sent,
 *                    then certificate.pem and device.json once the service answered. It becomes
 *                    the current set only after it connected over MQTT.
 *   previous/        the set a renewal replaced, until a status call signed with the new
 *                    certificate has retired it; the way back if a promotion was interrupted.
 * Whatever step a crash interrupts, one of these sets still holds a key and certificate that
 * belong together and that the service has not retired.
 */
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { DeviceAction } from '../functions/provisioning/wire';
import { certificateMatchesKey } from './keys';

export interface DeviceIdentity {
  readonly thingName: string;
  readonly region: string;
  /** "host" or "host:port", as the service answered it. */
  readonly endpointAddress: string;
  readonly distance: number;
  readonly provisionedAt: string;
  /** `device`: key generated here and a CSR sent; `service`: key returned by the service. */
  readonly keySource: 'device' | 'service';
  /** When this certificate replaced an earlier one (absent: the one provisioning issued). */
  readonly renewedAt?: string;
  /** When the device followed an operator's move here, and from which region. */
  readonly movedAt?: string;
  readonly movedFrom?: string;
}

export interface DeviceCredentials {
  readonly identity: DeviceIdentity;
  readonly privateKeyPem: string;
  readonly certificatePem: string;
}

export const PRIVATE_KEY_FILE = 'private.key';
export const CERTIFICATE_FILE = 'certificate.pem';
export const IDENTITY_FILE = 'device.json';
export const LIFECYCLE_FILE = 'lifecycle.json';
export const PENDING_DIR = 'pending';
export const PREVIOUS_DIR = 'previous';
export const RENEWAL_CSR_FILE = 'request.csr';

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

/**
 * Removes what loadCredentials reads, and what day two kept beside it (`--reset`, re-provisioning);
 * the directory itself stays.
 */
export async function forgetCredentials(dataDir: string): Promise<boolean> {
  const existed = existsSync(join(dataDir, IDENTITY_FILE));
  // The identity first: an interrupted forget leaves a device that counts as unprovisioned.
  await rm(join(dataDir, IDENTITY_FILE), { force: true });
  await Promise.all([
    ...[PRIVATE_KEY_FILE, CERTIFICATE_FILE, LIFECYCLE_FILE].map((file) =>
      rm(join(dataDir, file), { force: true }),
    ),
    rm(join(dataDir, PENDING_DIR), { recursive: true, force: true }),
    rm(join(dataDir, PREVIOUS_DIR), { recursive: true, force: true }),
  ]);
  return existed;
}

/** Stores only where the device connects now (a move keeps the certificate and key). */
export async function saveIdentity(dataDir: string, identity: DeviceIdentity): Promise<void> {
  await writeAtomically(join(dataDir, IDENTITY_FILE), JSON.stringify(identity, null, 2) + '\n', 0o644);
}

/** The key and CSR of a renewal, kept before the request goes out. */
export interface RenewalRequest {
  readonly privateKeyPem: string;
  readonly csrPem: string;
}

/**
 * Keeps the new key and its CSR before the renewal is sent: if the answer is lost (or the device
 * restarts), asking again with the same CSR gets the same certificate back instead of another one.
 */
export async function savePendingRequest(dataDir: string, request: RenewalRequest): Promise<void> {
  const pending = join(dataDir, PENDING_DIR);
  await mkdir(pending, { recursive: true, mode: 0o700 });
  await writeAtomically(join(pending, PRIVATE_KEY_FILE), request.privateKeyPem, 0o600);
  await writeAtomically(join(pending, RENEWAL_CSR_FILE), request.csrPem, 0o644);
}

/** A renewal request sent before and not answered (or not stored) yet. */
export async function loadPendingRequest(dataDir: string): Promise<RenewalRequest | undefined> {
  const pending = join(dataDir, PENDING_DIR);
  try {
    const [privateKeyPem, csrPem] = await Promise.all([
      readFile(join(pending, PRIVATE_KEY_FILE), 'utf8'),
      readFile(join(pending, RENEWAL_CSR_FILE), 'utf8'),
    ]);
    return { privateKeyPem, csrPem };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** The renewed credentials, stored beside the current ones: device.json last, as for any set. */
export async function savePendingCredentials(dataDir: string, credentials: DeviceCredentials): Promise<void> {
  await saveCredentials(join(dataDir, PENDING_DIR), credentials);
}

/** Renewed credentials that have not connected yet (complete sets only). */
export function loadPendingCredentials(dataDir: string): Promise<DeviceCredentials | undefined> {
  return loadCredentials(join(dataDir, PENDING_DIR));
}

export async function discardPending(dataDir: string): Promise<void> {
  await rm(join(dataDir, PENDING_DIR), { recursive: true, force: true });
}

/**
 * Makes the pending set current. Each step can be repeated after a crash: the current set is
 * copied to previous/ first, pending/ is removed only once the current set is whole again, and
 * a start finds pending/ first (and promotes again) or, if that fails, previous/.
 */
export async function promotePending(dataDir: string): Promise<DeviceCredentials> {
  const pending = await loadPendingCredentials(dataDir);
  if (!pending) throw new Error(`no renewed credentials in ${join(dataDir, PENDING_DIR)}`);
  const current = await loadCredentials(dataDir);
  // A repeated promotion finds the pending set already current: keep the older previous/.
  if (current && current.certificatePem !== pending.certificatePem && usable(current)) {
    await saveCredentials(join(dataDir, PREVIOUS_DIR), current);
  }
  await saveCredentials(dataDir, pending);
  await discardPending(dataDir);
  return pending;
}

/** The set a renewal replaced, kept until the service retired it. */
export function loadPreviousCredentials(dataDir: string): Promise<DeviceCredentials | undefined> {
  return loadCredentials(join(dataDir, PREVIOUS_DIR));
}

export async function discardPrevious(dataDir: string): Promise<void> {
  await rm(join(dataDir, PREVIOUS_DIR), { recursive: true, force: true });
}

/**
 * When the current key and certificate do not belong together (a promotion stopped half-way and
 * its pending set no longer connects), puts the previous set back. Returns what it restored.
 */
export async function restoreInterruptedPromotion(dataDir: string): Promise<DeviceCredentials | undefined> {
  const current = await loadCredentials(dataDir);
  if (!current || usable(current)) return undefined;
  const previous = await loadPreviousCredentials(dataDir);
  if (!previous || !usable(previous)) return undefined;
  await saveCredentials(dataDir, previous);
  return previous;
}

function usable(credentials: DeviceCredentials): boolean {
  return certificateMatchesKey(credentials.certificatePem, credentials.privateKeyPem);
}

/** What lifecycle.json remembers between runs. */
export interface LifecycleState {
  readonly lastStatusCheck?: {
    /** ISO-8601 UTC. */
    readonly at: string;
    readonly action: DeviceAction;
    readonly notAfter?: string;
    readonly renewAfter?: string;
  };
  readonly lastRenewal?: {
    readonly at: string;
    readonly certificateId: string;
    readonly previousCertificateId: string;
    readonly previousRetiredBy?: string;
  };
}

export async function loadLifecycleState(dataDir: string): Promise<LifecycleState> {
  try {
    return JSON.parse(await readFile(join(dataDir, LIFECYCLE_FILE), 'utf8')) as LifecycleState;
  } catch (error) {
    // A garbled file costs one extra status check, never a device that will not start.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' || error instanceof SyntaxError) return {};
    throw error;
  }
}

export async function saveLifecycleState(dataDir: string, state: LifecycleState): Promise<void> {
  await writeAtomically(join(dataDir, LIFECYCLE_FILE), JSON.stringify(state, null, 2) + '\n', 0o644);
}

async function writeAtomically(path: string, content: string, mode: number): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`;
  await writeFile(temporary, content, { mode });
  // The mode passed to writeFile is filtered by the umask; the key must end up 0600 regardless.
  await chmod(temporary, mode);
  await rename(temporary, path);
}
