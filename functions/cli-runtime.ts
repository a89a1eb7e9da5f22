/**
 * What every command-line entry point (gdp-admin, gdp-device, make reconcile, make chaos, make
 * bench, make demo, the local stack) shares about the process it runs in. Import it first, for its
 * side effect; nothing here runs in the Lambda.
 *
 * - Node 20: the tools run on Node ≥ 20.19 (README, "Prerequisites"); the Lambda runs Node 22.
 *   The AWS SDK prints an eight-line "upgrade to Node 22" warning from every client's constructor
 *   on Node < 22. Its own switch turns that off; set here, once, before any client exists, rather
 *   than in the Makefile only (npm run, the linked bins and tsx directly missed it).
 * - A closed pipe (`gdp-admin list --ndjson | head`) ends the tool quietly with 0, as `cat` does,
 *   instead of an EPIPE stack trace: whoever closed it has read all they wanted.
 */
const SDK_NODE_WARNING_SWITCH = 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED';

if (Number(process.versions.node.split('.')[0]) < 22) process.env[SDK_NODE_WARNING_SWITCH] ??= 'true';

for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
}

/** Seconds between progress lines off a terminal: GDP_PROGRESS_SECONDS, default 5. */
export function progressIntervalMs(environment: NodeJS.ProcessEnv = process.env): number {
  const seconds = Number(environment.GDP_PROGRESS_SECONDS ?? 5);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : 5000;
}

export interface ProgressLines {
  /** `by` more items done; prints a line when the interval has passed since the last one. */
  add(by?: number): void;
  readonly done: number;
}

/**
 * Progress for logs, CI and pipes, where a progress bar would be noise: one line every few
 * seconds, `list: 12000 records, 850/s, 60 % of ~20000, ETA 9 s`. Quiet for runs shorter than
 * the interval. `total` is an estimate when known (DynamoDB's item count), else no ETA.
 */
export function progressLines(
  label: string,
  options: {
    readonly total?: number;
    readonly unit?: string;
    readonly everyMs?: number;
    readonly write?: (line: string) => void;
    readonly now?: () => number;
  } = {},
): ProgressLines {
  const now = options.now ?? Date.now;
  const everyMs = options.everyMs ?? progressIntervalMs();
  const write = options.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  const unit = options.unit ?? 'records';
  const started = now();
  let last = started;
  let done = 0;
  return {
    get done() {
      return done;
    },
    add(by = 1) {
      done += by;
      const at = now();
      if (at - last < everyMs) return;
      last = at;
      const rate = done / Math.max(0.001, (at - started) / 1000);
      const total = options.total;
      const estimate =
        total && total > 0 && done < total
          ? `, ${Math.floor((done / total) * 100)} % of ~${total}, ETA ${Math.ceil((total - done) / Math.max(rate, 0.001))} s`
          : '';
      write(`${label}: ${done} ${unit}, ${Math.round(rate)}/s${estimate}`);
    },
  };
}
