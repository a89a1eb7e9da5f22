/**
 * The credentials check every tool that talks to AWS makes first (make plan|deploy|destroy,
 * make rotate-ipstack-key): who am I, in one sentence, or what to do when there is nobody.
 */
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';

/** No usable credentials; the message says how to get some. */
export class MissingCredentialsError extends Error {
  override readonly name = 'MissingCredentialsError';
}

export interface AwsCaller {
  readonly account: string;
  readonly arn: string;
}

export async function awsCaller(region: string, endpoint?: string): Promise<AwsCaller> {
  const sts = new STSClient({ region, ...(endpoint ? { endpoint } : {}) });
  try {
    const identity = await sts.send(new GetCallerIdentityCommand({}));
    return { account: identity.Account ?? '(unknown account)', arn: identity.Arn ?? '(unknown)' };
  } catch (error) {
    throw new MissingCredentialsError(
      `no usable AWS credentials (${(error as Error).name}: ${(error as Error).message}); ` +
        'set AWS_PROFILE or run `aws sso login`, then retry',
    );
  } finally {
    sts.destroy();
  }
}
