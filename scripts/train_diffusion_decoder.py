"""Rebuild minitok/checkpoints/diffusion_decoder.pt: a diffusion model that renders token grids.

    python scripts/train_diffusion_decoder.py                       # the shipped checkpoint
    python scripts/train_diffusion_decoder.py --steps 200 --out /tmp/decoder.pt

The hybrid of Lesson 08: the shipped tokenizer turns every training digit into its 8 x 8
token grid, and a diffusion model learns to draw the digit's pixels given that grid (10% of
the grids dropped to the null code, for guidance). At generation time it stands where the
tokenizer's decoder stood: an AR prior draws the tokens, this model draws the pixels. Same
U-Net and recipe as scripts/train_diffusion.py; one CPU thread, deterministic kernels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from minitok import checkpoints
from minitok.data import load_digits
from minitok.diffusion import DiffusionConfig, DiffusionDecoder
from minitok.evaluate import encode_digits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_diffusion import RECIPE, SIZE, parse, train_and_save  # noqa: E402  (the shared recipe)

DECODER_SIZE = {**SIZE, "code_dim": 8}


def main(argv: list[str] | None = None) -> None:
    args = parse(argv, DECODER_SIZE, RECIPE, "diffusion_decoder")
    recipe = {name: getattr(args, name) for name in {**DECODER_SIZE, **RECIPE}}
    tokenizer = checkpoints.load("tokenizer")
    images, _ = load_digits("train", size=16)  # (1437, 1, 16, 16)
    grids, _ = encode_digits(tokenizer, "train")  # (1437, 8, 8)
    test_images, _ = load_digits("test", size=16)
    test_grids, _ = encode_digits(tokenizer, "test")
    config = DiffusionConfig(num_codes=tokenizer.num_codes, grid_size=tokenizer.grid_size,
                             **{name: getattr(args, name) for name in DECODER_SIZE})
    torch.manual_seed(args.seed)  # the initial weights
    model = DiffusionDecoder(config)
    path, results, seconds = train_and_save(model, images, grids, test_images, test_grids, args,
                                            recipe, "scripts/train_diffusion_decoder.py",
                                            tokenizer)
    weights = sum(p.numel() for p in model.parameters())
    print(f"trained {args.steps} steps in {seconds:.0f} s ({weights:,} weights): train loss "
          f"{results['final_train_loss']:.4f}, test loss {results['test_loss']:.4f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
