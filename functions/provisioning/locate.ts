/**
 * Where is the device? CloudFront's viewer geolocation first, ipstack second, the configured
 * default region last; per-country overrides (data residency) win over distance.
 */
import { distanceToRegionKm, GeoPoint, nearestRegion, RegionSite } from './regions';

export type GeoSource = 'cloudfront' | 'ipstack' | 'default';

/** What CloudFront told us about the viewer; every field may be missing. */
export interface ViewerLocation {
  readonly point?: GeoPoint;
  readonly country?: string;
  /** The device's public IP, from CloudFront-Viewer-Address. */
  readonly ip?: string;
}

export interface Placement {
  readonly region: string;
  /** Where the device was located, when anyone could tell. */
  readonly point?: GeoPoint;
  readonly distanceKm: number;
  readonly geoSource: GeoSource;
  readonly country?: string;
  readonly overridden: boolean;
}

function header(headers: Readonly<Record<string, string | undefined>>, name: string): string | undefined {
  const value = headers[name]?.trim();
  return value ? value : undefined;
}

function coordinate(text: string | undefined, limit: number): number | undefined {
  if (text === undefined || !/^-?\d{1,3}(\.\d+)?$/.test(text)) return undefined;
  const value = Number(text);
  return Math.abs(value) <= limit ? value : undefined;
}

/**
 * `CloudFront-Viewer-Address` is `ip:port`; IPv6 comes unbracketed, so split on the last ':'.
 */
export function ipFromViewerAddress(address: string | undefined): string | undefined {
  if (!address) return undefined;
  const cut = address.lastIndexOf(':');
  const ip = (cut > 0 ? address.slice(0, cut) : address).replace(/^\[|\]$/g, '');
  return /^[0-9a-fA-F:.]{2,45}$/.test(ip) ? ip : undefined;
}

/** Reads the CloudFront-Viewer-* headers (payload 2.0 lower-cases header names). */
export function viewerFromHeaders(headers: Readonly<Record<string, string | undefined>>): ViewerLocation {
  const latitude = coordinate(header(headers, 'cloudfront-viewer-latitude'), 90);
  const longitude = coordinate(header(headers, 'cloudfront-viewer-longitude'), 180);
  const country = header(headers, 'cloudfront-viewer-country')?.toUpperCase();
  return {
    point: latitude !== undefined && longitude !== undefined ? { latitude, longitude } : undefined,
    country: country && /^[A-Z]{2}$/.test(country) ? country : undefined,
    ip: ipFromViewerAddress(header(headers, 'cloudfront-viewer-address')),
  };
}

export interface PlacementRules {
  readonly regions: readonly RegionSite[];
  readonly defaultRegion: string;
  readonly countryRegionOverrides: Readonly<Record<string, string>>;
}

/** Pure choice of region once the device's point/country (if any) are known. */
export function placeDevice(
  found: { point?: GeoPoint; country?: string; geoSource: GeoSource },
  rules: PlacementRules,
): Placement {
  const overrideRegion = found.country ? rules.countryRegionOverrides[found.country] : undefined;
  if (overrideRegion) {
    return {
      region: overrideRegion,
      distanceKm: distanceToRegionKm(found.point, overrideRegion),
      point: found.point,
      geoSource: found.geoSource,
      country: found.country,
      overridden: true,
    };
  }
  if (found.point) {
    const choice = nearestRegion(found.point, rules.regions);
    return {
      ...choice,
      point: found.point,
      geoSource: found.geoSource,
      country: found.country,
      overridden: false,
    };
  }
  return {
    region: rules.defaultRegion,
    distanceKm: 0,
    geoSource: 'default',
    country: found.country,
    overridden: false,
  };
}

/** A geolocation lookup by IP (ipstack); answers undefined when it can't tell. */
export interface IpGeolocator {
  locate(ip: string): Promise<{ point?: GeoPoint; country?: string } | undefined>;
}

/** Never throws: a failed lookup falls back to the default region. */
export async function locateDevice(
  viewer: ViewerLocation,
  rules: PlacementRules,
  geolocator: IpGeolocator | undefined,
): Promise<Placement> {
  if (viewer.point) return placeDevice({ ...viewer, geoSource: 'cloudfront' }, rules);
  if (viewer.country && rules.countryRegionOverrides[viewer.country]) {
    return placeDevice({ country: viewer.country, geoSource: 'cloudfront' }, rules);
  }
  if (geolocator && viewer.ip) {
    const found = await geolocator.locate(viewer.ip);
    if (found?.point)
      return placeDevice({ ...found, country: found.country ?? viewer.country, geoSource: 'ipstack' }, rules);
    if (found?.country) return placeDevice({ country: found.country, geoSource: 'ipstack' }, rules);
  }
  return placeDevice({ country: viewer.country, geoSource: 'default' }, rules);
}
