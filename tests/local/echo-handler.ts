/**
 * A stand-in provisioning handler for testing the local edge: answers with the payload 2.0
 * event it received. Run the stack with it: `tsx tests/local/stack.ts up --handler tests/local/echo-handler.ts`.
 */
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';

export async function handler(event: APIGatewayProxyEventV2): Promise<APIGatewayProxyStructuredResultV2> {
  return {
    statusCode: 200,
    headers: { 'content-type': 'application/json', 'x-echo': 'yes' },
    body: JSON.stringify({ event, environment: { TABLE_NAME: process.env.TABLE_NAME } }),
  };
}
