"""The main job runs end to end and writes a real picture."""

from __future__ import annotations

import torch
from PIL import Image

from minitok.data import load_digits
from minitok.demo import from_patches, run_demo, to_patches


def test_patches_round_trip():
    images, _ = load_digits("test", size=8)
    patches = to_patches(images[:5])
    assert patches.shape == (5, 4, 4, 4)
    assert torch.equal(from_patches(patches), images[:5])
    # patch (0, 1) holds rows 0-1, columns 2-3
    assert torch.equal(patches[0, 0, 1], images[0, 0, 0:2, 2:4].reshape(-1))


def test_quick_demo_writes_a_png_and_a_table(tmp_path, capsys):
    assert run_demo(tmp_path, seed=0, quick=True) == 0
    with Image.open(tmp_path / "demo.png") as img:
        img.verify()
    with Image.open(tmp_path / "demo.png") as img:
        assert img.width > 300 and img.height > 150
    out = capsys.readouterr().out
    assert "test MSE" in out and "wrote" in out
    mse = [float(line.split("|")[1]) for line in out.splitlines() if line.strip()[:2].strip().isdigit()]
    assert len(mse) == 2 and mse[1] < mse[0], "more codes must rebuild the digits better"
