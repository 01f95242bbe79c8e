#!/usr/bin/env bash
# The GPU check: one line per result, under 8 minutes on one CUDA GPU (see bench/gpu_check.py).
#   bash bench/gpu_check.sh          # on a CUDA machine
#   bash bench/gpu_check.sh --dry    # on CPU (CI): toy sizes, what needs CUDA says SKIP
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=../env.sh
source ./env.sh
export RUBRIC_ARM_NO_PROGRESS=1 TRANSFORMERS_VERBOSITY=error HF_HUB_OFFLINE=1
exec "$PY" bench/gpu_check.py "$@"
