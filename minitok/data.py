"""The course's data: real handwritten digits that ship with scikit-learn, and your own images.

Nothing here downloads anything. scikit-learn bundles 1,797 handwritten digits (8x8 pixels,
values 0..16, ten classes), collected by UCI from 43 people. We scale them to [-1, 1], the
range the tokenizer's decoder produces with a tanh, and split them once, with a fixed seed
and stratified by class, into a training set and a held-out test set.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@lru_cache(maxsize=4)
def _digits_split(seed: int, test_fraction: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load scikit-learn's digits once and split them (cached: the split never changes)."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = bunch.images.astype(np.float32) / 16.0 * 2.0 - 1.0  # (1797, 8, 8) in [-1, 1]
    labels = bunch.target.astype(np.int64)  # (1797,)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a (N, C, H, W) batch to (N, C, size, size) with bilinear interpolation.

    Bilinear upsampling of an 8x8 digit gives smooth strokes; values stay in [-1, 1]
    because bilinear interpolation is a convex combination of the input pixels.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def load_digits(
    split: str = "train", size: int = 8, seed: int = 0, test_fraction: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images, labels) of the bundled digits.

    images: (N, 1, size, size) float32 in [-1, 1]; labels: (N,) int64 in 0..9.
    With the defaults the split is 1,437 training and 360 test images, the same on every
    machine (stratified by class, seeded by `seed`).
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    parts = _digits_split(seed, float(test_fraction))
    if split == "all":
        x = np.concatenate([parts["train"][0], parts["test"][0]])
        y = np.concatenate([parts["train"][1], parts["test"][1]])
    else:
        x, y = parts[split]
    images = torch.from_numpy(x.copy()).unsqueeze(1)  # (N, 1, 8, 8)
    return resize(images, size), torch.from_numpy(y.copy())


def load_image_folder(path: str | Path, size: int, grayscale: bool = True) -> torch.Tensor:
    """Load every image in a folder as a (N, C, size, size) float32 batch in [-1, 1].

    Files are read in sorted name order, converted to grayscale (C = 1) or RGB (C = 3),
    resized to size x size, and scaled like the digits. An empty folder, a missing folder,
    or a file that cannot be read as an image is an error that names the file.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"path: folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"path: {str(folder)!r} is a file, expected a folder of images")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(
            f"path: folder {str(folder)!r} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    mode = "L" if grayscale else "RGB"
    batch = []
    for file in files:
        try:
            with Image.open(file) as img:
                img = img.convert(mode).resize((size, size), Image.BILINEAR)
                pixels = np.asarray(img, dtype=np.float32) / 255.0  # (H, W) or (H, W, 3)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"path: cannot read {str(file)!r} as an image ({err})") from err
        if pixels.ndim == 2:
            pixels = pixels[None]  # (1, H, W)
        else:
            pixels = pixels.transpose(2, 0, 1)  # (3, H, W)
        batch.append(torch.from_numpy(pixels.copy()) * 2.0 - 1.0)
    return torch.stack(batch)  # (N, C, size, size)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Map images from [-1, 1] to [0, 1] for display, clipping what a decoder overshoots."""
    return ((images + 1.0) / 2.0).clamp(0.0, 1.0)
