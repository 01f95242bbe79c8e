#!/usr/bin/env bash
# The test command: sets up .venv with the test tools on first use, then lint + the test suite.
#   bash tests/run.sh              # everything
#   bash tests/run.sh -m "not slow"  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export RUBRIC_ARM_DEV=1
# shellcheck source=../env.sh
source ./env.sh
"$PY" -m ruff check .
"$PY" -m pytest "$@"
