/**
 * A stand-in handler for testing the sandboxes and kills without the provisioning flow: it
 * passes the checkpoints the request body names, in order, and answers what it saw.
 *
 * Body: {"thingName": "t1", "points": ["claimed", "registered"], "sleepMs": 100, "fail": false}
 * Answer: {"pid", "passed", "remainingMs", "overlapping", "invocations", "environment"}.
 */
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { Checkpoint, checkpoint } from '../../functions/provisioning/checkpoints';

interface CheckpointRequest {
  readonly thingName?: string;
  readonly points?: Checkpoint[];
  readonly sleepMs?: number;
  readonly fail?: boolean;
}

let running = 0;
let mostOverlapping = 0;
let invocations = 0;

export async function handler(
  event: APIGatewayProxyEventV2,
  context: Context,
): Promise<APIGatewayProxyStructuredResultV2> {
  running += 1;
  invocations += 1;
  mostOverlapping = Math.max(mostOverlapping, running);
  try {
    const request = JSON.parse(event.body ?? '{}') as CheckpointRequest;
    const remainingMs = context.getRemainingTimeInMillis();
    const passed: Checkpoint[] = [];
    for (const point of request.points ?? []) {
      checkpoint(point, request.thingName ?? '');
      passed.push(point);
      if (request.sleepMs) await new Promise((resolve) => setTimeout(resolve, request.sleepMs));
    }
    if (request.sleepMs && passed.length === 0)
      await new Promise((resolve) => setTimeout(resolve, request.sleepMs));
    if (request.fail) throw new Error('asked to fail');
    return {
      statusCode: 200,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        pid: process.pid,
        passed,
        remainingMs,
        overlapping: mostOverlapping,
        invocations,
        environment: { SANDBOX_TEST_MARKER: process.env.SANDBOX_TEST_MARKER },
      }),
    };
  } finally {
    running -= 1;
  }
}
