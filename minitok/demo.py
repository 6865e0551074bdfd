"""`make demo` / `minitok demo`: the course's pipeline on the bundled digits, as one picture.

What it runs grows with the course. Today: Lesson 01's vector quantization. Real test digits
are cut into 2x2 patches; a k-means codebook fitted on the training digits' patches turns each
patch into one token; the picture shows the digits rebuilt from their tokens at several
codebook sizes, and the table says how much was lost.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from minitok.course import seed_everything
from minitok.data import load_digits, to_unit_range
from minitok.quantize import codebook_usage, kmeans, perplexity, quantize

PATCH = 2


def to_patches(images: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """(N, 1, S, S) -> (N, S/p, S/p, p*p): each non-overlapping p x p patch as one vector."""
    n, _, size, _ = images.shape
    grid = size // patch
    x = images.reshape(n, grid, patch, grid, patch)  # (N, g, p, g, p)
    return x.permute(0, 1, 3, 2, 4).reshape(n, grid, grid, patch * patch)


def from_patches(patches: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """The inverse of to_patches: (N, g, g, p*p) -> (N, 1, g*p, g*p)."""
    n, grid, _, _ = patches.shape
    x = patches.reshape(n, grid, grid, patch, patch).permute(0, 1, 3, 2, 4)  # (N, g, p, g, p)
    return x.reshape(n, 1, grid * patch, grid * patch)


def vq_rows(sizes: list[int], seed: int, device: str, examples: int):
    """Fit a codebook per K; return the table rows and the reconstructions to draw."""
    gen = torch.Generator().manual_seed(seed)
    train, _ = load_digits("train", size=8)
    test, _ = load_digits("test", size=8)
    train_vectors = to_patches(train.to(device)).reshape(-1, PATCH * PATCH)  # (N*16, 4)
    test_patches = to_patches(test.to(device))  # (M, 4, 4, 4)
    rows, pictures = [], []
    for k in sizes:
        start = time.perf_counter()
        codebook = kmeans(train_vectors, k, iters=10, generator=gen)  # (K, 4)
        quantized, indices = quantize(test_patches, codebook)  # (M, 4, 4, 4), (M, 4, 4)
        rebuilt = from_patches(quantized)  # (M, 1, 8, 8)
        rows.append({
            "codes K": k,
            "test MSE": ((rebuilt - test.to(device)) ** 2).mean().item(),
            "usage": codebook_usage(indices, k),
            "perplexity": perplexity(indices, k),
            "seconds": time.perf_counter() - start,
        })
        pictures.append((f"K = {k}", rebuilt[:examples].cpu()))
    return rows, [("original", test[:examples])] + pictures


def draw(pictures, path: Path) -> None:
    """One row per picture set, one column per digit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = len(pictures[0][1])
    fig, axes = plt.subplots(len(pictures), cols, figsize=(cols * 0.8, len(pictures) * 0.9))
    for r, (title, images) in enumerate(pictures):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(to_unit_range(images[c, 0]).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("Test digits rebuilt from 2x2-patch tokens (k-means codebooks)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_table(rows: list[dict]) -> None:
    keys = list(rows[0])
    print(" | ".join(f"{k:>10}" for k in keys))
    for row in rows:
        cells = [f"{v:>10.4f}" if isinstance(v, float) else f"{v:>10}" for v in row.values()]
        print(" | ".join(cells))


def run_demo(out: Path, seed: int = 0, device: str = "cpu", quick: bool = False) -> int:
    """Run every stage that exists, write out/demo.png, print the table. Returns 0."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available (torch.cuda.is_available())")
    seed_everything(seed)
    sizes = [4, 16] if quick else [4, 16, 64]
    rows, pictures = vq_rows(sizes, seed, device, examples=10)
    print_table(rows)
    path = Path(out) / "demo.png"
    draw(pictures, path)
    print(f"wrote {path}")
    return 0
