/**
 * A fake of the ipstack API (the real one cannot be called from tests): same URL shape, same
 * success and error bodies, same access-key check, errors with HTTP 200 as ipstack sends them.
 * Answers come from a JSON fixture file mapping IP → success body, re-read on every request so
 * a test can add an address while the stack runs. A fixture entry that is itself an error body
 * (`{"success":false,...}`) is returned as-is, e.g. to simulate 104 usage_limit_reached.
 */
import { listenLocally } from './listen';
import http from 'node:http';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';

export interface IpstackSuccess {
  ip: string;
  type: 'ipv4' | 'ipv6';
  continent_code: string | null;
  continent_name: string | null;
  country_code: string | null;
  country_name: string | null;
  region_code: string | null;
  region_name: string | null;
  city: string | null;
  zip: string | null;
  latitude: number | null;
  longitude: number | null;
  [field: string]: unknown;
}

export interface IpstackError {
  success: false;
  error: { code: number; type: string; info: string };
}

/** Fixture file content: IP → (part of) a success body, or an error body returned verbatim. */
export type IpstackFixtures = Record<string, Partial<IpstackSuccess> | IpstackError>;

export const IPSTACK_ERRORS = {
  missingAccessKey: {
    code: 101,
    type: 'missing_access_key',
    info: 'You have not supplied an API Access Key. [Required format: access_key=YOUR_ACCESS_KEY]',
  },
  invalidAccessKey: {
    code: 101,
    type: 'invalid_access_key',
    info: 'You have not supplied a valid API Access Key. [Technical Support: support@apilayer.com]',
  },
  usageLimitReached: {
    code: 104,
    type: 'usage_limit_reached',
    info: 'Your monthly API request volume has been reached. Please upgrade your plan.',
  },
  invalidIpAddress: { code: 106, type: 'invalid_ip_address', info: 'The IP Address supplied is invalid.' },
} as const;

/** Documentation addresses (RFC 5737) placed in cities near the locally enabled regions. */
export const SAMPLE_FIXTURES: IpstackFixtures = {
  '203.0.113.10': place('AS', 'Asia', 'JP', 'Japan', '13', 'Tokyo', 'Tokyo', '100-0001', 35.6895, 139.6917),
  '203.0.113.20': place(
    'OC',
    'Oceania',
    'AU',
    'Australia',
    'NSW',
    'New South Wales',
    'Sydney',
    '2000',
    -33.8688,
    151.2093,
  ),
  '203.0.113.30': place(
    'SA',
    'South America',
    'BR',
    'Brazil',
    'SP',
    'São Paulo',
    'São Paulo',
    '01000-000',
    -23.5505,
    -46.6333,
  ),
  '203.0.113.40': place(
    'EU',
    'Europe',
    'DE',
    'Germany',
    'HE',
    'Hesse',
    'Frankfurt am Main',
    '60311',
    50.1109,
    8.6821,
  ),
  '203.0.113.50': place(
    'NA',
    'North America',
    'US',
    'United States',
    'OH',
    'Ohio',
    'Columbus',
    '43215',
    39.9612,
    -82.9988,
  ),
  '203.0.113.60': place(
    'AS',
    'Asia',
    'IN',
    'India',
    'MH',
    'Maharashtra',
    'Mumbai',
    '400001',
    19.076,
    72.8777,
  ),
  // Country known, coordinates not: ipstack answers null latitude/longitude in that case.
  '198.51.100.7': { ...place('EU', 'Europe', 'DE', 'Germany', null, null, null, null, null, null) },
  '198.51.100.104': { success: false, error: { ...IPSTACK_ERRORS.usageLimitReached } },
};

function place(
  continentCode: string,
  continentName: string,
  countryCode: string,
  countryName: string,
  regionCode: string | null,
  regionName: string | null,
  city: string | null,
  zip: string | null,
  latitude: number | null,
  longitude: number | null,
): Partial<IpstackSuccess> {
  return {
    continent_code: continentCode,
    continent_name: continentName,
    country_code: countryCode,
    country_name: countryName,
    region_code: regionCode,
    region_name: regionName,
    city,
    zip,
    latitude,
    longitude,
  };
}

/** Writes the sample fixtures unless the file exists (tests may have added entries). */
/** Writes the sample fixtures unless the file exists; true when it wrote them. */
export function ensureFixtureFile(fixturesPath: string): boolean {
  if (existsSync(fixturesPath)) return false;
  writeFileSync(fixturesPath, JSON.stringify(SAMPLE_FIXTURES, null, 2) + '\n');
  return true;
}

