/**
 * The local IoT endpoints must look like AWS's to a device (a bare host, port 8883) and must not
 * collide between stacks with different LOCAL_PORT_BASE on one machine.
 */
import { endpointAddress, mqttEndpointsOf, MQTT_PORT, portsFrom } from './stack-state';

const REGIONS = ['us-east-1', 'eu-west-2', 'ap-southeast-1'];

describe('local MQTT endpoint addresses', () => {
  it('answers a bare loopback host per region, on 8883', () => {
    const ports = portsFrom(17400, REGIONS);
    expect(mqttEndpointsOf(ports)).toEqual({
      'us-east-1': '127.67.248.1',
      'eu-west-2': '127.67.248.2',
      'ap-southeast-1': '127.67.248.3',
    });
    expect(Object.values(ports.mqtt)).toEqual([MQTT_PORT, MQTT_PORT, MQTT_PORT]);
  });

  it('gives stacks with different port bases different addresses', () => {
    const addresses = [17400, 18400, 19400, 20400, 17401].flatMap((base) =>
      Object.values(portsFrom(base, REGIONS).mqttHosts),
    );
    expect(new Set(addresses).size).toBe(addresses.length);
    expect(addresses).not.toContain('127.0.0.1');
  });

  it('falls back to 127.0.0.1 with a port per region, answered as host:port', () => {
    const ports = portsFrom(17400, REGIONS, false);
    expect(mqttEndpointsOf(ports)['eu-west-2']).toBe('127.0.0.1:17411');
    expect(endpointAddress('127.0.0.1', MQTT_PORT)).toBe('127.0.0.1');
  });
});
