/**
 * A device written for AWS in 2018 must run unchanged against the local stack: it takes the
 * answer's endpointAddress as a host name and connects to it on 8883, verifying the server
 * certificate for that host (tests/device/support/sample_era_device.py does what the sample's
 * AWSIoTPythonSDK client does, with the Python standard library only).
 */
import { spawnSync } from 'node:child_process';
import { createPrivateKey, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addDevice, readStack, type LocalStack } from '../local/stack';
import { openWatch, type WatchSubscription } from '../local/watch';
import { uniqueThingName } from './support/iot-fixtures';

const describeWithStack = process.env.NO_LOCAL_STACK ? describe.skip : describe;

describeWithStack('a sample-era device (endpoint = host, port 8883)', () => {
  let stack: LocalStack;
  let watch: WatchSubscription;
  let workDir: string;

  beforeAll(async () => {
    stack = readStack();
    watch = await openWatch(stack.watchUrl);
    workDir = mkdtempSync(join(tmpdir(), 'sample-era-device-'));
  });

  afterAll(() => {
    watch?.close();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  it('is answered a bare host per region, as AWS answers', () => {
    for (const endpoint of Object.values(stack.mqttEndpoints)) expect(endpoint).toMatch(/^[^:]+$/);
    expect(new Set(Object.values(stack.mqttEndpoints)).size).toBe(stack.regions.length);
  });

  it('provisions, connects to that host on 8883 with the local CA and publishes', async () => {
    const thingName = uniqueThingName('sample');
    await addDevice(stack, thingName);
    const requestFile = join(workDir, 'request.json');
    const fleetKey = createPrivateKey(readFileSync(stack.fleetSigningKey));
    const signature = sign('sha256', Buffer.from(thingName), fleetKey).toString('base64');
    writeFileSync(requestFile, JSON.stringify({ 'thing-name': thingName, 'thing-name-sig': signature }));

    const device = spawnSync(
      process.env.LOCAL_STACK_PYTHON || 'python3',
      [
        join(__dirname, 'support', 'sample_era_device.py'),
        stack.provisioningUrl,
        requestFile,
        stack.caCertificate,
        workDir,
      ],
      { encoding: 'utf8', timeout: 30_000 },
    );

    expect(device.stderr).toBe('');
    expect(device.stdout).toMatch(/^connected to [^:\s]+:8883 in \S+ and published/);
    expect(device.status).toBe(0);
    const topic = `data/${thingName}/misc`;
    const deadline = Date.now() + 5000;
    while (!watch.messages.some((message) => message.topic === topic) && Date.now() < deadline)
      await new Promise((done) => setTimeout(done, 50));
    expect(watch.messages.filter((message) => message.topic === topic)).toHaveLength(1);
  });
});
