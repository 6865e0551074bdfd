"""The bundled digits and a learner's own image folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minitok.data import load_digits, load_image_folder, resize


def test_digits_split_is_fixed_stratified_and_in_range():
    x_train, y_train = load_digits("train")
    x_test, y_test = load_digits("test")
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert x_train.min() >= -1.0 and x_train.max() <= 1.0
    assert set(y_test.tolist()) == set(range(10))
    counts = torch.bincount(y_test, minlength=10)
    assert counts.min() >= 35, "stratified: every class is in the test split"
    again, _ = load_digits("train")
    assert torch.equal(again, x_train)


def test_digits_train_and_test_are_disjoint_and_cover_all():
    from sklearn.datasets import load_digits as sk

    x_all, _ = load_digits("all")
    assert len(x_all) == len(sk().images)
    x_train, _ = load_digits("train")
    x_test, _ = load_digits("test")
    train_rows = {tuple(r) for r in x_train.flatten(1).tolist()}
    overlap = sum(tuple(r) in train_rows for r in x_test.flatten(1).tolist())
    assert overlap < 5, "only exact duplicate digits in the source may appear in both splits"


def test_resize_keeps_range_and_shape():
    x, _ = load_digits("test", size=16)
    assert x.shape == (360, 1, 16, 16)
    assert x.min() >= -1.0 and x.max() <= 1.0
    with pytest.raises(ValueError, match="size"):
        resize(x, 0)
    with pytest.raises(ValueError, match="images"):
        resize(x[0], 8)


def test_bad_split_is_a_clear_error():
    with pytest.raises(ValueError, match="split"):
        load_digits("validation")


def test_image_folder_round_trip(tmp_path):
    from PIL import Image

    pixels = np.zeros((4, 4), dtype=np.uint8)
    pixels[1, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(255 - pixels).save(tmp_path / "b.png")
    (tmp_path / "notes.txt").write_text("not an image, ignored by suffix")
    batch = load_image_folder(tmp_path, size=4)
    assert batch.shape == (2, 1, 4, 4)
    assert batch[0, 0, 1, 2] == 1.0 and batch[0, 0, 0, 0] == -1.0
    assert batch[1, 0, 1, 2] == -1.0
    rgb = load_image_folder(tmp_path, size=8, grayscale=False)
    assert rgb.shape == (2, 3, 8, 8)


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing", size=8)
    with pytest.raises(ValueError, match="holds no images"):
        load_image_folder(tmp_path, size=8)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        load_image_folder(tmp_path, size=8)
