/**
 * Named points in the provisioning flow where the local stack can kill the function, to prove
 * that a function killed at any line leaves nothing a retry or the reconciler can't finish.
 *
 * In AWS nothing installs a hook and `checkpoint` is a no-op. The local stack's function runner
 * (tests/local) installs one that kills its own process when a fault rule names the point.
 */
export const CHECKPOINTS = [
  /** The claim (with the certificate intent) is written; nothing exists in IoT yet. */
  'claimed',
  /** The certificate is registered and the thing exists; nothing is attached. */
  'registered',
  /** Policy and thing are attached to the certificate; the record is not marked. */
  'attached',
  /** The record is marked provisioned; a previous certificate may still be live. */
  'marked',
  /** Previous certificates are retired; the answer has not been sent. */
  'retired',
  /** A failed request is undoing: the certificate is retired, the claim is still held. */
  'undoing',
] as const;

export type Checkpoint = (typeof CHECKPOINTS)[number];

export type CheckpointHook = (point: Checkpoint, thingName: string) => void;

const HOOK = Symbol.for('global-device-provisioning.checkpoint-hook');
type HookHolder = { [HOOK]?: CheckpointHook };

/** Calls the installed hook, if any. */
export function checkpoint(point: Checkpoint, thingName: string): void {
  (globalThis as HookHolder)[HOOK]?.(point, thingName);
}

/** For the local stack's function runner only. */
export function installCheckpointHook(hook: CheckpointHook | undefined): void {
  (globalThis as HookHolder)[HOOK] = hook;
}
