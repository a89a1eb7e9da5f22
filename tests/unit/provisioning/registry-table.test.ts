import { updateExpression } from '../../../functions/provisioning/registry-table';

describe('every write of ours (updateExpression)', () => {
  it('removes the legacy nonce set and a sealed key, before anything it sets', () => {
    expect(updateExpression({ set: ['a = :a'] })).toBe(
      'REMOVE used_nonces, sealed_key, sealed_key_until SET a = :a',
    );
  });

  it('keeps a sealed key only when asked (the mark that writes it, a nonce spent)', () => {
    expect(updateExpression({ set: ['a = :a'], keepSealedKey: true })).toBe('REMOVE used_nonces SET a = :a');
  });

  it('names no attribute twice when the caller removes it too', () => {
    expect(updateExpression({ remove: ['sealed_key', 'used_nonces'] })).toBe(
      'REMOVE sealed_key, used_nonces, sealed_key_until',
    );
  });
});
