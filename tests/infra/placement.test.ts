/**
 * docs/deploy.md promises where devices around the world land with the committed
 * infra/deployment.json; every row of its table is checked here against the same placement code
 * the function runs, so the table cannot drift from the configuration.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { placeDevice } from '../../functions/provisioning/locate';
import { enabledRegionSites } from '../../functions/provisioning/regions';
import { loadDeploymentConfig, REPO_ROOT } from '../../infra/config';

const deployment = loadDeploymentConfig();
const rules = {
  regions: enabledRegionSites(deployment.iotRegions),
  defaultRegion: deployment.defaultRegion,
  countryRegionOverrides: deployment.countryRegionOverrides,
};

const ROW = /^\| ([^|]+?) \| (-?[\d.]+), (-?[\d.]+) \| ([a-z0-9-]+) \| (\d+) km \|/;
const rows = readFileSync(join(REPO_ROOT, 'docs', 'deploy.md'), 'utf8')
  .split('\n')
  .map((line) => ROW.exec(line))
  .filter((match): match is RegExpExecArray => match !== null)
  .map(([, city, latitude, longitude, region, distance]) => ({
    city: city ?? '',
    point: { latitude: Number(latitude), longitude: Number(longitude) },
    region,
    distanceKm: Number(distance),
  }));

describe('where devices land with the committed deployment (docs/deploy.md)', () => {
  it('has a table of at least a dozen places', () => {
    expect(rows.length).toBeGreaterThanOrEqual(12);
  });

  it.each(rows)('$city lands in $region, $distanceKm km away', ({ point, region, distanceKm }) => {
    expect(placeDevice({ point, geoSource: 'cloudfront' }, rules)).toMatchObject({ region, distanceKm });
  });
});
