/**
 * The last lines of `make test`: one summary of THIS run, computed by jest when the run completes
 * (it replaces jest's own summary reporter, so the totals are printed once), with the names of the
 * failed tests. It also leaves a marker (JEST_SUMMARY_MARKER) so tests/support/run-jest.ts can tell
 * a run that ran tests from one that stopped before any (e.g. the local stack did not start).
 */
const { writeFileSync } = require('node:fs');

const MAX_LISTED = 20;

class SummaryReporter {
  onRunComplete(_contexts, results) {
    const skipped = results.numPendingTests + results.numTodoTests;
    const seconds = ((Date.now() - results.startTime) / 1000).toFixed(0);
    const counts = [`${results.numPassedTests} passed`, `${results.numFailedTests} failed`];
    if (skipped > 0) counts.push(`${skipped} skipped`);
    const brokenFiles = results.testResults.filter((file) => file.testExecError);
    if (brokenFiles.length > 0) counts.push(`${brokenFiles.length} test file(s) could not run`);
    const failed = [];
    for (const file of results.testResults) {
      const where = file.testFilePath.replace(`${process.cwd()}/`, '');
      if (file.testExecError) failed.push(`${where}: ${file.testExecError.message.split('\n')[0]}`);
      for (const test of file.testResults)
        if (test.status === 'failed') failed.push(`${where} › ${test.fullName}`);
    }
    const lines = [''];
    if (results.numTotalTests === 0 && brokenFiles.length === 0) lines.push('no tests ran');
    else lines.push(`${counts.join(', ')} (${results.numTotalTestSuites} test files, ${seconds} s)`);
    for (const name of failed.slice(0, MAX_LISTED)) lines.push(`  FAILED ${name}`);
    if (failed.length > MAX_LISTED) lines.push(`  … and ${failed.length - MAX_LISTED} more`);
    process.stderr.write(`${lines.join('\n')}\n`);
    if (process.env.JEST_SUMMARY_MARKER) writeFileSync(process.env.JEST_SUMMARY_MARKER, 'done');
  }
}

module.exports = SummaryReporter;
