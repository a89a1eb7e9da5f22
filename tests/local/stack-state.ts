/**
 * Where the local stack keeps its state (.local/) and the shape of the files in it. Shared by
 * the CLI (stack.ts), the long-running server (stack-server.ts) and the tests.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const LOCAL_DIR = path.join(REPO_ROOT, '.local');
export const LOGS_DIR = path.join(LOCAL_DIR, 'logs');
export const CA_DIR = path.join(LOCAL_DIR, 'ca');
export const STACK_FILE = path.join(LOCAL_DIR, 'stack.json');
export const PIDS_FILE = path.join(LOCAL_DIR, 'pids.json');
export const SERVER_OPTIONS_FILE = path.join(LOCAL_DIR, 'server-options.json');
export const SECRETS_FILE = path.join(LOCAL_DIR, 'secrets.json');
export const FLEET_SIGNING_KEY_FILE = path.join(LOCAL_DIR, 'fleet-signing-key.pem');
export const FLEET_PUBLIC_KEY_FILE = path.join(LOCAL_DIR, 'fleet-public-key.pem');
export const IPSTACK_FIXTURES_FILE = path.join(LOCAL_DIR, 'ipstack-fixtures.json');
/** Progress of the stack server; `up` echoes it. */
export const STACK_LOG = path.join(LOGS_DIR, 'stack.log');
/** stdout/stderr of the stack server: the function's own (Powertools) logs land here. */
export const FUNCTION_LOG = path.join(LOGS_DIR, 'function.log');

export const DEFAULT_PORT_BASE = 17400;
/** AWS IoT's MQTT-over-TLS port; DescribeEndpoint answers a bare host and devices assume it. */
export const MQTT_PORT = 8883;
/** AWS IoT's MQTT port for clients that send ALPN `x-amzn-mqtt-ca` (networks that only open 443). */
export const MQTT_ALPN_PORT = 443;
/** Where the 443 listener goes instead when this process may not bind 443 (not root). */
export const MQTT_ALPN_STAND_IN_PORT = 8443;

export interface LocalPorts {
  readonly edge: number;
  readonly awsProxy: number;
  readonly moto: number;
  readonly ipstack: number;
  readonly watch: number;
  /** region → MQTT broker port: 8883, or base + 10 + i where per-region addresses are unavailable */
  readonly mqtt: Record<string, number>;
  /** region → the loopback address its MQTT broker listens on */
  readonly mqttHosts: Record<string, string>;
  /**
   * region → port of the MQTT-over-TLS listener with ALPN `x-amzn-mqtt-ca`, on the region's address:
   * 443 (8443 when 443 can't be bound), or base + 30 + i where per-region addresses are unavailable.
   * Absent in a stack started before it existed.
   */
  readonly mqttAlpn?: Record<string, number>;
}

/**
 * The loopback address of a region's MQTT endpoint, 127.<high byte>.<low byte>.<region index + 1>
 * of the port base: every region of every stack (one per LOCAL_PORT_BASE) gets its own address,
 * so they can all listen on 8883 at once (Linux answers for all of 127.0.0.0/8 on `lo`).
 */
export function mqttLoopbackAddress(base: number, regionIndex: number): string {
  if (!Number.isInteger(base) || base < 1 || base > 0xffff) throw new Error(`bad port base ${base}`);
  if (regionIndex < 0 || regionIndex > 253) throw new Error(`too many regions (${regionIndex + 1})`);
  return `127.${base >> 8}.${base & 0xff}.${regionIndex + 1}`;
}

/**
 * Ports from a base: edge +0, AWS proxy +1, moto +2, ipstack +3, watch +4 on 127.0.0.1; MQTT on
 * 8883 at one loopback address per region, or (`perRegionAddresses: false`, for systems that only
 * answer on 127.0.0.1) at 127.0.0.1, base + 10 + i; MQTT with ALPN on 443 at the same addresses, or
 * at 127.0.0.1, base + 30 + i.
 */
export function portsFrom(base: number, regions: readonly string[], perRegionAddresses = true): LocalPorts {
  return {
    edge: base,
    awsProxy: base + 1,
    moto: base + 2,
    ipstack: base + 3,
    watch: base + 4,
    mqtt: Object.fromEntries(
      regions.map((region, index) => [region, perRegionAddresses ? MQTT_PORT : base + 10 + index]),
    ),
    mqttHosts: Object.fromEntries(
      regions.map((region, index) => [
        region,
        perRegionAddresses ? mqttLoopbackAddress(base, index) : '127.0.0.1',
      ]),
    ),
    mqttAlpn: Object.fromEntries(
      regions.map((region, index) => [region, perRegionAddresses ? MQTT_ALPN_PORT : base + 30 + index]),
    ),
  };
}

/** What DescribeEndpoint answers for a host and port: the bare host on 8883, as AWS answers. */
export function endpointAddress(host: string, port: number): string {
  return port === MQTT_PORT ? host : `${host}:${port}`;
}

