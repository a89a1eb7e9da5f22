/**
 * /device-status and /device-renew as the contract describes them (docs/protocol.md), in
 * process, for unit tests of the device's side: it verifies each signature against the
 * certificate sent, issues certificates from a test CA for the CSR's key, answers a retry with
 * the same CSR with the same certificate, retires the replaced certificate once the new one is
 * proven, and can be told to throttle, refuse or lose answers. Handed to the device as `fetch`.
 */
import 'reflect-metadata';
import { X509Certificate, verify } from 'node:crypto';
import { issueDeviceCertificate } from '../../../functions/provisioning/certificate-authority';
import {
  canonicalLifecycleMessage,
  pemToDer,
  RENEW_PATH,
  STATUS_PATH,
  type DeviceAction,
  type LifecycleRequestBody,
  type RenewAnswer,
  type StatusAnswer,
} from '../../../functions/provisioning/wire';
import { certificateIdOf, createKeyAndCsr, type DeviceKeyType } from '../../../device/keys';
import type { DeviceCredentials } from '../../../device/store';
import { testCa, type TestCa } from '../../support/ca';
import * as x509 from '../../support/x509';

export type CertificateState = 'ACTIVE' | 'RETIRING' | 'RETIRED';

/** A one-off answer instead of the normal one, for the next call to `path`. */
export interface ScriptedAnswer {
  readonly path: typeof STATUS_PATH | typeof RENEW_PATH;
  readonly status?: number;
  readonly retryAfter?: string;
  readonly message?: string;
  /** Do the work, then lose the answer on the way back (the device sees a network error). */
  readonly dropAfterApplying?: boolean;
}

export interface ReceivedCall {
  readonly path: string;
  readonly body: LifecycleRequestBody;
  /** Certificate id of the certificate the call was signed with. */
  readonly signedWith: string;
}

export const ORIGIN = 'http://lifecycle.test';
export const STATUS_URL = `${ORIGIN}${STATUS_PATH}`;
export const RENEW_URL = `${ORIGIN}${RENEW_PATH}`;

const VALIDITY_DAYS = 365;
const DAY_MS = 86_400_000;

export class FakeLifecycleService {
  readonly calls: ReceivedCall[] = [];
  readonly certificates = new Map<string, CertificateState>();
  /** What status answers for the current certificate. */
  action: DeviceAction = 'none';
  region = 'eu-central-1';
  endpointAddress = 'frankfurt.iot.test';
  movedFrom?: string;
  private currentId = '';
  private readonly issuedForCsr = new Map<string, RenewAnswer>();
  private readonly script: ScriptedAnswer[] = [];

  private constructor(
    private readonly ca: TestCa,
    readonly thingName: string,
  ) {}

  /** A service with one device provisioned: its credentials as the device stores them. */
  static async withDevice(
    thingName: string,
    keyType: DeviceKeyType = 'ec',
  ): Promise<{ service: FakeLifecycleService; credentials: DeviceCredentials }> {
    const service = new FakeLifecycleService(await testCa(), thingName);
    const { privateKeyPem, csrPem } = await createKeyAndCsr(thingName, keyType);
    const issued = await service.issue(csrPem);
    service.currentId = issued.certificateId;
    service.certificates.set(issued.certificateId, 'ACTIVE');
    return {
      service,
      credentials: {
        privateKeyPem,
        certificatePem: issued.certificatePem,
        identity: {
          thingName,
          region: service.region,
          endpointAddress: service.endpointAddress,
          distance: 0,
          provisionedAt: '2026-01-01T00:00:00.000Z',
          keySource: 'device',
        },
      },
    };
  }

  get currentCertificateId(): string {
    return this.currentId;
  }

  /** The next call to `answer.path` gets this instead (queued in order). */
  then(answer: ScriptedAnswer): this {
    this.script.push(answer);
    return this;
  }

  callsTo(path: string): ReceivedCall[] {
    return this.calls.filter((call) => call.path === path);
  }

