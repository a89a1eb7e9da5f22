/**
 * `make demo`, after the first boot: devices already in the field start gdp-device again, which
 * asks /device-status and does what it is told. One device provisioned long ago renews its
 * certificate; one is moved by the operator from Frankfurt to Dublin and follows; one is revoked
 * and is told so. The operator's steps run through gdp-admin's own entry point (`npm run admin --
 * --local …`), as a person would type them. Prints one line per step; returns the checks.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../tests/local/stack-state';
import { seedAgedDevice } from '../tests/local/aged-device';
import { viewerHeaders } from '../tests/local/edge';
import { addDevice, type LocalStack } from '../tests/local/stack';
import type { WatchSubscription } from '../tests/local/watch';
import { connectionOptions, EXIT, runDevice, type DeviceSettings } from './cli';
import { certificateIdOf } from './keys';
import { DEFAULT_STATUS_INTERVAL_SECONDS } from './lifecycle';
import { canConnect, telemetryTopic } from './mqtt';
import { loadCredentials, saveCredentials, type DeviceCredentials } from './store';

export interface DayTwoCheck {
  readonly what: string;
  readonly ok: boolean;
}

const MESSAGES = 2;
const OBSERVER_WAIT_MS = 5000;

// Near, not at, the region's site: Mainz is 30 km from Frankfurt (eu-central-1).
const MAINZ = viewerHeaders({ latitude: 49.99, longitude: 8.25, country: 'DE' });
const KUALA_LUMPUR = viewerHeaders({ latitude: 3.14, longitude: 101.69, country: 'MY' });

/**
 * The device's own words for the steps the scene is about, without the details that make a line
 * long (certificate validity, the endpoint of a first boot).
 */
const STEP_LINES: readonly RegExp[] = [
  /^provisioned in \S+ \([^)]*\)/,
  /^status: .*?(?=; certificate |$)/,
  /^renewed: .*?(?= \(which stays|$)/,
  /^connected to .* with the renewed certificate.*/,
  /^status signed with the renewed certificate.*/,
  /^status call throttled.*/,
  /^status check (refused|failed).*/,
  /^the renewed certificate could not connect.*/,
  /^moved: .*/,
  /^cannot connect to .*/,
  /^the service refused .*/,
];

interface DeviceRun {
  readonly code: number;
  /** Everything it printed, for a failure's explanation. */
  readonly transcript: string;
}

export class DayTwo {
  private readonly caPem: string;
  private readonly fleetKeyPem: string;
  private readonly width: number;

  constructor(
    private readonly stack: LocalStack,
    private readonly watch: WatchSubscription,
    private readonly dataRoot: string,
    private readonly runId: string,
    private readonly log: (line: string) => void,
  ) {
    this.caPem = readFileSync(stack.caCertificate, 'utf8');
    this.fleetKeyPem = readFileSync(stack.fleetSigningKey, 'utf8');
    this.width = Math.max(
      'operator'.length,
      ...['aged', 'mainz', 'kualalumpur'].map((n) => this.thing(n).length),
    );
  }

  thing(name: string): string {
    return `demo-${name}-${this.runId}`;
  }

  /** (a) A certificate near its end: told to renew, renews, reconnects with the new one. */
  async renewal(): Promise<DayTwoCheck> {
    const thingName = this.thing('aged');
    const aged = await seedAgedDevice(this.stack, {
      thingName,
      region: 'eu-west-2',
      ageDays: 300,
      validityDays: 365,
    });
    const settings = this.settings(thingName, {});
    const old: DeviceCredentials = {
      privateKeyPem: aged.privateKeyPem,
      certificatePem: aged.certificatePem,
      identity: {
        thingName,
        region: aged.region,
        endpointAddress: aged.endpointAddress,
        distance: 0,
        provisionedAt: aged.notBefore.toISOString(),
        keySource: 'device',
      },
    };
    await saveCredentials(settings.dataDir, old);
    this.say(
      thingName,
      `provisioned 300 days ago in ${aged.region} (aged-device fixture); certificate ${short(aged.certificateId)} ` +
        `ends ${aged.notAfter.toISOString().slice(0, 10)}`,
    );
    const run = await this.device(settings);
    const now = await loadCredentials(settings.dataDir);
    const what = 'renewal';
    if (run.code !== EXIT.ok || !now || now.certificatePem === old.certificatePem) {
      return this.failed(what, `exit ${run.code}, certificate not renewed`, run);
    }
    const delivered = await this.observed(thingName, aged.region);
    const oldRefused = !(await this.connects(old));
    return {
      what:
        `${what}: published ${delivered}/${MESSAGES} in ${aged.region} with certificate ${short(certificateIdOf(now.certificatePem))}; ` +
        `the old one ${oldRefused ? 'is refused now' : 'STILL CONNECTS'}`,
      ok: delivered === MESSAGES && oldRefused,
    };
  }

