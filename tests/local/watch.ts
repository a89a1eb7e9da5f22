/**
 * `make local-watch`: prints every MQTT message published in any local region, one JSON line
 * {"region","topic","payload"} each, like the AWS console's MQTT test client subscribed to `#`
 * in every region at once. Also the library the demo and the tests observe messages with.
 */
import '../../functions/cli-runtime';
import { request, type ClientRequest } from 'node:http';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import type { WatchedMessage } from './iot-data-plane';

export interface WatchSubscription {
  /** Every message seen so far, in arrival order. */
  readonly messages: readonly WatchedMessage[];
  /** Resolves with the first message (already seen or future) that matches, or rejects on timeout. */
  waitFor(predicate: (message: WatchedMessage) => boolean, timeoutMs: number): Promise<WatchedMessage>;
  /** How many messages match, waiting up to `timeoutMs` for `expected` of them (fewer on timeout). */
  countWithin(
    predicate: (message: WatchedMessage) => boolean,
    expected: number,
    timeoutMs: number,
  ): Promise<number>;
  close(): void;
}

/** Connects to the observer stream; resolves once the server has accepted the subscription. */
export function openWatch(
  watchUrl: string,
  onMessage?: (message: WatchedMessage) => void,
  onEnd?: () => void,
): Promise<WatchSubscription> {
  const messages: WatchedMessage[] = [];
  const waiters = new Set<(message: WatchedMessage) => void>();
  return new Promise((ready, fail) => {
    const outgoing: ClientRequest = request(watchUrl, { method: 'GET' }, (response) => {
      if (response.statusCode !== 200) {
        fail(new Error(`observer answered HTTP ${String(response.statusCode)}`));
        response.resume();
        return;
      }
      let buffered = '';
      response.setEncoding('utf8');
      response.once('end', () => onEnd?.());
      response.on('data', (chunk: string) => {
        buffered += chunk;
        let newline = buffered.indexOf('\n');
        while (newline >= 0) {
          const line = buffered.slice(0, newline).trim();
          buffered = buffered.slice(newline + 1);
          if (line !== '') {
            const message = JSON.parse(line) as WatchedMessage;
            messages.push(message);
            onMessage?.(message);
            for (const waiter of waiters) waiter(message);
          }
          newline = buffered.indexOf('\n');
        }
      });
      ready({
        messages,
        waitFor(predicate, timeoutMs) {
          const seen = messages.find(predicate);
          if (seen) return Promise.resolve(seen);
          return new Promise((found, timedOut) => {
            const waiter = (message: WatchedMessage): void => {
              if (!predicate(message)) return;
              clearTimeout(timer);
              waiters.delete(waiter);
              found(message);
            };
            const timer = setTimeout(() => {
              waiters.delete(waiter);
              timedOut(new Error(`no matching message on the observer within ${timeoutMs} ms`));
            }, timeoutMs);
            waiters.add(waiter);
          });
        },
        async countWithin(predicate, expected, timeoutMs) {
          const count = () => messages.filter(predicate).length;
          const deadline = Date.now() + timeoutMs;
          while (count() < expected && Date.now() < deadline)
            await new Promise((done) => setTimeout(done, 50));
          return count();
        },
        close() {
          outgoing.destroy();
        },
      });
    });
    outgoing.on('error', (error) => {
      if (!outgoing.destroyed || messages.length === 0) fail(error);
    });
    outgoing.end();
  });
}

function readWatchUrl(stackFile: string): string {
  const stack = JSON.parse(readFileSync(stackFile, 'utf8')) as { watchUrl?: unknown };
  if (typeof stack.watchUrl !== 'string') throw new Error(`${stackFile} has no watchUrl`);
  return stack.watchUrl;
}

function positiveNumber(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed <= 0) throw new InvalidArgumentError('must be a positive number');
  return parsed;
}

async function main(argv: readonly string[]): Promise<number> {
  const program = new Command()
    .name('local-watch')
    .description(
      'Print every MQTT message published in any local region as JSON lines {"region","topic","payload"}.',
    )
    .option('--stack <file>', 'the local stack description', '.local/stack.json')
    .option('--url <url>', 'observer URL (default: watchUrl from the stack file)')
    .option('--count <n>', 'exit 0 after this many messages', positiveNumber)
    .option(
      '--timeout <seconds>',
      'exit after this long; status 1 if --count was not reached',
      positiveNumber,
    )
    .addHelpText(
      'after',
      '\nExit status: 0 when stopped or --count reached, 1 on --timeout short of --count or an error.',
    )
    .parse([...argv]);
  const options = program.opts<{ stack: string; url?: string; count?: number; timeout?: number }>();
  const watchUrl = options.url ?? readWatchUrl(resolve(options.stack));
  let seen = 0;
  return new Promise<number>((finish) => {
    let subscription: WatchSubscription | undefined;
    const stop = (status: number): void => {
      subscription?.close();
      finish(status);
    };
    if (options.timeout !== undefined) {
      setTimeout(() => stop(options.count === undefined ? 0 : 1), options.timeout * 1000).unref();
    }
    process.once('SIGINT', () => stop(0));
    openWatch(
      watchUrl,
      (message) => {
        process.stdout.write(JSON.stringify(message) + '\n');
        seen++;
        if (options.count !== undefined && seen >= options.count) stop(0);
      },
      () => {
        process.stderr.write('the observer closed the stream (local stack stopped?)\n');
        stop(1);
      },
    ).then(
      (opened) => {
        subscription = opened;
        process.stderr.write(`watching ${watchUrl} (Ctrl-C to stop)\n`);
      },
      (error: unknown) => {
        process.stderr.write(
          `cannot reach the observer at ${watchUrl}: ${String(error)}; is the local stack up?\n`,
        );
        finish(1);
      },
    );
  });
}

if (require.main === module) {
  main(process.argv).then(
    (status) => process.exit(status),
    (error: unknown) => {
      process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
      process.exit(1);
    },
  );
}
