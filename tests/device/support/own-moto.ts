/**
 * A private moto (through the local stack's patched launcher) for tests that exercise the MQTT
 * endpoints alone, without the provisioning service: they create certificates, things and
 * policies themselves through the real SDK.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createLocalCa, type LocalCa } from '../../local/pki';

export interface OwnMoto {
  readonly endpoint: string;
  readonly ca: LocalCa;
  stop(): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

export async function startOwnMoto(endpoints: Record<string, string> = {}): Promise<OwnMoto> {
  const ca = await createLocalCa(mkdtempSync(join(tmpdir(), 'device-test-ca-')));
  const port = await freePort();
  const launcher = resolve(__dirname, '../../local/moto_launcher.py');
  const child: ChildProcess = spawn(
    'python3',
    [
      launcher,
      '--port',
      String(port),
      '--ca-cert',
      ca.certPath,
      '--ca-key',
      ca.keyPath,
      '--endpoints',
      JSON.stringify(endpoints),
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let output = '';
  await new Promise<void>((ready, fail) => {
    const timer = setTimeout(() => fail(new Error(`moto did not start in 30 s:\n${output}`)), 30_000);
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      if (output.includes('MOTO_READY')) {
        clearTimeout(timer);
        ready();
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`moto exited with ${String(code)}:\n${output}`));
    });
  });
  return {
    endpoint: `http://127.0.0.1:${port}`,
    ca,
    stop: () =>
      new Promise<void>((done) => {
        if (child.exitCode !== null) return done();
        child.once('exit', () => done());
        child.kill('SIGTERM');
      }),
  };
}
