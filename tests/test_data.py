"""The bundled digits and a learner's own image folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minitok.data import load_digits, load_image_classes, load_image_folder, make_shapes, resize


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


def test_image_folder_names_every_unreadable_file(tmp_path):
    make_shapes(tmp_path, 2, size=8)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="cannot read 2 of the 4 files") as err:
        load_image_folder(tmp_path, size=8)
    assert "broken.png" in str(err.value) and "empty.jpg" in str(err.value)


def test_image_folder_resizes_mixed_sizes_and_reads_colour(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "a_wide_red.png")
    Image.new("L", (7, 7), 0).save(tmp_path / "b_small_black.png")
    Image.new("RGB", (64, 64), (0, 0, 255)).save(tmp_path / "c_blue.jpg", quality=100)
    rgb = load_image_folder(tmp_path, size=16, grayscale=False)
    assert rgb.shape == (3, 3, 16, 16)
    assert torch.allclose(rgb[0, :, 8, 8], torch.tensor([1.0, -1.0, -1.0]))
    assert torch.equal(rgb[1], torch.full((3, 16, 16), -1.0))  # grey becomes R = G = B
    assert rgb[2, 2].min() > 0.9 and rgb[2, 0].max() < -0.9
    assert load_image_folder(tmp_path, size=16).shape == (3, 1, 16, 16)


def test_a_transparent_image_is_laid_on_white(tmp_path):
    from PIL import Image

    pixels = np.zeros((4, 4, 4), dtype=np.uint8)  # black everywhere, see-through ...
    pixels[0, 0] = (255, 0, 0, 255)  # ... except one opaque red pixel
    Image.fromarray(pixels, "RGBA").save(tmp_path / "icon.png")
    rgb = load_image_folder(tmp_path, size=4, grayscale=False)[0]  # (3, 4, 4)
    assert torch.equal(rgb[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    assert torch.equal(rgb[:, 3, 3], torch.ones(3)), "transparent pixels read as white"


def test_make_shapes_is_seeded_colourful_and_sorts_into_classes(tmp_path):
    first = load_image_folder(make_shapes(tmp_path / "a", 6, size=16, seed=3), 16, False)
    again = load_image_folder(make_shapes(tmp_path / "b", 6, size=16, seed=3), 16, False)
    other = load_image_folder(make_shapes(tmp_path / "c", 6, size=16, seed=4), 16, False)
    assert first.shape == (6, 3, 16, 16) and torch.equal(first, again)
    assert not torch.equal(first, other)
    assert (first[:, 0] - first[:, 1]).abs().max() > 0.2, "colour, not grey"
    images, labels, names = load_image_classes(make_shapes(tmp_path / "d", 7, 16, classes=True),
                                               16, grayscale=False)
    assert names == ["circle", "square", "triangle"]
    assert images.shape == (7, 3, 16, 16) and labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="n must be a positive int"):
        make_shapes(tmp_path / "e", 0)


def test_image_classes_reads_a_flat_folder_as_one_class_and_refuses_a_mixed_one(tmp_path):
    make_shapes(tmp_path / "flat", 3, size=8)
    images, labels, names = load_image_classes(tmp_path / "flat", 8)
    assert images.shape == (3, 1, 8, 8) and labels.tolist() == [0, 0, 0] and names == ["flat"]
    make_shapes(tmp_path / "flat" / "extra", 1, size=8)
    with pytest.raises(ValueError, match="holds images and subfolders \\(extra\\)"):
        load_image_classes(tmp_path / "flat", 8)
    (tmp_path / "classes" / "empty").mkdir(parents=True)
    make_shapes(tmp_path / "classes" / "full", 1, size=8)
    with pytest.raises(ValueError, match="empty.*holds no images"):
        load_image_classes(tmp_path / "classes", 8)
    with pytest.raises(ValueError, match="load_image_classes reads one class per subfolder"):
        load_image_folder(tmp_path / "classes", 8)
