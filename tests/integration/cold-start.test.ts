/**
 * A cold container's first request asks AWS IoT only for what the device needs: the endpoint and
 * the device policy come from the deployment (IOT_ENDPOINTS, IOT_POLICY_MANAGED), so a storm that
 * starts hundreds of containers makes no DescribeEndpoint or GetPolicy call outside the admission
 * budget. A private edge (one fresh sandbox) with the stack's function environment, in front of a
 * private AWS proxy whose call log holds this sandbox's calls only.
 */
import { AwsProxy, getCalls, startAwsProxy } from '../local/aws-proxy';
import { Edge, startEdge } from '../local/edge';
import { addDevice } from '../local/stack';
import { PLACES, post, stack, uniqueThingName, v1Body } from './requests';

const REGION = 'ap-northeast-1';

describe('a cold sandbox', () => {
  let proxy: AwsProxy;
  let edge: Edge;
  beforeAll(async () => {
    proxy = await startAwsProxy({ host: '127.0.0.1', port: 0, target: stack.motoUrl });
    edge = await startEdge({
      host: '127.0.0.1',
      port: 0,
      originVerifySecret: stack.originVerifySecret,
      environment: { ...stack.functionEnvironment, AWS_ENDPOINT_URL: proxy.url },
      region: stack.homeRegion,
      accountId: stack.accountId,
      maxSandboxes: 1,
      warmSpares: 0,
    });
  });
  afterAll(async () => {
    await edge?.close();
    await proxy?.close();
  });

  it('provisions with no DescribeEndpoint and no policy check: only the four calls that make the device', async () => {
    const thingName = uniqueThingName('cold');
    await addDevice(stack, thingName);
    const answer = await post(v1Body(thingName), PLACES.tokyo, edge.provisioningUrl);
    expect(answer).toMatchObject({
      status: 200,
      body: { region: REGION, endpointAddress: stack.mqttEndpoints[REGION] },
    });
    expect(edge.sandboxes?.stats().started).toBe(1);
    const iotCalls = (await getCalls(proxy.faultsUrl))
      .map((call) => call.what)
      .filter((what) => what.startsWith('iot '));
    expect(iotCalls.sort()).toEqual(
      [
        `iot ${REGION} POST /certificate/register`,
        `iot ${REGION} POST /things/${thingName}`,
        `iot ${REGION} PUT /target-policies/${stack.iotPolicyName}`,
        `iot ${REGION} PUT /things/${thingName}/principals`,
      ].sort(),
    );
  });
});