/** region → endpoint address (bare host, or host:port in the 127.0.0.1 fallback). */
export function mqttEndpointsOf(ports: LocalPorts): Record<string, string> {
  return Object.fromEntries(
    Object.entries(ports.mqtt).map(([region, port]) => [
      region,
      endpointAddress(ports.mqttHosts[region] ?? '127.0.0.1', port),
    ]),
  );
}

/** What `up` hands the stack server. */
export interface StackServerOptions {
  readonly ports: LocalPorts;
  readonly handlerModule: string;
  readonly originVerifySecret: string;
  readonly ipstackAccessKey: string;
  readonly fixturesPath: string;
  readonly caCertPath: string;
  readonly caKeyPath: string;
  readonly fleetSigningKeyPath: string;
  readonly fleetPublicKeyPath: string;
  readonly pythonCommand: string;
  /**
   * When set, the stack stops by itself once this process is gone (jest, bench, demo), so a
   * killed run never leaves servers behind. `make local-up` leaves it unset: that stack is meant
   * to outlive the command.
   */
  readonly ownerPid?: number;
}

/** .local/stack.json: everything a test or a person needs to talk to the running stack. */
export interface LocalStack {
  /** POST here, as a device does (the local edge: CloudFront + API Gateway stand-in). */
  readonly provisioningUrl: string;
  /** POST here for a provisioned device's status (docs/protocol.md). */
  readonly statusUrl: string;
  /** POST here to renew a provisioned device's certificate (docs/protocol.md). */
  readonly renewUrl: string;
  /** AWS endpoint for clients (the fault-injecting proxy in front of moto). */
  readonly awsEndpoint: string;
  /** moto itself, bypassing fault injection. */
  readonly motoUrl: string;
  readonly faultsUrl: string;
  readonly homeRegion: string;
  readonly tableName: string;
  readonly regions: readonly string[];
  readonly defaultRegion: string;
  readonly iotPolicyName: string;
  readonly fleetSigningKey: string;
  readonly fleetPublicKey: string;
  readonly ipstackUrl: string;
  readonly ipstackFixtures: string;
  readonly ipstackKeyParameter: string;
  /** The fake's access key in plain text (the function only sees the KMS ciphertext). */
  readonly ipstackAccessKey: string;
  readonly kmsKeyId: string;
  readonly originVerifySecret: string;
  readonly caCertificate: string;
  /** The device CA's certificate (PEM path): its key is the KMS key deviceCaKmsKeyId. */
  readonly deviceCaCertificate: string;
  /** ARN of the device CA's KMS key (ECC_NIST_P256, SIGN_VERIFY); the function's CA_KMS_KEY_ID. */
  readonly deviceCaKmsKeyId: string;
  /** SHA-256 of the device CA certificate's DER: its caCertificateId in every region. */
  readonly deviceCaCertificateId: string;
  /** region → its MQTT endpoint, what DescribeEndpoint(iot:Data-ATS) answers: a bare host (port 8883). */
  readonly mqttEndpoints: Record<string, string>;
  /**
   * region → "host:port" of its MQTT listener for ALPN `x-amzn-mqtt-ca` (AWS IoT's port 443), where
   * the stack actually bound it: 443, or the stand-in 8443 when 443 could not be bound.
   */
  readonly mqttAlpnEndpoints?: Record<string, string>;
  /** false when tests/local/iot-data-plane.ts is missing or its brokers failed to start. */
  readonly mqttRunning: boolean;
  readonly watchUrl: string;
  readonly handlerModule: string;
  /** The exact environment the edge gave the handler. */
  readonly functionEnvironment: Record<string, string>;
  readonly logs: string;
  readonly ports: LocalPorts;
  readonly accountId: string;
  readonly pids: { readonly stackServer: number; readonly moto: number };
  readonly startedAt: string;
}

export interface PidsFile {
  readonly stackServer: number;
  readonly processGroup: number;
}

/** A failure to start or reach the local stack whose message says everything (no stack trace needed). */
export class LocalStackError extends Error {
  override readonly name: string = 'LocalStackError';
}

export function readJson<T>(file: string): T | undefined {
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, 'utf8')) as T;
}

export function writeJsonAtomic(file: string, value: unknown, mode = 0o644): void {
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, JSON.stringify(value, null, 2) + '\n', { mode });
  renameSync(temporary, file);
}

/** The running stack's description; throws when the stack is not up. */
export function readStack(): LocalStack {
  const stack = readJson<LocalStack>(STACK_FILE);
  if (!stack)
    throw new LocalStackError(`local stack not running (${STACK_FILE} missing): run \`make local-up\``);
  return stack;
}

/** Points the SDK clients this process makes at the stack's AWS endpoint (the fault proxy), with its credentials. */
export function useLocalStack(stack: LocalStack): void {
  const { AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY } = stack.functionEnvironment;
  Object.assign(process.env, { AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY });
}
