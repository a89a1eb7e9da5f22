/**
 * Audits the local account the way the crash-safety promise is stated: each device has exactly
 * one ACTIVE certificate of our CA, attached to its thing in its region, and the record points at
 * it; nothing else issued to it is live. Reads moto directly (no fault proxy), through the SDK.
 */
import { X509Certificate } from 'node:crypto';
import {
  Certificate,
  DescribeCertificateCommand,
  IoTClient,
  ListCertificatesByCACommand,
  ListThingPrincipalsCommand,
} from '@aws-sdk/client-iot';
import { DynamoDBClient, GetItemCommand } from '@aws-sdk/client-dynamodb';
import { sha256Hex } from '../../functions/provisioning/certificate-authority';
import { readStack } from '../local/stack';

const stack = readStack();
const credentials = { accessKeyId: 'audit', secretAccessKey: 'audit' };
const iot = (region: string) => new IoTClient({ region, endpoint: stack.motoUrl, credentials });
const dynamodb = new DynamoDBClient({ region: stack.homeRegion, endpoint: stack.motoUrl, credentials });

export interface DeviceAudit {
  readonly thingName: string;
  readonly provisioned: boolean;
  readonly claimed: boolean;
  /** ACTIVE certificates of our CA in the region whose subject is this thing. */
  readonly liveCertificates: number;
  /** Principals attached to the thing. */
  readonly principals: number;
  readonly problems: readonly string[];
}

export interface CertificateOfOurs {
  readonly certificateId: string;
  readonly status: string;
  readonly commonName: string;
}

/** Every certificate our CA issued in a region, with its subject's CN. */
export async function certificatesOfOurCa(region: string): Promise<CertificateOfOurs[]> {
  const listed: Certificate[] = [];
  let marker: string | undefined;
  do {
    const page = await iot(region).send(
      new ListCertificatesByCACommand({
        caCertificateId: stack.deviceCaCertificateId,
        pageSize: 250,
        marker,
      }),
    );
    listed.push(...(page.certificates ?? []));
    marker = page.nextMarker;
  } while (marker);
  return Promise.all(
    listed.map(async (certificate) => {
      const described = await iot(region).send(
        new DescribeCertificateCommand({ certificateId: certificate.certificateId }),
      );
      const pem = described.certificateDescription?.certificatePem ?? '';
      const subject = pem ? new X509Certificate(pem).subject : '';
      return {
        certificateId: certificate.certificateId ?? '',
        status: certificate.status ?? '',
        commonName: /(?:^|\n)CN=([^\n]*)/.exec(subject)?.[1] ?? '',
      };
    }),
  );
}

export async function auditDevice(
  thingName: string,
  region: string,
  answeredCertificatePem?: string,
  ours?: readonly CertificateOfOurs[],
): Promise<DeviceAudit> {
  const problems: string[] = [];
  const record =
    (
      await dynamodb.send(
        new GetItemCommand({
          TableName: stack.tableName,
          Key: { thing_name: { S: thingName } },
          ConsistentRead: true,
        }),
      )
    ).Item ?? {};
  const provisioned = record.prov_status?.S === 'provisioned';
  const recorded = record.certificate_id?.S;
  const listed = ours ?? (await certificatesOfOurCa(region));
  const live = listed.filter(
    (certificate) => certificate.commonName === thingName && certificate.status === 'ACTIVE',
  );
  // The reconciler's quarantine keeps an orphan attached, INACTIVE: it can't connect, so it is
  // not counted as the thing's principal.
  const quarantined = new Set(
    listed
      .filter((certificate) => certificate.status === 'INACTIVE' && certificate.certificateId !== recorded)
      .map((certificate) => certificate.certificateId),
  );
  let principals: string[] = [];
  try {
    principals = (
      (await iot(region).send(new ListThingPrincipalsCommand({ thingName }))).principals ?? []
    ).filter((arn) => !quarantined.has(arn.slice(arn.lastIndexOf('/') + 1)));
  } catch (error) {
    if ((error as Error).name !== 'ResourceNotFoundException') throw error;
  }
  if (provisioned) {
    if (record.aws_region?.S !== region) problems.push(`record says region ${record.aws_region?.S}`);
    if (!recorded) problems.push('provisioned record has no certificate_id');
    else if (!live.some((certificate) => certificate.certificateId === recorded)) {
      problems.push(`record points at ${recorded}, which is not a live certificate of ours`);
    }
    if (principals.length !== 1 || !principals[0]?.endsWith(`/${recorded}`)) {
      problems.push(
        `thing principals ${JSON.stringify(principals)} are not exactly the recorded certificate`,
      );
    }
    if (answeredCertificatePem) {
      const answered = sha256Hex(new X509Certificate(answeredCertificatePem).raw);
      if (answered !== recorded)
        problems.push(`the device was answered ${answered}, the record holds ${recorded}`);
    }
  }
  if (live.length > (provisioned ? 1 : 0)) {
    problems.push(`${live.length} live certificates of ours for ${thingName}`);
  }
  return {
    thingName,
    provisioned,
    claimed: record.claim_id !== undefined,
    liveCertificates: live.length,
    principals: principals.length,
    problems,
  };
}
