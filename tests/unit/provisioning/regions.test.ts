import {
  distanceKm,
  enabledRegionSites,
  IOT_REGION_CATALOGUE,
  nearestRegion,
} from '../../../functions/provisioning/regions';
import deployment from '../../../infra/deployment.json';

const enabled = enabledRegionSites([
  'us-east-2',
  'eu-central-1',
  'ap-northeast-1',
  'ap-southeast-2',
  'sa-east-1',
]);

describe('nearest region', () => {
  it.each([
    ['Tokyo', 35.68, 139.69, 'ap-northeast-1'],
    ['Sydney', -33.87, 151.21, 'ap-southeast-2'],
    ['São Paulo', -23.55, -46.63, 'sa-east-1'],
    ['Berlin', 52.52, 13.4, 'eu-central-1'],
    ['Chicago', 41.88, -87.63, 'us-east-2'],
    ['Cape Town goes to São Paulo, the nearest enabled one', -33.92, 18.42, 'sa-east-1'],
  ])('places a device in %s in the nearest enabled region', (_place, latitude, longitude, region) => {
    expect(nearestRegion({ latitude, longitude }, enabled).region).toBe(region);
  });

  it('reports whole kilometres, as the sample did', () => {
    const choice = nearestRegion({ latitude: 48.14, longitude: 11.58 }, enabled); // Munich
    expect(choice).toEqual({ region: 'eu-central-1', distanceKm: 304 });
  });

  it('never picks a region that is not enabled', () => {
    const onlyTwo = enabledRegionSites(['us-east-2', 'eu-central-1']);
    expect(nearestRegion({ latitude: 35.68, longitude: 139.69 }, onlyTwo).region).not.toBe('ap-northeast-1');
  });

  it('handles the antimeridian (Fiji is nearer Sydney than Tokyo)', () => {
    expect(nearestRegion({ latitude: -18.14, longitude: 178.44 }, enabled).region).toBe('ap-southeast-2');
  });

  it('measures London–Frankfurt within 1% of the known 638 km', () => {
    const km = distanceKm({ latitude: 51.51, longitude: -0.13 }, { latitude: 50.11, longitude: 8.68 });
    expect(Math.abs(km - 638) / 638).toBeLessThan(0.01);
  });
});

describe('region catalogue', () => {
  it('rejects unknown regions naming them', () => {
    expect(() => enabledRegionSites(['us-east-2', 'cn-north-1', 'mars-1'])).toThrow(/cn-north-1, mars-1/);
  });

  it('knows every region the deployment enables', () => {
    expect(() => enabledRegionSites(deployment.iotRegions)).not.toThrow();
    expect(deployment.iotRegions).toContain(deployment.defaultRegion);
  });

  it('has one entry per region', () => {
    const names = IOT_REGION_CATALOGUE.map((site) => site.region);
    expect(new Set(names).size).toBe(names.length);
  });
});
