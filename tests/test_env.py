import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minitok.tools.env import TESTED_TORCH, run, torch_warnings


def test_env_reports_ok_lines_and_exits_zero():
    out = subprocess.run(
        [sys.executable, "-m", "minitok", "env"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK   torch" in out.stdout and "OK   data" in out.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_env_fails_clearly_for_a_missing_gpu(monkeypatch, capsys):
    monkeypatch.setenv("MINITOK_DEVICE", "cuda")  # the command itself: the test above
    assert run() == 1
    printed = capsys.readouterr().out
    assert "FAIL device" in printed and "MINITOK_DEVICE" in printed


def test_the_tested_torch_is_the_one_the_makefile_installs():
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert re.search(r"^TORCH\s*:=\s*torch==(\S+)$", makefile, re.M).group(1) == TESTED_TORCH


@pytest.mark.parametrize("version, cuda, gpu, expected", [
    (f"{TESTED_TORCH}+cpu", None, False, []),
    (TESTED_TORCH, "13.0", True, []),
    ("2.14.1+cpu", None, False, ["untested"]),
    (f"{TESTED_TORCH}+cu130", "13.0", False, ["CUDA 13.0 build"]),
    ("2.14.1+cu130", "13.0", False, ["untested", "CUDA 13.0 build"]),
])
def test_env_warns_about_an_untested_torch_and_a_cuda_build_without_gpu(
        version, cuda, gpu, expected, monkeypatch):
    monkeypatch.setattr(torch, "__version__", version)
    monkeypatch.setattr(torch.version, "cuda", cuda)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    warnings = torch_warnings()
    assert len(warnings) == len(expected)
    for warning, words in zip(warnings, expected, strict=True):
        assert warning.startswith(f"torch {version} is") and words in warning


def test_warnings_do_not_fail_the_check(monkeypatch, capsys):
    monkeypatch.setattr(torch, "__version__", "2.14.1+cu130")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert run() == 0
    printed = capsys.readouterr().out
    assert "WARN torch      torch 2.14.1+cu130 is untested here" in printed
    assert printed.rstrip().endswith("environment OK")
