import type { CallRecord } from '../local/aws-proxy';

/** Display names of the services the function calls, as the AWS proxy logs them (signing name). */
const SERVICE_NAMES: Readonly<Record<string, string>> = {
  dynamodb: 'DynamoDB',
  iot: 'IoT',
  kms: 'KMS',
  ssm: 'SSM',
  sts: 'STS',
};

/**
 * What kind of call a proxy log entry (`service region method target-or-path`) is: DynamoDB by
 * operation (the X-Amz-Target's last part), every other service as one kind. A status call's
 * cost is told apart by DynamoDB operation, and IoT's REST paths carry ids that would make each
 * call a kind of its own.
 */
export function callKind(what: CallRecord['what']): string {
  const [service = '', , , target = ''] = what.split(' ');
  const name = SERVICE_NAMES[service] ?? service;
  if (service === 'dynamodb') return `${name} ${target.split('.').at(-1) ?? target}`;
  return name;
}

/** The order kinds are printed in: DynamoDB's operations first, then the other services. */
const KIND_ORDER = ['DynamoDB GetItem', 'DynamoDB UpdateItem', 'IoT', 'KMS'];

/**
 * Calls per request by kind, over `requests` requests, e.g. "DynamoDB GetItem 1.00, UpdateItem
 * 1.00, IoT 0.00 (2.00 in all)". The kinds of KIND_ORDER are always printed, so a 0 shows.
 */
export function callsPerRequest(whats: readonly CallRecord['what'][], requests: number): string {
  const counts = new Map<string, number>(KIND_ORDER.map((kind) => [kind, 0]));
  for (const what of whats) {
    const kind = callKind(what);
    counts.set(kind, (counts.get(kind) ?? 0) + 1);
  }
  const rank = (kind: string) => {
    const at = KIND_ORDER.indexOf(kind);
    return at === -1 ? KIND_ORDER.length : at;
  };
  const kinds = [...counts.keys()].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const per = (count: number) => (requests > 0 ? count / requests : NaN).toFixed(2);
  let previousService = '';
  const parts = kinds.map((kind) => {
    const [service = '', operation] = kind.split(' ');
    const label = operation && service === previousService ? operation : kind;
    previousService = service;
    return `${label} ${per(counts.get(kind) ?? 0)}`;
  });
  return `${parts.join(', ')} (${per(whats.length)} in all)`;
}
