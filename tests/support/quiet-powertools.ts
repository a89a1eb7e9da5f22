// Handlers that tests run in-process would print Powertools logs and EMF metrics into the test
// output; the local stack's own handler (another process) still logs to .local/logs/function.log.
process.env.POWERTOOLS_LOG_LEVEL ??= 'SILENT';
process.env.POWERTOOLS_METRICS_DISABLED ??= 'true';
