/**
 * The rules of the WAF web ACL in front of CloudFront, as WAF's own JSON (the web ACL's
 * `rule_json`), so tests read exactly what AWS gets. In priority order:
 *   0. AWS's IP reputation list (addresses AWS threat intelligence saw attacking);
 *   1. only POST on the three device routes: anything else never reaches API Gateway;
 *   2. bodies over waf.maxBodyBytes are refused (a CSR is 1–2 KiB);
 *   3. a per-source-IP rate limit, so one client cannot spend the stage's budget, which every
 *      device in the world shares (docs/deploy.md, "Per-client limits", for the number).
 * Refusals are 403, except the rate limit, which answers 429 like every other "slow down" here
 * (devices back off on it).
 *
 * No cdktf imports: tests/infra/waf.test.ts evaluates it directly.
 */
import { PROVISIONING_PATH, RENEW_PATH, STATUS_PATH } from '../functions/provisioning/wire';
import type { DeploymentConfig } from './config';

export const IP_REPUTATION_RULE_GROUP = 'AWSManagedRulesAmazonIpReputationList';
export const RATE_RULE_NAME = 'per-ip-rate';
export const RATE_RULE_METRIC = 'per-ip-rate';
/** WAF counts a rate-based rule's requests over this window (seconds). */
export const RATE_WINDOW_SECONDS = 300;

const escapeRegex = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** The paths the API serves, anchored: /device-status/x or a query-less variant never match. */
export const DEVICE_ROUTES_PATTERN = `^(${[PROVISIONING_PATH, STATUS_PATH, RENEW_PATH]
  .map(escapeRegex)
  .join('|')})$`;

const visibility = (metricName: string) => ({
  SampledRequestsEnabled: true,
  CloudWatchMetricsEnabled: true,
  MetricName: metricName,
});
const noTransformation = [{ Priority: 0, Type: 'NONE' }];

export function webAclRules(config: DeploymentConfig): Record<string, unknown>[] {
  return [
    {
      Name: 'aws-ip-reputation',
      Priority: 0,
      OverrideAction: { None: {} },
      Statement: {
        ManagedRuleGroupStatement: { VendorName: 'AWS', Name: IP_REPUTATION_RULE_GROUP },
      },
      VisibilityConfig: visibility('aws-ip-reputation'),
    },
    {
      Name: 'device-routes-only',
      Priority: 1,
      Action: { Block: {} },
      // Regex rather than byte matches: the pattern is a plain string in WAF's JSON.
      Statement: {
        NotStatement: {
          Statement: {
            AndStatement: {
              Statements: [
                {
                  RegexMatchStatement: {
                    RegexString: '^POST$',
                    FieldToMatch: { Method: {} },
                    TextTransformations: noTransformation,
                  },
                },
                {
                  RegexMatchStatement: {
                    RegexString: DEVICE_ROUTES_PATTERN,
                    FieldToMatch: { UriPath: {} },
                    TextTransformations: noTransformation,
                  },
                },
              ],
            },
          },
        },
      },
      VisibilityConfig: visibility('device-routes-only'),
    },
    {
      Name: 'body-size',
      Priority: 2,
      Action: { Block: {} },
      Statement: {
        SizeConstraintStatement: {
          // A body longer than WAF inspects counts as a match: refused, never waved through.
          FieldToMatch: { Body: { OversizeHandling: 'MATCH' } },
          ComparisonOperator: 'GT',
          Size: config.waf.maxBodyBytes,
          TextTransformations: noTransformation,
        },
      },
      VisibilityConfig: visibility('body-size'),
    },
    {
      Name: RATE_RULE_NAME,
      Priority: 3,
      Action: { Block: { CustomResponse: { ResponseCode: 429 } } },
      Statement: {
        RateBasedStatement: {
          Limit: config.waf.requestsPerFiveMinutesPerIp,
          EvaluationWindowSec: RATE_WINDOW_SECONDS,
          AggregateKeyType: 'IP',
        },
      },
      VisibilityConfig: visibility(RATE_RULE_METRIC),
    },
  ];
}
