/**
 * PLACEHOLDER from the infra-ca branch so `make build` and `make synth` have a reconciler bundle
 * to package. The lead's reconciler replaces this file on merge (take theirs). Until then a
 * deployed reconciler fails every run, which the reconciler-errors alarm reports.
 */
export async function handler(): Promise<never> {
  throw new Error('the reconciler is not implemented yet (placeholder handler)');
}
