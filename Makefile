# Two commands for users: `make demo` and `make test`. Both run the setup first (idempotent:
# about a second when nothing changed). CI runs .ci/run, which is `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
ENV := source scripts/env.sh
# The ROS-free code that mypy --strict checks (the node layer flashocc_ros/ros/ is excluded).
MYPY_TARGETS := flashocc_ros
MYPY_EXCLUDE := ^flashocc_ros/ros/

.PHONY: setup test lint typecheck pytest demo bench clean

setup:
	bash scripts/setup.sh

lint: setup
	$(ENV) && ruff check . && ruff format --check .

typecheck: setup
	$(ENV) && mypy --exclude '$(MYPY_EXCLUDE)' $(MYPY_TARGETS)

pytest: setup
	$(ENV) && python -m pytest test/

test: setup
	$(ENV) && ruff check .
	$(ENV) && ruff format --check .
	$(ENV) && mypy --exclude '$(MYPY_EXCLUDE)' $(MYPY_TARGETS)
	$(ENV) && python -m pytest test/

demo: setup
	bash scripts/demo.sh

# The benchmark suite (docs/benchmarks.md): table on stdout, rows + machine in docs/benchmarks.json.
# Minutes on a 2-core CPU; `python benchmarks/run_all.py --quick` is the 30-second smoke run.
bench: setup
	$(ENV) && python benchmarks/run_all.py --json docs/benchmarks.json

# Build outputs only; the venv stays (rm -rf .venv to start from nothing).
clean:
	rm -rf build install log build_test install_test log_test