/** Adds or replaces one entry in the fixture file; the fake sees it on the next request. */
export function addIpstackFixture(
  fixturesPath: string,
  ip: string,
  entry: Partial<IpstackSuccess> | IpstackError,
): void {
  const fixtures = readFixtures(fixturesPath);
  fixtures[ip] = entry;
  writeFileSync(fixturesPath, JSON.stringify(fixtures, null, 2) + '\n');
}

function readFixtures(fixturesPath: string): IpstackFixtures {
  if (!existsSync(fixturesPath)) return {};
  return JSON.parse(readFileSync(fixturesPath, 'utf8')) as IpstackFixtures;
}

function isErrorBody(entry: Partial<IpstackSuccess> | IpstackError): entry is IpstackError {
  return (entry as IpstackError).success === false;
}

function lookup(fixturesPath: string, ip: string): IpstackSuccess | IpstackError {
  const entry = readFixtures(fixturesPath)[ip];
  if (entry && isErrorBody(entry)) return entry;
  const unknown: IpstackSuccess = {
    ip,
    type: isIP(ip) === 6 ? 'ipv6' : 'ipv4',
    continent_code: null,
    continent_name: null,
    country_code: null,
    country_name: null,
    region_code: null,
    region_name: null,
    city: null,
    zip: null,
    latitude: null,
    longitude: null,
  };
  return { ...unknown, ...(entry ?? {}), ip, type: unknown.type };
}

/** `fields=ip,latitude,location.capital`: keeps only those (dotted names reach into objects). */
function selectFields(body: IpstackSuccess, fields: string): Record<string, unknown> {
  const selected: Record<string, unknown> = {};
  for (const field of fields
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean)) {
    const [head, ...rest] = field.split('.');
    if (head === undefined || !(head in body)) continue;
    if (rest.length === 0) {
      selected[head] = body[head];
      continue;
    }
    let value: unknown = body[head];
    for (const part of rest)
      value =
        typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[part] : undefined;
    if (value === undefined) continue;
    const nested = (selected[head] ?? {}) as Record<string, unknown>;
    nested[rest.join('.')] = value;
    selected[head] = nested;
  }
  return selected;
}

export interface IpstackFake {
  readonly url: string;
  close(): Promise<void>;
}

export interface IpstackFakeOptions {
  readonly host: '127.0.0.1';
  readonly port: number;
  readonly accessKey: string;
  readonly fixturesPath: string;
  readonly logger?: (line: string) => void;
}

export async function startIpstackFake(options: IpstackFakeOptions): Promise<IpstackFake> {
  const log = options.logger ?? (() => undefined);
  const server = http.createServer((request, response) => {
    const started = Date.now();
    // The 2018 sample asks for `{base}/` + `/{ip}`: a path starting with "//" is still a path to
    // ipstack, not a protocol-relative URL naming another host.
    const url = new URL((request.url ?? '/').replace(/^\/+/, '/'), 'http://ipstack.local');
    const answer = (body: unknown) => {
      response.writeHead(200, { 'content-type': 'application/json; charset=utf-8' });
      response.end(JSON.stringify(body));
      // Never log the access key (it is in the query string).
      log(`${request.method} ${url.pathname} 200 ${Date.now() - started}ms`);
    };
    const accessKey = url.searchParams.get('access_key');
    if (!accessKey) return answer({ success: false, error: IPSTACK_ERRORS.missingAccessKey });
    if (accessKey !== options.accessKey)
      return answer({ success: false, error: IPSTACK_ERRORS.invalidAccessKey });

    const requested = decodeURIComponent(url.pathname.replace(/^\/+|\/+$/g, ''));
    const ip = requested === 'check' ? (request.socket.remoteAddress ?? '') : requested;
    if (isIP(ip) === 0) return answer({ success: false, error: IPSTACK_ERRORS.invalidIpAddress });
    let body: IpstackSuccess | IpstackError;
    try {
      body = lookup(options.fixturesPath, ip);
    } catch (error) {
      log(`fixture file unreadable: ${(error as Error).message}`);
      response.writeHead(500, { 'content-type': 'application/json' });
      response.end(
        JSON.stringify({
          success: false,
          error: { code: 500, type: 'fixture_error', info: 'bad fixture file' },
        }),
      );
      return;
    }
    const fields = url.searchParams.get('fields');
    if (isErrorBody(body) || !fields) return answer(body);
    return answer(selectFields(body, fields));
  });
  return listenLocally(server, options.host, options.port);
}
