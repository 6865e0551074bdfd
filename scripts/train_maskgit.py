"""Rebuild minitok/checkpoints/maskgit.pt: a class-conditional MaskGIT over the digit tokens.

    python scripts/train_maskgit.py                   # the shipped checkpoint
    python scripts/train_maskgit.py --steps 200 --out /tmp/maskgit.pt

The data are the training digits at 16 x 16, turned into 8 x 8 token grids by the shipped
tokenizer. The model's size (layers, heads, channels, dropout) and the recipe (steps, batch
size, learning rate, share of labels dropped to the null class) are read from the shipped AR
prior's checkpoint, so that Lesson 06 compares two ways of generating, not two models or two
ways of training. Each can be overridden on the command line. Training runs on one CPU
thread with deterministic kernels (`training.fit`): the same seed gives the same weights on
the same CPU.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from minitok import checkpoints, maskgit
from minitok.evaluate import encode_digits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prior_recipe import parse_recipe, prior_recipe, save_trained  # noqa: E402, F401  (shared)


def main(argv=None) -> None:
    recipe = {**prior_recipe(), "label_smoothing": 0.0}  # the official MaskGIT uses 0.1
    args, recipe = parse_recipe(recipe, "maskgit", argv, __doc__.splitlines()[0])
    tokenizer = checkpoints.load("tokenizer")
    codes, labels = encode_digits(tokenizer, "train")  # (1437, 8, 8), (1437,)
    config = maskgit.MaskGITConfig(num_codes=tokenizer.num_codes, grid_size=tokenizer.grid_size,
                                   n_layer=args.n_layer, n_head=args.n_head,
                                   n_embd=args.n_embd, dropout=args.dropout)
    torch.manual_seed(args.seed)  # the initial weights
    model = maskgit.MaskGIT(config)
    start = time.perf_counter()
    losses = maskgit.train_maskgit(model, codes, labels, args.steps, args.batch_size, args.lr,
                                   p_uncond=args.p_uncond, seed=args.seed,
                                   label_smoothing=args.label_smoothing)
    save_trained(model, args.out, "scripts/train_maskgit.py", recipe,
                 time.perf_counter() - start, losses, tokenizer)


if __name__ == "__main__":
    main()
