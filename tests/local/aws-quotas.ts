/**
 * The AWS proxy's quota mode: a token bucket per (region, API) at AWS's default control-plane
 * rates, times a scale factor, so that a storm of devices meets throttling locally the way it
 * would in an account: a call over its API's rate is answered ThrottlingException and never
 * reaches moto. Rates and their sources: docs/facts.md ("AWS IoT control-plane quotas").
 *
 * Pure apart from the clock it is given: which API a call is, the default rates, the buckets and
 * the per (region, API) counters the storm report reads.
 */
import { createHash } from 'node:crypto';

/** Default rates per second, per account and region (docs/facts.md says where each comes from). */
export const DEFAULT_QUOTA_RATES: Readonly<Record<string, number>> = {
  RegisterCertificate: 10,
  RegisterCertificateWithoutCA: 10,
  // Not in the sources we checked; taken as RegisterCertificate's, the other way a certificate is made.
  CreateKeysAndCertificate: 10,
  CreateCertificateFromCsr: 15,
  CreateThing: 15,
  DescribeThing: 350,
  AttachPolicy: 15,
  AttachThingPrincipal: 15,
  // Not in the sources we checked; taken as AttachThingPrincipal's.
  DetachThingPrincipal: 15,
  UpdateCertificate: 10,
  DeleteCertificate: 10,
  DescribeCertificate: 10,
  ListCertificatesByCA: 10,
  GetPolicy: 10,
  // KMS Sign with ECC keys: one budget shared by every ECC key of the account and region. The
  // local function signs only with the device CA's key (ECC_NIST_P256), so every Sign counts.
  Sign: 300,
};

/** IoT's REST routes (method, path template), as the SDK's model declares them. */
const IOT_ROUTES: readonly [string, RegExp, string][] = [
  ['POST', /^\/certificate\/register$/, 'RegisterCertificate'],
  ['POST', /^\/certificate\/register-no-ca$/, 'RegisterCertificateWithoutCA'],
  ['POST', /^\/keys-and-certificate$/, 'CreateKeysAndCertificate'],
  ['POST', /^\/certificates$/, 'CreateCertificateFromCsr'],
  ['GET', /^\/certificates$/, 'ListCertificates'],
  ['PUT', /^\/certificates\/[^/]+$/, 'UpdateCertificate'],
  ['DELETE', /^\/certificates\/[^/]+$/, 'DeleteCertificate'],
  ['GET', /^\/certificates\/[^/]+$/, 'DescribeCertificate'],
  ['GET', /^\/certificates-by-ca\/[^/]+$/, 'ListCertificatesByCA'],
  ['POST', /^\/things\/[^/]+$/, 'CreateThing'],
  ['GET', /^\/things\/[^/]+$/, 'DescribeThing'],
  ['DELETE', /^\/things\/[^/]+$/, 'DeleteThing'],
  ['PATCH', /^\/things\/[^/]+$/, 'UpdateThing'],
  ['GET', /^\/things$/, 'ListThings'],
  ['PUT', /^\/things\/[^/]+\/principals$/, 'AttachThingPrincipal'],
  ['DELETE', /^\/things\/[^/]+\/principals$/, 'DetachThingPrincipal'],
  ['GET', /^\/things\/[^/]+\/principals$/, 'ListThingPrincipals'],
  ['PUT', /^\/target-policies\/[^/]+$/, 'AttachPolicy'],
  ['POST', /^\/target-policies\/[^/]+$/, 'DetachPolicy'],
  ['POST', /^\/attached-policies\/[^/]+$/, 'ListAttachedPolicies'],
  ['GET', /^\/policies\/[^/]+$/, 'GetPolicy'],
  ['POST', /^\/policies\/[^/]+$/, 'CreatePolicy'],
  ['GET', /^\/endpoint$/, 'DescribeEndpoint'],
  ['GET', /^\/principals\/things$/, 'ListPrincipalThings'],
  ['POST', /^\/cacertificate$/, 'RegisterCACertificate'],
];

/**
 * The API a call is: IoT by its REST route, KMS and other JSON protocols by X-Amz-Target's
 * operation; undefined for services the quota mode does not model (DynamoDB on demand, SSM, STS).
 */
export function apiOf(call: {
  readonly service: string;
  readonly method: string;
  readonly path: string;
  readonly target: string;
}): string | undefined {
  if (call.service === 'iot') {
    const path = call.path.split('?')[0] ?? '';
    const route = IOT_ROUTES.find(([method, pattern]) => method === call.method && pattern.test(path));
    return route?.[2] ?? 'other';
  }
  if (call.service === 'kms') return call.target.split('.').at(-1) || undefined;
  return undefined;
}

export interface QuotaSpec {
  /** Multiplies every rate: 0.2 makes the quotas bind before a small machine does. */
  readonly scale: number;
  /** Per API, calls per second at scale 1; replaces the default of that API (others keep theirs). */
  readonly rates?: Readonly<Record<string, number>>;
  /** Bucket size in seconds of the scaled rate (at least one call); default 1. */
  readonly burstSeconds?: number;
}

