/**
 * The catalogue of AWS IoT Core regions this product knows how to place devices in, and the
 * nearest-region choice. The deployment (infra/deployment.json) enables a subset; the same
 * subset is handed to the function (IOT_REGIONS) and to the local stack, so the function can
 * never choose a region that was not deployed.
 *
 * Coordinates are the approximate city of each region (docs/facts.md); the 2018 sample put
 * us-east-1 in Texas, which sent Atlantic-coast devices the wrong way.
 */
export interface RegionSite {
  readonly region: string;
  readonly city: string;
  readonly latitude: number;
  readonly longitude: number;
  /** Opt-in regions stay disabled until the account enables them. */
  readonly optIn: boolean;
}

export const IOT_REGION_CATALOGUE: readonly RegionSite[] = [
  { region: 'us-east-1', city: 'Ashburn', latitude: 39.04, longitude: -77.49, optIn: false },
  { region: 'us-east-2', city: 'Columbus', latitude: 39.96, longitude: -83.0, optIn: false },
  { region: 'us-west-1', city: 'San Jose', latitude: 37.35, longitude: -121.96, optIn: false },
  { region: 'us-west-2', city: 'Boardman', latitude: 45.84, longitude: -119.7, optIn: false },
  { region: 'ca-central-1', city: 'Montréal', latitude: 45.5, longitude: -73.57, optIn: false },
  { region: 'sa-east-1', city: 'São Paulo', latitude: -23.55, longitude: -46.63, optIn: false },
  { region: 'eu-west-1', city: 'Dublin', latitude: 53.35, longitude: -6.26, optIn: false },
  { region: 'eu-west-2', city: 'London', latitude: 51.51, longitude: -0.13, optIn: false },
  { region: 'eu-west-3', city: 'Paris', latitude: 48.86, longitude: 2.35, optIn: false },
  { region: 'eu-central-1', city: 'Frankfurt', latitude: 50.11, longitude: 8.68, optIn: false },
  { region: 'eu-north-1', city: 'Stockholm', latitude: 59.33, longitude: 18.07, optIn: false },
  { region: 'ap-south-1', city: 'Mumbai', latitude: 19.08, longitude: 72.88, optIn: false },
  { region: 'ap-southeast-1', city: 'Singapore', latitude: 1.35, longitude: 103.82, optIn: false },
  { region: 'ap-southeast-2', city: 'Sydney', latitude: -33.87, longitude: 151.21, optIn: false },
  { region: 'ap-northeast-1', city: 'Tokyo', latitude: 35.68, longitude: 139.69, optIn: false },
  { region: 'ap-northeast-2', city: 'Seoul', latitude: 37.57, longitude: 126.98, optIn: false },
  { region: 'me-central-1', city: 'UAE', latitude: 25.2, longitude: 55.3, optIn: true },
  { region: 'me-south-1', city: 'Bahrain', latitude: 26.23, longitude: 50.59, optIn: true },
  { region: 'ap-east-1', city: 'Hong Kong', latitude: 22.32, longitude: 114.17, optIn: true },
  { region: 'eu-south-2', city: 'Zaragoza', latitude: 41.65, longitude: -0.88, optIn: true },
];

const EARTH_RADIUS_KM = 6371.0088;

export interface GeoPoint {
  readonly latitude: number;
  readonly longitude: number;
}

/** Great-circle distance in km (haversine; within 0.5% of an ellipsoid model, see docs/facts.md). */
export function distanceKm(a: GeoPoint, b: GeoPoint): number {
  const rad = Math.PI / 180;
  const dLat = (b.latitude - a.latitude) * rad;
  const dLon = (b.longitude - a.longitude) * rad;
  const h =
    Math.sin(dLat / 2) ** 2 +
    Math.cos(a.latitude * rad) * Math.cos(b.latitude * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(h)));
}

export function findRegionSite(region: string): RegionSite | undefined {
  return IOT_REGION_CATALOGUE.find((site) => site.region === region);
}

/** Whole kilometres from the point to the region's city; 0 when the point is unknown. */
export function distanceToRegionKm(point: GeoPoint | undefined, region: string): number {
  const site = findRegionSite(region);
  return point && site ? Math.round(distanceKm(point, site)) : 0;
}

/**
 * Resolves region names to catalogue entries; throws naming every unknown region, so a bad
 * deployment list fails synth or cold start, not a request.
 */
export function enabledRegionSites(regions: readonly string[]): RegionSite[] {
  const unknown = regions.filter((region) => !findRegionSite(region));
  if (unknown.length > 0) {
    const known = IOT_REGION_CATALOGUE.map((site) => site.region).join(', ');
    throw new Error(`unknown AWS IoT region(s): ${unknown.join(', ')} (known: ${known})`);
  }
  return regions.map((region) => findRegionSite(region) as RegionSite);
}

export interface RegionChoice {
  readonly region: string;
  /** Whole kilometres from the device to the region's city, as the sample reported it. */
  readonly distanceKm: number;
}

/** The enabled region nearest to the point; ties go to the earlier entry of the enabled list. */
export function nearestRegion(point: GeoPoint, enabled: readonly RegionSite[]): RegionChoice {
  let best: RegionChoice | undefined;
  for (const site of enabled) {
    const km = distanceKm(point, site);
    if (!best || km < best.distanceKm) best = { region: site.region, distanceKm: km };
  }
  if (!best) throw new Error('no enabled region to choose from');
  return { region: best.region, distanceKm: Math.round(best.distanceKm) };
}
