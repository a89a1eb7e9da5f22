/**
 * What the device tests share when they run gdp-device: an output that keeps its lines, and the
 * credentials a run stored.
 */
import type { DeviceOutput, DeviceSettings } from '../../../device/cli';
import { loadCredentials, type DeviceCredentials } from '../../../device/store';

export interface Captured extends DeviceOutput {
  readonly lines: string[];
  readonly errors: string[];
  /** Every line and error, in that order, one per line. */
  text(): string;
}

export function capture(): Captured {
  const lines: string[] = [];
  const errors: string[] = [];
  return {
    lines,
    errors,
    line: (text) => lines.push(text),
    error: (text) => errors.push(text),
    text: () => [...lines, ...errors].join('\n'),
  };
}

/** The credentials a run stored in the settings' data directory; throws when there are none. */
export async function stored(settings: Pick<DeviceSettings, 'dataDir'>): Promise<DeviceCredentials> {
  const credentials = await loadCredentials(settings.dataDir);
  if (!credentials) throw new Error(`nothing stored in ${settings.dataDir}`);
  return credentials;
}
