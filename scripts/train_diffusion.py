"""Rebuild minitok/checkpoints/diffusion.pt: the class-conditional diffusion model (Lesson 08).

    python scripts/train_diffusion.py                          # the shipped checkpoint
    python scripts/train_diffusion.py --steps 200 --out /tmp/diffusion.pt   # a quick try

It trains a small U-Net to predict the noise in the training digits at 16 x 16 (Lesson 08's
`diffusion_loss`, 10% of the labels dropped to the null class for guidance; the weights kept
are an exponential moving average), with `training.train_loop` (one CPU thread,
deterministic kernels: the same seed gives the same weights on the same CPU), then measures
the test loss and writes a weights-only checkpoint.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from minitok import checkpoints
from minitok.data import load_digits
from minitok.diffusion import DiffusionConfig, DiffusionModel, diffusion_loss, train_diffusion

SIZE = {"channels": 16, "inner_channels": 32, "emb_dim": 64, "timesteps": 1000,
        "beta_schedule": "cosine"}
RECIPE = {"steps": 4000, "batch_size": 64, "lr": 2e-3, "p_uncond": 0.1, "ema_decay": 0.999,
          "seed": 0}


def test_loss(model, images, conditions, seed: int = 0) -> float:
    """The diffusion loss on held-out images, with a fixed draw of timesteps and noise."""
    generator = torch.Generator().manual_seed(seed)
    losses = []
    with torch.no_grad():
        for _ in range(4):  # four draws of (t, noise) per image: a steadier estimate
            losses.append(diffusion_loss(model, images, conditions, model.alphas_cumprod,
                                         generator).item())
    return sum(losses) / len(losses)


def parse(argv, size: dict, recipe: dict, kind: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in {**size, **recipe}.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value,
                            help=f"default: {value}")
    parser.add_argument("--out", default=str(checkpoints.checkpoint_path(kind)))
    return parser.parse_args(argv)


def train_and_save(model, images, conditions, test_images, test_conditions, args, recipe: dict,
                   script: str, tokenizer=None) -> tuple[Path, dict, float]:
    """Train `model` on images and their conditions (labels or token grids) with the recipe in
    `args`, measure its test loss, write its checkpoint to args.out; returns (the path, the
    results, the seconds of training)."""
    start = time.perf_counter()
    losses = train_diffusion(model, images, conditions, args.steps, args.batch_size, args.lr,
                             args.p_uncond, args.ema_decay, args.seed)
    seconds = time.perf_counter() - start
    path, results = checkpoints.save_trained(
        model, args.out, script, recipe, seconds, losses,
        {"test_loss": round(test_loss(model, test_images, test_conditions), 4)},
        tokenizer=tokenizer, name="final_train_loss")
    return path, results, seconds


def main(argv: list[str] | None = None) -> None:
    args = parse(argv, SIZE, RECIPE, "diffusion")
    recipe = {name: getattr(args, name) for name in {**SIZE, **RECIPE}}
    images, labels = load_digits("train", size=16)  # (1437, 1, 16, 16) in [-1, 1]
    test_images, test_labels = load_digits("test", size=16)
    config = DiffusionConfig(**{name: getattr(args, name) for name in SIZE})
    torch.manual_seed(args.seed)  # the initial weights
    model = DiffusionModel(config)
    path, results, seconds = train_and_save(model, images, labels, test_images, test_labels,
                                            args, recipe, "scripts/train_diffusion.py")
    weights = sum(p.numel() for p in model.parameters())
    print(f"trained {args.steps} steps in {seconds:.0f} s ({weights:,} weights): train loss "
          f"{results['final_train_loss']:.4f}, test loss {results['test_loss']:.4f} (mean "
          f"squared error of the predicted noise; predicting 0 scores 1)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
