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
# Tests in parallel workers (pytest-xdist), one core each: most of a test is a subprocess that loads
# Python and a tiny model, so two workers on 2 cores beat one (35 minutes for the whole suite on a clean
# clone, 2026-12-07; most of a test's time is Python and torch starting, about 2.5 s a process).
# RUBRIC_ARM_TEST_WORKERS=1 runs them one after another.
cores=$(nproc 2>/dev/null || echo 2)
workers="${RUBRIC_ARM_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}"
if [ "$workers" -ge 2 ]; then
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( cores / workers ))}"
else
  workers=0  # xdist off: the tests run in this process
fi
"$PY" -m pytest -n "$workers" "$@"
