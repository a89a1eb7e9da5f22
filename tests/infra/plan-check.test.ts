/**
 * The plan check make plan/deploy/destroy run on `terraform show -json` of their plan file
 * (infra/plan-check.ts), fed fixture plans of the mistakes that take devices offline: a region
 * removed from iotRegions, a CA certificate and its key replaced, the table destroyed.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkPlan, describeRefusal, parsePlan, PlanUnreadableError } from '../../infra/plan-check';

const fixture = (name: string) => readFileSync(join(__dirname, 'fixtures', 'plans', name), 'utf8');
const REMOVED_CA = 'aws_iot_ca_certificate.device-ca_eu-west-1-5c2d7e0a19b3f4a1_1A2B3C4D';

describe('plan check', () => {
  it('passes a plan that deletes or replaces nothing devices depend on', () => {
    expect(checkPlan(parsePlan(fixture('no-destroy.json')))).toEqual({ refused: [], allowed: [] });
  });

  it('refuses a region removed from iotRegions: its CA registration would be deactivated and deleted', () => {
    const verdict = checkPlan(parsePlan(fixture('region-removed.json')));
    expect(verdict.refused).toEqual([expect.objectContaining({ address: REMOVED_CA, replace: false })]);
    const message = describeRefusal(verdict.refused);
    expect(message).toContain(`${REMOVED_CA} would be deleted`);
    expect(message).toMatch(/INACTIVE and deregisters it in eu-west-1: every device .* stops connecting/);
    expect(message).toContain(`ARGS="--allow-destroy=${REMOVED_CA}"`);
  });

  it('refuses a replaced CA certificate and a deleted CA key and alias, not the ipstack key update', () => {
    const verdict = checkPlan(parsePlan(fixture('ca-replaced.json')));
    expect(
      verdict.refused.map((destruction) => [destruction.address.split('.')[0], destruction.replace]),
    ).toEqual([
      ['aws_iot_ca_certificate', true],
      ['aws_kms_key', false],
      ['aws_kms_alias', false],
    ]);
    expect(describeRefusal(verdict.refused)).toMatch(/replaced \(deleted, then created\)/);
    expect(describeRefusal(verdict.refused)).toMatch(/nothing can be issued under that CA again/);
  });

  it('refuses deleting the registry table but not the other resources of a destroy', () => {
    const verdict = checkPlan(parsePlan(fixture('destroy.json')));
    expect(verdict.refused.map((destruction) => destruction.address)).toEqual([
      'aws_dynamodb_table.registry_table_3A1B2C3D',
    ]);
    expect(describeRefusal(verdict.refused)).toMatch(/every device record/);
  });

  it('lets a resource go only when --allow-destroy names it (exactly, or by a prefix ending in *)', () => {
    const changes = parsePlan(fixture('ca-replaced.json'));
    const one = checkPlan(changes, ['aws_kms_alias.device-ca-key-1a2b3c4d_alias_55667788']);
    expect(one.allowed.map((destruction) => destruction.address)).toEqual([
      'aws_kms_alias.device-ca-key-1a2b3c4d_alias_55667788',
    ]);
    expect(one.refused).toHaveLength(2);
    expect(checkPlan(changes, ['aws_kms_alias.device-ca-key'])).toMatchObject({ allowed: [] });
    expect(checkPlan(changes, ['*']).refused).toEqual([]);
  });

  it('stops on a plan it cannot read: not JSON, not terraform show output, or malformed changes', () => {
    expect(() => parsePlan('')).toThrow(PlanUnreadableError);
    expect(() => parsePlan('Error: Failed to load plan')).toThrow(/not JSON/);
    expect(() => parsePlan(fixture('not-a-plan.json'))).toThrow(/no format_version/);
    expect(() => parsePlan('{"format_version":"1.2","resource_changes":[{"address":"x"}]}')).toThrow(
      /resource_changes\[0\]/,
    );
  });
});
