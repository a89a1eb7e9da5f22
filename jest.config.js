/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/tests'],
  testMatch: ['**/*.test.ts'],
  setupFiles: ['<rootDir>/tests/support/quiet-powertools.ts'],
  transform: { '^.+\\.ts$': 'ts-jest' },
  // Integration tests share one local stack (moto + edge); it is started once here.
  globalSetup: '<rootDir>/tests/local/jest-global-setup.ts',
  globalTeardown: '<rootDir>/tests/local/jest-global-teardown.ts',
  testTimeout: 60000,
};
