import {
  ipFromViewerAddress,
  IpGeolocator,
  locateDevice,
  PlacementRules,
  viewerFromHeaders,
} from '../../../functions/provisioning/locate';
import { enabledRegionSites } from '../../../functions/provisioning/regions';

const rules: PlacementRules = {
  regions: enabledRegionSites(['us-east-2', 'eu-central-1', 'ap-northeast-1', 'ap-southeast-2', 'sa-east-1']),
  defaultRegion: 'us-east-2',
  countryRegionOverrides: { DE: 'eu-central-1', AU: 'ap-southeast-2' },
};

/** Stands in for ipstack, which cannot be reached from here. */
function fakeIpstack(answers: Record<string, { latitude?: number; longitude?: number; country?: string }>) {
  const asked: string[] = [];
  const geolocator: IpGeolocator = {
    async locate(ip) {
      asked.push(ip);
      const found = answers[ip];
      if (!found) return undefined;
      const point =
        found.latitude !== undefined && found.longitude !== undefined
          ? { latitude: found.latitude, longitude: found.longitude }
          : undefined;
      return { point, country: found.country };
    },
  };
  return { geolocator, asked };
}

describe('viewer headers', () => {
  it('reads CloudFront latitude, longitude, country and address', () => {
    expect(
      viewerFromHeaders({
        'cloudfront-viewer-latitude': '42.30680',
        'cloudfront-viewer-longitude': '-83.22600',
        'cloudfront-viewer-country': 'us',
        'cloudfront-viewer-address': '198.51.100.10:46532',
      }),
    ).toEqual({ point: { latitude: 42.3068, longitude: -83.226 }, country: 'US', ip: '198.51.100.10' });
  });

  it('splits an unbracketed IPv6 address on the last colon', () => {
    expect(ipFromViewerAddress('2001:db8:1::7:46532')).toBe('2001:db8:1::7');
  });

  it.each([
    [{ 'cloudfront-viewer-latitude': '91', 'cloudfront-viewer-longitude': '10' }],
    [{ 'cloudfront-viewer-latitude': 'north', 'cloudfront-viewer-longitude': '10' }],
    [{ 'cloudfront-viewer-latitude': '45.1' }],
    [{}],
  ])('treats missing or nonsense coordinates as unknown: %j', (headers) => {
    expect(viewerFromHeaders(headers).point).toBeUndefined();
  });
});

describe('locating a device', () => {
  it('prefers CloudFront coordinates and does not call ipstack', async () => {
    const { geolocator, asked } = fakeIpstack({});
    const placement = await locateDevice(
      { point: { latitude: -33.9, longitude: 151.2 }, ip: '203.0.113.9' },
      rules,
      geolocator,
    );
    expect(placement).toMatchObject({ region: 'ap-southeast-2', geoSource: 'cloudfront' });
    expect(asked).toEqual([]);
  });

  it('falls back to ipstack with the viewer IP', async () => {
    const { geolocator, asked } = fakeIpstack({
      '203.0.113.5': { latitude: -23.5, longitude: -46.6, country: 'BR' },
    });
    const placement = await locateDevice({ ip: '203.0.113.5' }, rules, geolocator);
    expect(placement).toMatchObject({ region: 'sa-east-1', geoSource: 'ipstack', country: 'BR' });
    expect(asked).toEqual(['203.0.113.5']);
  });

  it('uses the default region when nobody can tell', async () => {
    const { geolocator } = fakeIpstack({});
    expect(await locateDevice({ ip: '10.0.0.1' }, rules, geolocator)).toMatchObject({
      region: 'us-east-2',
      geoSource: 'default',
      distanceKm: 0,
    });
    expect(await locateDevice({}, rules, undefined)).toMatchObject({
      region: 'us-east-2',
      geoSource: 'default',
    });
  });

  it('applies a residency override even when another region is nearer', async () => {
    // Aachen is closer to Frankfurt anyway; Sydney-based AU devices too. Use a DE device near Paris' side.
    const placement = await locateDevice(
      { point: { latitude: 49.2, longitude: 6.9 }, country: 'DE' },
      {
        ...rules,
        regions: enabledRegionSites(['us-east-2', 'eu-central-1', 'eu-west-3']),
        countryRegionOverrides: { DE: 'eu-central-1' },
      },
      undefined,
    );
    expect(placement).toMatchObject({ region: 'eu-central-1', overridden: true });
  });

  it('applies the override from the CloudFront country alone, without ipstack', async () => {
    const { geolocator, asked } = fakeIpstack({});
    const placement = await locateDevice({ country: 'DE', ip: '203.0.113.1' }, rules, geolocator);
    expect(placement).toMatchObject({ region: 'eu-central-1', geoSource: 'cloudfront', overridden: true });
    expect(asked).toEqual([]);
  });
});
