/** The reconciler's adapters: the same registry and IoT modules the provisioning function uses. */
import { awsDeviceIot } from '../provisioning/iot';
import { dynamoRegistry } from '../provisioning/registry';
import type { ReconcilerConfig } from './config';
import type { ReconcileDependencies } from './reconcile';

export function reconcilerDependencies(
  config: ReconcilerConfig,
): Pick<
  ReconcileDependencies,
  'registry' | 'iot' | 'regions' | 'graceSeconds' | 'quarantineSeconds' | 'breaker'
> {
  return {
    registry: dynamoRegistry({ region: config.registryRegion, tableName: config.tableName }),
    iot: awsDeviceIot({
      policyName: config.iotPolicyName,
      caCertificatePem: config.caCertificate.pem,
      caCertificateId: config.caCertificate.id,
    }),
    regions: config.regions,
    graceSeconds: config.graceSeconds,
    quarantineSeconds: config.quarantineSeconds,
    breaker: config.breaker,
  };
}
