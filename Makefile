# Two commands for users: `make demo` and `make test`. Both run the setup first (idempotent:
# about a second when nothing changed). PYTHON=python3.12 picks the interpreter (3.11 or 3.12).
# CI runs .ci/run: `make test`, then `make workspace` (the apt ROS 2 user's colcon workspace on
# Python 3.12 with numpy 1.26, see .ci/workspace).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
ENV := source scripts/env.sh
# The ROS-free code that mypy --strict checks (the node layer flashocc_ros/ros/ is excluded).
MYPY_TARGETS := flashocc_ros
MYPY_EXCLUDE := ^flashocc_ros/ros/

.PHONY: setup test lint typecheck pytest demo bench workspace clean

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

# The workspace install of an apt ROS 2 Jazzy user, as CI checks it (a few minutes; .ci-cache/).
workspace:
	bash .ci/workspace

# Build outputs only; the venv and .ci-cache/ stay (rm -rf .venv .ci-cache to start from nothing).
clean:
	rm -rf build install log build_test install_test log_test
