/**
 * A region's admission budget (admission.ts): AWS IoT's quotas as calls per second per API, and
 * what one provisioning or renewal costs of them. Pure and import-free: the function's config,
 * infra/config.ts (validation, API Gateway's throttle) and the local stack all read it.
 */
/** The AWS IoT control-plane calls a provisioning or renewal makes, undo included. */
export const IOT_APIS = [
  'RegisterCertificate',
  'CreateThing',
  'AttachPolicy',
  'AttachThingPrincipal',
  'UpdateCertificate',
  'DetachPolicy',
  'DetachThingPrincipal',
  'DeleteCertificate',
  'DeleteThing',
] as const;
export type IotApi = (typeof IOT_APIS)[number];

/** Calls per second for each API: one region's budget. */
export type ApiRates = Readonly<Record<IotApi, number>>;

/**
 * AWS's default rates per account and region (AWS IoT developer guide, "AWS IoT Core API
 * throttling limits"; docs/deploy.md). Newer accounts show CreateThing and AttachThingPrincipal
 * at 100/s; the lower figure is the safe default. Raised quotas go in deployment.json.
 */
export const AWS_DEFAULT_RATES: ApiRates = {
  RegisterCertificate: 10,
  CreateThing: 15,
  AttachPolicy: 15,
  AttachThingPrincipal: 15,
  UpdateCertificate: 10,
  DetachPolicy: 15,
  DetachThingPrincipal: 15,
  DeleteCertificate: 10,
  DeleteThing: 15,
};

export const isIotApi = (name: string): name is IotApi => (IOT_APIS as readonly string[]).includes(name);

/**
 * The IoT calls of one provisioning or renewal, per API: the steady-state path (register, thing,
 * two attaches) and what undoing it, or retiring the certificates it replaces, costs. Undo and
 * retirement exclude each other (one runs on failure, the other on success), so the larger counts.
 */
export function callsOfRequest(retiring = 0): Readonly<Record<IotApi, number>> {
  const retired = Math.max(1, retiring);
  return {
    RegisterCertificate: 1,
    CreateThing: 1,
    AttachPolicy: 1,
    AttachThingPrincipal: 1,
    UpdateCertificate: retired,
    DetachPolicy: retired,
    DetachThingPrincipal: retired,
    DeleteCertificate: retired,
    DeleteThing: 1,
  };
}

/**
 * Milliseconds of a region's budget a request takes. Each API has its own quota, so the calls
 * run side by side: the cost is the slowest API's share, not the sum (RegisterCertificate at
 * 10/s bounds a default region at 10 requests/s, undo included, because UpdateCertificate and
 * DeleteCertificate have 10/s quotas of their own).
 */
export function costMs(calls: Readonly<Record<IotApi, number>>, rates: ApiRates): number {
  let slowest = 0;
  for (const api of IOT_APIS) slowest = Math.max(slowest, (calls[api] * 1000) / rates[api]);
  return Math.ceil(slowest);
}

/** Requests per second a region admits at most: its budget for the steady-state request. */
export const requestsPerSecond = (rates: ApiRates) => 1000 / costMs(callsOfRequest(), rates);

/**
 * What is wrong with a budget table, one problem a line, each naming its setting: `ratesName`
 * holds rates per API (overriding AWS's defaults), `regionRatesName` rates per API per region.
 * A rate must be a positive number, an API one of IOT_APIS, a region an enabled one. Shared by
 * the function's config and infra/config.ts, so a bad table fails `make synth` and the init alike.
 */
export function budgetProblems(
  rates: Readonly<Record<string, unknown>>,
  regionRates: Readonly<Record<string, unknown>>,
  enabledRegions: readonly string[],
  names: { readonly rates: string; readonly regionRates: string },
): string[] {
  const problems: string[] = [];
  const checkRates = (table: unknown, where: string) => {
    if (typeof table !== 'object' || table === null || Array.isArray(table)) {
      problems.push(`${where}: expected an object of rates per API`);
      return;
    }
    for (const [api, rate] of Object.entries(table)) {
      if (!isIotApi(api))
        problems.push(`${where}.${api}: unknown API (expected one of ${IOT_APIS.join(', ')})`);
      else if (typeof rate !== 'number' || !Number.isFinite(rate) || rate <= 0)
        problems.push(`${where}.${api}: expected a positive number of calls per second, got ${String(rate)}`);
    }
  };
  checkRates(rates, names.rates);
  for (const [region, table] of Object.entries(regionRates)) {
    if (!enabledRegions.includes(region)) {
      problems.push(`${names.regionRates}.${region}: not an enabled region (${enabledRegions.join(', ')})`);
      continue;
    }
    checkRates(table, `${names.regionRates}.${region}`);
  }
  return problems;
}

/** Each enabled region's budget: AWS's defaults, then `rates`, then the region's own overrides. */
export function budgetsFor(
  enabledRegions: readonly string[],
  rates: Readonly<Partial<Record<IotApi, number>>>,
  regionRates: Readonly<Record<string, Readonly<Partial<Record<IotApi, number>>>>>,
): Record<string, ApiRates> {
  return Object.fromEntries(
    enabledRegions.map((region) => [region, { ...AWS_DEFAULT_RATES, ...rates, ...regionRates[region] }]),
  );
}

/**
 * AWS's default rates times `factor`: what the local stack's quota mode serves when it scales
 * AWS's quotas down so that they bind before the machine does. A storm run gives the function
 * the same budget as ADMISSION_RATES (JSON) so that admission and the proxy agree.
 */
export function scaledRates(factor: number, rates: ApiRates = AWS_DEFAULT_RATES): ApiRates {
  return Object.fromEntries(IOT_APIS.map((api) => [api, rates[api] * factor])) as Record<IotApi, number>;
}