  /** (b) Provisioned near Frankfurt, moved to Dublin by the operator, follows; then the move is finished. */
  async move(): Promise<DayTwoCheck> {
    const thingName = this.thing('mainz');
    const what = 'move';
    await addDevice(this.stack, thingName);
    const settings = this.settings(thingName, MAINZ);
    const first = await this.device(settings);
    const before = await loadCredentials(settings.dataDir);
    if (first.code !== EXIT.ok || before?.identity.region !== 'eu-central-1') {
      return this.failed(
        what,
        `first boot: exit ${first.code}, region ${before?.identity.region ?? '-'}`,
        first,
      );
    }
    if (!(await this.operator('move', thingName, '--to', 'eu-west-1')))
      return { what: `${what}: gdp-admin move failed`, ok: false };
    const followed = await this.device(settings);
    const after = await loadCredentials(settings.dataDir);
    if (followed.code !== EXIT.ok || after?.identity.region !== 'eu-west-1') {
      return this.failed(what, `exit ${followed.code}, still in ${after?.identity.region ?? '-'}`, followed);
    }
    if (!(await this.operator('move', thingName, '--finish')))
      return { what: `${what}: gdp-admin move --finish failed`, ok: false };
    const finished = await this.device(settings);
    const delivered = await this.observed(thingName, 'eu-west-1', 2 * MESSAGES);
    const frankfurtRefuses = !(await this.connects(before));
    return {
      what:
        `${what}: published ${delivered}/${2 * MESSAGES} in eu-west-1 (before and after --finish); ` +
        `eu-central-1 ${frankfurtRefuses ? 'refuses it now' : 'STILL ACCEPTS IT'}`,
      ok: finished.code === EXIT.ok && delivered === 2 * MESSAGES && frankfurtRefuses,
    };
  }

  /** (c) Revoked by the operator: the status check tells it, and it stops with exit 7. */
  async revocation(): Promise<DayTwoCheck> {
    const thingName = this.thing('kualalumpur');
    const what = 'revoked';
    await addDevice(this.stack, thingName);
    const settings = this.settings(thingName, KUALA_LUMPUR);
    const first = await this.device(settings);
    if (first.code !== EXIT.ok) return this.failed(what, `first boot: exit ${first.code}`, first);
    if (!(await this.operator('revoke', thingName)))
      return { what: `${what}: gdp-admin revoke failed`, ok: false };
    const told = await this.device(settings);
    return told.code === EXIT.revoked
      ? {
          what: `${what}: told by /device-status (403), gdp-device exited ${told.code} without connecting`,
          ok: true,
        }
      : this.failed(what, `exit ${told.code}, expected ${EXIT.revoked}`, told);
  }

  private settings(thingName: string, headers: Record<string, string>): DeviceSettings {
    return {
      thingName,
      apiUrl: this.stack.provisioningUrl,
      ownKey: true,
      keyType: 'ec',
      fakeDevice: false,
      continueWithoutPauses: true,
      signingKeyPem: this.fleetKeyPem,
      protocol: 'v2',
      dataDir: join(this.dataRoot, thingName),
      caPems: [this.caPem],
      count: MESSAGES,
      intervalSeconds: 0.1,
      headers,
      lifecycle: {
        statusUrl: this.stack.statusUrl,
        renewUrl: this.stack.renewUrl,
        statusCheck: 'when-due',
        statusIntervalSeconds: DEFAULT_STATUS_INTERVAL_SECONDS,
      },
    };
  }

  /** gdp-device, started once: prints the step lines it said. */
  private async device(settings: DeviceSettings): Promise<DeviceRun> {
    const said: string[] = [];
    const show = (text: string) => {
      said.push(text);
      // "provisioned <thing> in …": the thing name is the line's prefix already.
      const line = text.replace(`provisioned ${settings.thingName} `, 'provisioned ');
      for (const pattern of STEP_LINES) {
        const step = pattern.exec(line);
        if (step) return this.say(settings.thingName, step[0]);
      }
    };
    const code = await runDevice(settings, { line: show, error: show });
    return { code, transcript: said.join('\n') };
  }

  /** gdp-admin through the project's entry point, against this local stack. */
  private async operator(...args: string[]): Promise<boolean> {
    const command = ['npm', 'run', '--silent', 'admin', '--', '--local', ...args, '--yes'];
    const shown = `gdp-admin ${[...args, '--yes'].join(' ')}`;
    const result = await new Promise<{ code: number; stdout: string; stderr: string }>((done) =>
      execFile(command[0] as string, command.slice(1), { cwd: REPO_ROOT }, (error, stdout, stderr) =>
        done({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
      ),
    );
    const first = result.stdout.split('\n').find((line) => line.trim() !== '') ?? '';
    this.say(
      'operator',
      `${shown}: ${result.code === 0 ? first.replace(/ \(by .*\)$/, '') : `exit ${result.code}`}`,
    );
    if (result.code !== 0) this.log(indent(`${result.stdout}${result.stderr}`));
    return result.code === 0;
  }

  private connects(credentials: DeviceCredentials): Promise<boolean> {
    return canConnect(connectionOptions(credentials, [this.caPem]));
  }

  /** Messages of this device the observer saw in `region`, waiting for `expected`. */
  private observed(thingName: string, region: string, expected = MESSAGES): Promise<number> {
    const topic = telemetryTopic(thingName);
    return this.watch.countWithin(
      (message) => message.topic === topic && message.region === region,
      expected,
      OBSERVER_WAIT_MS,
    );
  }

  private say(who: string, line: string): void {
    this.log(`  ${who.padEnd(this.width)}  ${line}`);
  }

  private failed(what: string, why: string, run: DeviceRun): DayTwoCheck {
    this.log(indent(run.transcript));
    return { what: `${what}: ${why}`, ok: false };
  }
}

function short(certificateId: string): string {
  return certificateId.slice(0, 12);
}

function indent(text: string): string {
  return text
    .trimEnd()
    .split('\n')
    .map((line) => `      ${line}`)
    .join('\n');
}