export interface QuotaCount {
  readonly service: string;
  readonly region: string;
  readonly api: string;
  /** Calls that arrived, throttled ones included. */
  readonly calls: number;
  readonly throttled: number;
  /**
   * Admitted calls whose request body was new for this (region, API): for RegisterCertificate,
   * the distinct certificates registered (registering one again sends the same body).
   */
  readonly distinctBodies: number;
}

export interface QuotaState {
  /** False: no call is throttled (calls are still counted). */
  readonly enabled: boolean;
  readonly scale: number;
  readonly burstSeconds: number;
  /** Effective rates per second (scaled), per API. */
  readonly rates: Readonly<Record<string, number>>;
  /** Since the last POST or DELETE of the quota spec. */
  readonly counts: readonly QuotaCount[];
}

const SPEC_FIELDS = new Set(['scale', 'rates', 'burstSeconds']);

/** Validates a quota spec; throws with a message naming the problem. */
export function parseQuotaSpec(input: unknown): QuotaSpec {
  if (typeof input !== 'object' || input === null) throw new Error('body must be a JSON object');
  const spec = input as Record<string, unknown>;
  for (const field of Object.keys(spec)) {
    if (!SPEC_FIELDS.has(field))
      throw new Error(`${field} is not a known field (scale, rates, burstSeconds)`);
  }
  const positive = (value: unknown) => typeof value === 'number' && Number.isFinite(value) && value > 0;
  if (!positive(spec.scale)) throw new Error('scale must be a positive number');
  if (spec.burstSeconds !== undefined && !positive(spec.burstSeconds)) {
    throw new Error('burstSeconds must be a positive number');
  }
  if (spec.rates !== undefined) {
    if (typeof spec.rates !== 'object' || spec.rates === null || Array.isArray(spec.rates)) {
      throw new Error('rates must be an object of API name → calls per second');
    }
    for (const [api, rate] of Object.entries(spec.rates)) {
      if (!positive(rate)) throw new Error(`rates.${api} must be a positive number`);
    }
  }
  return spec as unknown as QuotaSpec;
}

interface Bucket {
  tokens: number;
  refilledAt: number;
}

/**
 * Token buckets per (region, API) and the counters. `admit` answers whether a call may go on;
 * a bucket starts full, refills continuously at the scaled rate, and holds at most
 * `burstSeconds` of it (never less than one call).
 */
export class QuotaBuckets {
  private spec: QuotaSpec | undefined;
  private readonly buckets = new Map<string, Bucket>();
  private readonly counts = new Map<string, { -readonly [field in keyof QuotaCount]: QuotaCount[field] }>();
  /** Hashes of the admitted bodies per (region, API), for distinctBodies. */
  private readonly bodies = new Map<string, Set<string>>();

  constructor(private readonly clock: () => number = () => performance.now()) {}

  /** Quotas on with `spec` (off with undefined); buckets and counters start over. */
  replace(spec: QuotaSpec | undefined): void {
    this.spec = spec;
    this.buckets.clear();
    this.counts.clear();
    this.bodies.clear();
  }

  private rate(api: string): number | undefined {
    if (!this.spec) return undefined;
    const base = this.spec.rates?.[api] ?? DEFAULT_QUOTA_RATES[api];
    return base === undefined ? undefined : base * this.spec.scale;
  }

  /** Counts the call; false when its API's bucket is empty (the call is to be throttled). */
  admit(service: string, region: string, api: string, body = ''): boolean {
    const key = `${service} ${region} ${api}`;
    const count = this.counts.get(key) ?? { service, region, api, calls: 0, throttled: 0, distinctBodies: 0 };
    this.counts.set(key, count);
    count.calls += 1;
    if (!this.take(key, api)) {
      count.throttled += 1;
      return false;
    }
    const seen = this.bodies.get(key) ?? new Set<string>();
    this.bodies.set(key, seen);
    const digest = createHash('sha256').update(body).digest('base64');
    if (!seen.has(digest)) {
      seen.add(digest);
      count.distinctBodies += 1;
    }
    return true;
  }

  /** Takes a token from the (region, API) bucket; true when there was one (or no rate applies). */
  private take(key: string, api: string): boolean {
    const rate = this.rate(api);
    if (rate === undefined) return true;
    const capacity = Math.max(1, rate * (this.spec?.burstSeconds ?? 1));
    const now = this.clock();
    const bucket = this.buckets.get(key) ?? { tokens: capacity, refilledAt: now };
    bucket.tokens = Math.min(capacity, bucket.tokens + ((now - bucket.refilledAt) / 1000) * rate);
    bucket.refilledAt = now;
    this.buckets.set(key, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  state(): QuotaState {
    const rates: Record<string, number> = {};
    if (this.spec) {
      for (const api of new Set([
        ...Object.keys(DEFAULT_QUOTA_RATES),
        ...Object.keys(this.spec.rates ?? {}),
      ])) {
        rates[api] = this.rate(api) ?? 0;
      }
    }
    return {
      enabled: this.spec !== undefined,
      scale: this.spec?.scale ?? 1,
      burstSeconds: this.spec?.burstSeconds ?? 1,
      rates,
      counts: [...this.counts.values()]
        .map((count) => ({ ...count }))
        .sort((a, b) => a.region.localeCompare(b.region) || a.api.localeCompare(b.api)),
    };
  }
}
