/**
 * IOT_ENDPOINTS: each region's AWS IoT data endpoint (iot:Data-ATS), learned by the deployment
 * (Terraform's aws_iot_endpoint, or the local stack) and handed to the function, so that a cold
 * container makes no DescribeEndpoint call: under a storm Lambda starts hundreds of containers,
 * and each would otherwise call it once per region, outside the admission budget.
 *
 * Compact, because Lambda allows 4 KB for all variables together: `region=address` pairs joined
 * by commas, where an address of AWS's form `<prefix>.iot.<region>.amazonaws.com` is written as
 * its prefix alone (14 regions: about 420 bytes instead of 930). Any other address (the local
 * stack's `127.x.y.z`) is written whole; a prefix never contains a dot, an address always does.
 */

/** What follows the account's prefix in a region's AWS IoT endpoint address. */
export const iotEndpointSuffix = (region: string): string => `.iot.${region}.amazonaws.com`;

/** The setting's text for region → address (the address whole, or a prefix already shortened). */
export function formatIotEndpoints(endpoints: Readonly<Record<string, string>>): string {
  return Object.entries(endpoints)
    .map(([region, address]) => {
      const suffix = iotEndpointSuffix(region);
      const short = address.endsWith(suffix) ? address.slice(0, -suffix.length) : address;
      return `${region}=${short}`;
    })
    .join(',');
}

/** Parses the setting into region → address; throws an Error naming the first bad entry. */
export function parseIotEndpoints(text: string): Record<string, string> {
  const endpoints: Record<string, string> = {};
  for (const entry of text
    .split(',')
    .map((part) => part.trim())
    .filter(Boolean)) {
    const match = /^([a-z]{2}(?:-[a-z]+)+-\d)=([A-Za-z0-9.:-]+)$/.exec(entry);
    if (!match) throw new Error(`"${entry}" is not region=address`);
    const [, region, address] = match as unknown as [string, string, string];
    if (endpoints[region]) throw new Error(`${region} is named twice`);
    endpoints[region] = address.includes('.') ? address : `${address}${iotEndpointSuffix(region)}`;
  }
  return endpoints;
}