  readonly fetch: typeof fetch = async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const body = JSON.parse(String(init?.body)) as LifecycleRequestBody;
    const scripted = this.takeScripted(url.pathname);
    if (scripted?.status !== undefined && !scripted.dropAfterApplying) {
      this.calls.push({ path: url.pathname, body, signedWith: certificateIdOf(body.certificate) });
      return json(
        scripted.status,
        { status: 'error', message: scripted.message ?? 'scripted' },
        scripted.retryAfter,
      );
    }
    const answer = this.answer(url.pathname, body);
    if (scripted?.dropAfterApplying)
      throw new TypeError('fetch failed', { cause: new Error('socket hang up') });
    return answer;
  };

  private takeScripted(path: string): ScriptedAnswer | undefined {
    const index = this.script.findIndex((answer) => answer.path === path);
    return index < 0 ? undefined : this.script.splice(index, 1)[0];
  }

  private answer(path: string, body: LifecycleRequestBody): Response | Promise<Response> {
    const signedWith = certificateIdOf(body.certificate);
    this.calls.push({ path, body, signedWith });
    if (path !== STATUS_PATH && path !== RENEW_PATH) return json(404, { message: 'Not Found' });
    const operation = path === STATUS_PATH ? 'status' : 'renew';
    const message = canonicalLifecycleMessage({
      operation,
      thingName: body['thing-name'],
      timestamp: body.timestamp,
      nonce: body.nonce,
      csrDer: body.CSR ? pemToDer(body.CSR) : undefined,
    });
    const key = new X509Certificate(body.certificate).publicKey;
    const state = this.certificates.get(signedWith);
    const verified = verify(
      'sha256',
      message,
      { key, dsaEncoding: 'der' },
      Buffer.from(body.signature, 'base64'),
    );
    if (!verified || body['thing-name'] !== this.thingName || (state !== 'ACTIVE' && state !== 'RETIRING')) {
      return json(401, { status: 'error', message: 'signature does not verify' });
    }
    return operation === 'status' ? this.status(signedWith, state) : this.renew(signedWith, body);
  }

  private status(signedWith: string, state: CertificateState): Response {
    if (signedWith === this.currentId) {
      // The new key is proven: the certificate it replaced is retired now.
      for (const [id, other] of this.certificates) {
        if (other === 'RETIRING') this.certificates.set(id, 'RETIRED');
      }
    }
    const action: DeviceAction = state === 'RETIRING' ? 'renew' : this.action;
    const answer: StatusAnswer = {
      status: 'success',
      action,
      provStatus: 'provisioned',
      region: this.region,
      endpointAddress: this.endpointAddress,
      certificateId: this.currentId,
      certificateStatus: state === 'RETIRING' ? 'RETIRING' : 'ACTIVE',
      notAfter: new Date(Date.now() + 100 * DAY_MS).toISOString(),
      renewAfter: new Date(Date.now() + 80 * DAY_MS).toISOString(),
      ...(action === 'move' && this.movedFrom ? { movedFrom: this.movedFrom } : {}),
      message: `fake: ${action}`,
    };
    return json(200, answer);
  }

  private async renew(signedWith: string, body: LifecycleRequestBody): Promise<Response> {
    if (!body.CSR) return json(400, { status: 'error', message: 'this fake wants a CSR' });
    const again = this.issuedForCsr.get(body.CSR);
    if (again) return json(200, again);
    const issued = await this.issue(body.CSR);
    // A retry with another CSR replaces a renewal never proven: never a third live certificate.
    if (signedWith !== this.currentId) this.certificates.set(this.currentId, 'RETIRED');
    else this.certificates.set(signedWith, 'RETIRING');
    this.currentId = issued.certificateId;
    this.certificates.set(issued.certificateId, 'ACTIVE');
    this.issuedForCsr.set(body.CSR, issued);
    return json(200, issued);
  }

  private async issue(csrPem: string): Promise<RenewAnswer> {
    const csr = new x509.Pkcs10CertificateRequest(csrPem);
    const certificate = await issueDeviceCertificate(this.ca.certificate, this.ca.signer, {
      thingName: this.thingName,
      publicKeySpki: new Uint8Array(csr.publicKey.rawData),
      validityDays: VALIDITY_DAYS,
    });
    return {
      status: 'success',
      region: this.region,
      endpointAddress: this.endpointAddress,
      certificatePem: certificate.pem,
      certificateId: certificate.id,
      notAfter: certificate.notAfter.toISOString(),
      previousRetiredBy: '2026-12-10T00:00:00.000Z',
    };
  }
}

function json(status: number, body: object, retryAfter?: string): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', ...(retryAfter ? { 'retry-after': retryAfter } : {}) },
  });
}
