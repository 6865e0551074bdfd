import os
import subprocess
import sys

import pytest
import torch


def test_env_reports_ok_lines_and_exits_zero():
    out = subprocess.run(
        [sys.executable, "-m", "minitok", "env"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK   torch" in out.stdout and "OK   data" in out.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_env_fails_clearly_for_a_missing_gpu():
    env = {**os.environ, "MINITOK_DEVICE": "cuda"}
    out = subprocess.run(
        [sys.executable, "-m", "minitok", "env"], capture_output=True, text=True, env=env,
        timeout=120,
    )
    assert out.returncode == 1
    assert "FAIL device" in out.stdout and "MINITOK_DEVICE" in out.stdout
