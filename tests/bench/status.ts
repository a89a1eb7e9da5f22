/**
 * The /device-status part of `make bench`: devices provisioned through the bench's edge, then
 * status calls timed one at a time, each signed as the spec says (the device's current
 * certificate and its key), and each call's AWS calls read back from the proxy's log.
 *
 * The function answers 429 to a second status call of one device within
 * STATUS_MIN_INTERVAL_SECONDS, so each device's calls are spaced by more than that; with many
 * devices, the wait overlaps the other devices' calls.
 */
import { getCalls } from '../local/aws-proxy';
import type { StatusAnswer } from '../../functions/provisioning/wire';
import type { DeviceCredentials } from '../integration/requests';
import { criticalPath } from './critical-path';

/** What a provisioned device keeps: its current certificate, the key, and where it lives. */
export interface BenchDevice extends DeviceCredentials {
  readonly thingName: string;
  readonly region: string;
  /** performance.now() of its last status call; 0 before the first. */
  lastCallAt: number;
}

export interface StatusRun {
  readonly devices: number;
  readonly callsPerDevice: number;
  /** Least time between two calls of one device, as the bench kept it. */
  readonly spacingMs: number;
  /** End-to-end latency of each call, ms. */
  readonly latencies: number[];
  /** Every AWS call the status calls made (`what` of the proxy's log). */
  readonly awsCalls: string[];
  /** Dependent AWS stages of each call, from the call log. */
  readonly paths: number[];
  /** Answers by `action`. */
  readonly actions: Map<string, number>;
}

/** Provisions one device in key mode: the answer carries the key the device then signs with. */
export async function provisionForStatus(
  provisioningUrl: string,
  body: unknown,
  headers: Readonly<Record<string, string>>,
): Promise<BenchDevice> {
  const response = await fetch(provisioningUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const answer = (await response.json()) as {
    status?: string;
    message?: string;
    certificatePem?: string;
    PrivateKey?: string;
    region?: string;
  };
  if (response.status !== 200 || !answer.certificatePem || !answer.PrivateKey || !answer.region) {
    throw new Error(`provisioning for the status bench answered ${response.status} ${answer.message ?? ''}`);
  }
  const thingName = (body as { 'thing-name': string })['thing-name'];
  return {
    thingName,
    certificatePem: answer.certificatePem,
    privateKeyPem: answer.PrivateKey,
    region: answer.region,
    lastCallAt: 0,
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * `callsPerDevice` passes over `devices`, one call at a time; a device is called again only
 * `spacingMs` after its previous call started. Any answer other than 200 stops the bench: a
 * refusal here means the bench, not the function, is wrong (or the function is).
 */
export async function measureStatus(options: {
  readonly statusUrl: string;
  readonly faultsUrl: string;
  readonly devices: BenchDevice[];
  readonly callsPerDevice: number;
  readonly spacingMs: number;
  /** The signed body of a status call, as firmware builds it (requests.lifecycleBody). */
  readonly body: (device: BenchDevice) => unknown;
}): Promise<StatusRun> {
  const run: StatusRun = {
    devices: options.devices.length,
    callsPerDevice: options.callsPerDevice,
    spacingMs: options.spacingMs,
    latencies: [],
    awsCalls: [],
    paths: [],
    actions: new Map(),
  };
  for (let pass = 0; pass < options.callsPerDevice; pass += 1) {
    for (const device of options.devices) {
      const wait = device.lastCallAt + options.spacingMs - performance.now();
      if (device.lastCallAt > 0 && wait > 0) await sleep(wait);
      // Signed before the clock starts: the device's own work is not the service's latency.
      const body = JSON.stringify(options.body(device));
      const lastSeq = (await getCalls(options.faultsUrl)).at(-1)?.seq ?? 0;
      device.lastCallAt = performance.now();
      const response = await fetch(options.statusUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
      const answer = (await response.json()) as Partial<StatusAnswer> & { message?: string };
      run.latencies.push(performance.now() - device.lastCallAt);
      if (response.status !== 200 || answer.status !== 'success') {
        throw new Error(
          `status of ${device.thingName} answered ${response.status}` +
            `${response.headers.get('retry-after') ? ` (Retry-After ${response.headers.get('retry-after')})` : ''}: ` +
            `${answer.message ?? JSON.stringify(answer)}`,
        );
      }
      const action = answer.action ?? '(none given)';
      run.actions.set(action, (run.actions.get(action) ?? 0) + 1);
      // One request at a time, and the bench makes no AWS calls of its own meanwhile: every call
      // logged after lastSeq is this status call's.
      const calls = await getCalls(options.faultsUrl, lastSeq);
      run.awsCalls.push(...calls.map((call) => call.what));
      run.paths.push(criticalPath(calls));
    }
  }
  return run;
}
