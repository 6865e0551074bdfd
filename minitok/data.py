"""The course's data: real handwritten digits that ship with scikit-learn, and your own images.

    load_digits          the bundled digits, split once into train and test
    load_image_folder    a folder of your own images (PNG/JPEG, grey or colour, any size)
    load_image_classes   the same with one class per subfolder, as `minitok train` reads it
    make_shapes          synthetic coloured shapes, written as PNG files (tests and demos)

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

from minitok.validate import non_negative_int, number, positive_int

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
    number(test_fraction, "test_fraction", low=0, high=1, low_open=True, high_open=True)
    non_negative_int(seed, "seed")
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
    resized to size x size (a non-square image is stretched), and scaled like the digits.
    A transparent image is laid on white first, so that what was see-through reads as
    background rather than as whatever colour the file stores under it. Files with other
    suffixes are skipped. An empty or missing folder is an error, and so is any file that
    cannot be read as an image: the error names every such file, not just the first.
    """
    from PIL import Image

    folder = _image_folder(path)
    size = positive_int(size, "size")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        subfolders = sum(p.is_dir() for p in folder.iterdir())
        hint = (f"; it has {subfolders} subfolders: load_image_classes reads one class per "
                f"subfolder" if subfolders else "")
        raise ValueError(f"path: folder {str(folder)!r} holds no images (looked for "
                         f"{', '.join(IMAGE_SUFFIXES)}){hint}")
    mode = "L" if grayscale else "RGB"
    batch, unreadable = [], []
    for file in files:
        try:
            with Image.open(file) as img:
                img = _on_white(img).convert(mode).resize((size, size), Image.BILINEAR)
                pixels = np.asarray(img, dtype=np.float32) / 255.0  # (H, W) or (H, W, 3)
        except (OSError, SyntaxError, ValueError) as err:  # PIL's ways of saying 'broken'
            unreadable.append(f"{file.name} ({type(err).__name__}: {err})")
            continue
        if pixels.ndim == 2:
            pixels = pixels[None]  # (1, H, W)
        else:
            pixels = pixels.transpose(2, 0, 1)  # (3, H, W)
        batch.append(torch.from_numpy(pixels.copy()) * 2.0 - 1.0)
    if unreadable:
        raise ValueError(f"path: cannot read {len(unreadable)} of the {len(files)} files in "
                         f"{str(folder)!r} as images (remove or fix them): "
                         + "; ".join(unreadable))
    return torch.stack(batch)  # (N, C, size, size)


def _image_folder(path: str | Path) -> Path:
    """`path` as a Path if it is an existing folder, else an error that says what it is."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"path: folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"path: {str(folder)!r} is a file, expected a folder of images")
    return folder


def _on_white(img):
    """A PIL image with transparency composited onto white; any other image unchanged."""
    from PIL import Image

    if img.mode not in ("RGBA", "LA", "PA") and "transparency" not in img.info:
        return img
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)


def load_image_classes(path: str | Path, size: int, grayscale: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Load an image folder with its classes: (images (N, C, size, size), labels (N,), names).

    Two layouts: images directly in `path` are one class (named after the folder, label 0);
    or one subfolder per class (labels 0, 1, ... in sorted subfolder order, as
    torchvision's ImageFolder). A folder holding both images and subfolders is refused,
    since it is unclear which layout was meant. Each folder is read by `load_image_folder`.
    """
    folder = _image_folder(path)
    has_images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if has_images and subfolders:
        raise ValueError(f"path: folder {str(folder)!r} holds images and subfolders "
                         f"({', '.join(p.name for p in subfolders)}): put every image in a "
                         f"class subfolder, or keep them all in the folder itself")
    if not subfolders:
        images = load_image_folder(folder, size, grayscale)
        return images, torch.zeros(len(images), dtype=torch.int64), [folder.name]
    parts = [load_image_folder(sub, size, grayscale) for sub in subfolders]
    labels = torch.cat([torch.full((len(x),), c, dtype=torch.int64)
                        for c, x in enumerate(parts)])  # (N,)
    return torch.cat(parts), labels, [sub.name for sub in subfolders]


SHAPES = ("circle", "square", "triangle")


def make_shapes(folder: str | Path, n: int, size: int = 32, seed: int = 0,
                classes: bool = False) -> Path:
    """Write `n` synthetic colour images, one shape each, as PNG files; returns the folder.

    A circle, square or triangle (in turn) of a random colour, size and place on a random
    pale background, drawn at 4x and shrunk (smooth edges). They stand in for a learner's
    own pictures in tests and demos, since nothing here can be downloaded. With `classes`
    the files go into one subfolder per shape (circle/, square/, triangle/), the layout
    `load_image_classes` reads as three classes. The same seed writes the same files.
    """
    from PIL import Image, ImageDraw

    n, size = positive_int(n, "n"), positive_int(size, "size")
    non_negative_int(seed, "seed")
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    big = 4 * size  # drawn at 4x, then shrunk with a box filter: anti-aliased edges
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        background = tuple(int(v) for v in rng.integers(170, 256, 3))  # pale
        colour = tuple(int(v) for v in rng.integers(0, 200, 3))  # darker than any background
        radius = rng.uniform(0.18, 0.4) * big
        cx, cy = rng.uniform(radius, big - radius, 2)
        img = Image.new("RGB", (big, big), background)
        pen = ImageDraw.Draw(img)
        if shape == "circle":
            pen.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
        elif shape == "square":
            pen.rectangle([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
        else:
            pen.polygon([(cx, cy - radius), (cx - radius, cy + radius),
                         (cx + radius, cy + radius)], fill=colour)
        target = folder / shape if classes else folder
        target.mkdir(parents=True, exist_ok=True)
        img.resize((size, size), Image.BOX).save(target / f"{i:05d}.png")
    return folder


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Map images from [-1, 1] to [0, 1] for display, clipping what a decoder overshoots."""
    return ((images + 1.0) / 2.0).clamp(0.0, 1.0)
