/**
 * ipstack adapter. ipstack reports errors with HTTP 200 and `{"success":false,"error":{...}}`,
 * so the body decides, not the status. A lookup is bounded (timeout, one retry on network
 * errors) because it sits on the request path; any failure means "unknown", never an error.
 */
import { IpGeolocator } from './locate';
import { SecretSource } from './secrets';
import { countMetric, logger } from './telemetry';

const TIMEOUT_MS = 1500;
const ATTEMPTS = 2;

interface IpstackAnswer {
  success?: boolean;
  error?: { code?: number; type?: string };
  latitude?: number | null;
  longitude?: number | null;
  country_code?: string | null;
}

export class IpstackError extends Error {
  override readonly name = 'IpstackError';
  constructor(
    message: string,
    readonly code?: number,
  ) {
    super(message);
  }
}

/** ipstack error codes that retrying won't fix (bad key, inactive user, quota, plan, bad IP). */
const PERMANENT_CODES = new Set([101, 102, 104, 105, 106]);

async function lookupOnce(url: string): Promise<IpstackAnswer> {
  const response = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS) });
  if (!response.ok) throw new IpstackError(`ipstack answered HTTP ${response.status}`);
  return (await response.json()) as IpstackAnswer;
}

export function ipstackGeolocator(baseUrl: string, secrets: SecretSource): IpGeolocator {
  return {
    async locate(ip) {
      try {
        const accessKey = await secrets.ipstackKey();
        if (!accessKey) {
          countMetric('IpstackKeyMissing');
          return undefined;
        }
        const url = `${baseUrl}/${encodeURIComponent(ip)}?access_key=${encodeURIComponent(accessKey)}&fields=latitude,longitude,country_code`;
        let answer: IpstackAnswer | undefined;
        for (let attempt = 1; attempt <= ATTEMPTS; attempt += 1) {
          try {
            answer = await lookupOnce(url);
            break;
          } catch (error) {
            if (attempt === ATTEMPTS) throw error;
            await new Promise((resolve) => setTimeout(resolve, 100 * attempt + Math.random() * 100));
          }
        }
        if (answer?.success === false) {
          const code = answer.error?.code;
          throw new IpstackError(`ipstack error ${code ?? '?'} ${answer.error?.type ?? ''}`.trim(), code);
        }
        const { latitude, longitude } = answer ?? {};
        const country =
          typeof answer?.country_code === 'string' ? answer.country_code.toUpperCase() : undefined;
        // A coordinate out of range is an answer we can't use, not a place: fall back.
        const point =
          typeof latitude === 'number' &&
          typeof longitude === 'number' &&
          Math.abs(latitude) <= 90 &&
          Math.abs(longitude) <= 180
            ? { latitude, longitude }
            : undefined;
        return { point, country };
      } catch (error) {
        countMetric('IpstackFailure');
        const code = error instanceof IpstackError ? error.code : undefined;
        logger.warn('ipstack lookup failed; falling back', {
          errorClass: (error as Error).name,
          ipstackCode: code,
          permanent: code !== undefined && PERMANENT_CODES.has(code),
        });
        return undefined;
      }
    },
  };
}
