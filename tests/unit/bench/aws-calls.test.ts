import { callKind, callsPerRequest } from '../../bench/aws-calls';

describe("a request's AWS calls by kind, from the proxy's call log", () => {
  it('names DynamoDB calls by operation and other services as one kind', () => {
    expect(callKind('dynamodb us-east-2 POST DynamoDB_20120810.GetItem')).toBe('DynamoDB GetItem');
    expect(callKind('iot ap-northeast-1 DELETE /certificates/0123abcd')).toBe('IoT');
    expect(callKind('kms us-east-2 POST TrentService.Sign')).toBe('KMS');
    expect(callKind('logs us-east-2 POST Logs_20140328.PutLogEvents')).toBe('logs');
  });

  it('prints calls per request, DynamoDB operations first, the usual kinds even at 0', () => {
    const log = [
      'dynamodb us-east-2 POST DynamoDB_20120810.GetItem',
      'dynamodb us-east-2 POST DynamoDB_20120810.UpdateItem',
      'dynamodb us-east-2 POST DynamoDB_20120810.GetItem',
      'dynamodb us-east-2 POST DynamoDB_20120810.UpdateItem',
    ];
    expect(callsPerRequest(log, 2)).toBe(
      'DynamoDB GetItem 1.00, UpdateItem 1.00, IoT 0.00, KMS 0.00 (2.00 in all)',
    );
  });

  it('adds kinds it meets beyond the usual ones, after them', () => {
    const log = [
      'iot eu-west-1 PUT /certificates/abc?newStatus=INACTIVE',
      'dynamodb us-east-2 POST DynamoDB_20120810.PutItem',
    ];
    expect(callsPerRequest(log, 4)).toBe(
      'DynamoDB GetItem 0.00, UpdateItem 0.00, IoT 0.25, KMS 0.00, DynamoDB PutItem 0.25 (0.50 in all)',
    );
  });
});
