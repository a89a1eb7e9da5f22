/**
 * A certificate signing that the request's deadline aborts is a 503 the device retries, not a
 * 500: under `make storm` signings queued behind key generation ran into the deadline and
 * answered 500. Nothing listens on the endpoint: an aborted call never leaves the process.
 */
import { KMSClient } from '@aws-sdk/client-kms';
import { kmsSigner } from '../../../functions/provisioning/kms';
import { ProvisioningError } from '../../../functions/provisioning/errors';

it('answers a signing aborted by the deadline as unavailable (503)', async () => {
  const kms = new KMSClient({
    region: 'us-east-2',
    endpoint: 'http://127.0.0.1:9',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });
  const signing = kmsSigner(kms, 'alias/device-ca').sign(new Uint8Array([1]), AbortSignal.abort());
  await expect(signing).rejects.toBeInstanceOf(ProvisioningError);
  await expect(signing).rejects.toMatchObject({ kind: 'unavailable' });
});
