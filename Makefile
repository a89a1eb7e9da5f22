# Global device provisioning — the commands platform teams, security teams and CI use.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export CHECKPOINT_DISABLE := 1
# Local tooling runs on Node 20; the Lambda runs Node 22. The SDK's upgrade notice is noise here.
export AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED := true
TSX := node_modules/.bin/tsx

.PHONY: help install build lint test test-unit test-integration synth plan deploy destroy outputs \
        rotate-ipstack-key rotate-origin-secret init-ca local-up local-down seed local-watch local-publish bench storm demo reconcile admin chaos clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  make \1\t\2/' | expand -t 28

node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

install: node_modules/.package-lock.json ## Install dependencies (npm ci) when the lockfile changed

build: install ## Bundle the Lambdas with esbuild: ESM chunk folders dist/provisioning, dist/reconciler (index.mjs + chunks/)
	$(TSX) functions/build.ts

lint: install ## Type-check, ESLint and Prettier
	node_modules/.bin/tsc -p tsconfig.json
	node_modules/.bin/eslint .
	node_modules/.bin/prettier --check .

synth: build ## Synthesize the Terraform JSON offline (cdktf.out/)
	$(TSX) infra/main.ts

test: install lint build synth ## Everything CI runs: lint, synth, unit, infra, integration and end-to-end tests
	@$(TSX) tests/support/run-jest.ts

test-unit: install ## Only the tests that need no local stack (unit, infra, pure device modules)
	@NO_LOCAL_STACK=1 $(TSX) tests/support/run-jest.ts tests/unit tests/infra tests/device/iot-policy.test.ts tests/device/device-modules.test.ts tests/device/cli.test.ts tests/device/lifecycle-modules.test.ts tests/local/stack-state.test.ts tests/local/moto-python.test.ts

test-integration: install build ## Only the tests that use the local stack (integration, gdp-admin, local stack, device end to end)
	@$(TSX) tests/support/run-jest.ts tests/integration tests/admin tests/local tests/device

local-up: install ## Start the local stack (moto as AWS, local edge, ipstack fake, regional MQTT); writes .local/stack.json
	@$(TSX) tests/local/stack.ts up

local-down: ## Stop everything local-up started
	@$(TSX) tests/local/stack.ts down

seed: ## Add mydevice1..mydevice10 to the local registry as unprovisioned
	@$(TSX) tests/local/stack.ts seed

local-watch: ## Print every MQTT message published in any local region as JSON lines
	@$(TSX) tests/local/watch.ts

local-publish: ## Send a command to a device through the local MQTT endpoints: make local-publish ARGS="--thing mydevice1 --message '{}'" (--help)
	@$(TSX) tests/local/publish.ts $(ARGS)

reconcile: install ## Run the reconciler once: the local stack's if one runs, else AWS (see README)
	$(TSX) functions/reconciler/cli.ts $(ARGS)

admin: install ## The operator tool, gdp-admin: make admin ARGS="--local list --count" (README, "Operating the fleet")
	@$(TSX) functions/admin/cli.ts $(ARGS)

chaos: install ## A fleet provisions and renews under random AWS faults and kills; reconcile; audit; print the figures
	$(TSX) tests/chaos/cli.ts $(ARGS)

bench: build ## Latency and dependent AWS stages beside the 2018 sample's calls (plain, 50 ms per AWS call), package, cold start, RSS; /device-status latency and AWS calls
	@$(TSX) tests/bench/bench.ts $(ARGS)

storm: build ## N devices (default 300) power on in one region under scaled AWS quotas, Lambda-like scale-out, beside a trickle elsewhere; ours and the 2018 sample side by side (ARGS="--devices 100")
	@$(TSX) tests/storm/cli.ts $(ARGS)

demo: install build ## Six virtual devices provision around the world and publish; then one renews, one follows a move, one is told it is revoked (KEEP_RUNNING=1: leave the stack up)
	@$(TSX) device/demo.ts $(if $(KEEP_RUNNING),--keep-running)

# plan, deploy and destroy check terraform and AWS credentials first, then build and synth (infra/ops.ts).
# They refuse a plan that deletes or replaces a device CA, CA key or the registry table unless
# ARGS="--allow-destroy=<address>" names it (docs/deploy.md).
plan: install ## terraform plan to a file, checked for CA / CA key / table deletions (ARGS="--allow-destroy=<address>")
	$(TSX) infra/ops.ts plan $(ARGS)

deploy: install ## Plan, check and apply that plan to AWS (needs AWS credentials and terraform; ARGS="--auto-approve")
	$(TSX) infra/ops.ts deploy $(ARGS)

destroy: install ## Destroy the deployment (ARGS="--allow-destroy='*'" to let the CAs, CA keys and table go)
	$(TSX) infra/ops.ts destroy $(ARGS)

outputs: install ## Print the deployment's outputs (provisioning URL, table, key alias)
	$(TSX) infra/ops.ts outputs

rotate-ipstack-key: install ## Store a new ipstack key, KMS-encrypted; reads it from stdin or the terminal
	$(TSX) infra/rotate-ipstack-key.ts

rotate-origin-secret: install ## Next step of an origin secret rotation (edits deployment.json; then make deploy); ARGS=--help
	$(TSX) infra/rotate-origin-secret.ts $(ARGS)

init-ca: install ## Create the device CA certificate, signed through KMS (after the first deploy); commit the PEM it writes
	$(TSX) infra/init-ca.ts

clean: ## Remove build output
	rm -rf dist cdktf.out coverage
