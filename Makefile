# Shortcuts for the README's commands (run as root on Debian 12).
.PHONY: sample test setup lint

sample:
	scripts/run-sample.sh

test:
	scripts/run-tests.sh $(PYTEST_ARGS)

setup:
	scripts/setup-test-env.sh

lint:
	scripts/lint.sh
