/**
 * Lambda entry point. Configuration is validated and AWS clients are created here, at cold
 * start: a bad setting fails the init with a message naming the variable, not a request later.
 */
import { loadConfig } from './config';
import { awsDependencies, createHandler, ProvisioningHandler } from './http';

export const handler: ProvisioningHandler = createHandler(awsDependencies(loadConfig()));
