"""The GPU check script runs on CPU in its dry mode, so that it cannot rot between GPU sessions."""

import subprocess

import pytest
import torch

from conftest import ROOT


def test_gpu_check_dry_run_on_cpu():
    p = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry"], cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
    lines = [x for x in p.stdout.splitlines() if x.split(" ", 1)[0] in ("PASS", "FAIL", "SKIP")]
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    names = [x.split(" ", 2)[1].rstrip(":") for x in lines]
    assert names == ["tests", "4bit-lora", "attention", "bf16", "memory", "grpo-vs-trl", "decode"]
    assert not any(x.startswith("FAIL") for x in lines)
    assert "SKIP tests" in p.stdout  # what needs CUDA (or the suite itself) says so
    assert "gpu_check: " in p.stdout.splitlines()[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the full check would run")
def test_gpu_check_refuses_to_run_without_cuda_unless_dry():
    p = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode != 0 and "--dry" in p.stderr
