/**
 * The running local stack's ALPN listeners (AWS IoT's MQTT on port 443): where stack.json says they
 * are, they take MQTT 5 and 3.1.1 from a client that offers ALPN `x-amzn-mqtt-ca`, as the AWS IoT
 * Device SDK v2 does.
 */
import { readFileSync } from 'node:fs';
import mqtt from 'mqtt';
import { disconnect, parseEndpointAddress, publishTelemetry } from '../../device/mqtt';
import { iotClient, registerDevice, uniqueThingName } from '../device/support/iot-fixtures';
import { MQTT_ALPN_PROTOCOL } from './iot-data-plane';
import { readStack } from './stack';
import { MQTT_ALPN_PORT, MQTT_ALPN_STAND_IN_PORT } from './stack-state';

const stack = readStack();

it('lists an ALPN endpoint per region, on 443 or its stand-in 8443, at the region’s own address', () => {
  expect(Object.keys(stack.mqttAlpnEndpoints ?? {})).toEqual(stack.regions);
  for (const region of stack.regions) {
    const alpn = parseEndpointAddress(stack.mqttAlpnEndpoints?.[region] ?? '');
    expect(alpn.host).toBe(parseEndpointAddress(stack.mqttEndpoints[region] ?? '').host);
    if (alpn.host !== '127.0.0.1') expect([MQTT_ALPN_PORT, MQTT_ALPN_STAND_IN_PORT]).toContain(alpn.port);
  }
});

it.each([5, 4] as const)(
  'takes MQTT (protocol version %i) with ALPN x-amzn-mqtt-ca',
  async (protocolVersion) => {
    const region = stack.homeRegion;
    const iot = iotClient(region, stack.awsEndpoint);
    const device = await registerDevice(iot, uniqueThingName('alpn'), { policyName: stack.iotPolicyName });
    iot.destroy();
    const client = await mqtt.connectAsync({
      protocol: 'mqtts',
      ...parseEndpointAddress(stack.mqttAlpnEndpoints?.[region] ?? ''),
      clientId: device.thingName,
      protocolVersion,
      reconnectPeriod: 0,
      key: device.privateKeyPem,
      cert: device.certificatePem,
      ca: [readFileSync(stack.caCertificate, 'utf8')],
      ALPNProtocols: [MQTT_ALPN_PROTOCOL],
    });
    await publishTelemetry(client, device.thingName, { count: 1, intervalMs: 0 });
    await disconnect(client);
  },
);
