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

import argparse
import math
import time
from pathlib import Path

import torch

from minitok import checkpoints, maskgit
from minitok.evaluate import encode_digits


def prior_recipe() -> dict:
    """The shipped prior's transformer size and training recipe, from its checkpoint."""
    payload = checkpoints.load_payload(checkpoints.checkpoint_path("prior"), "prior")
    size = {k: payload["config"][k] for k in ("n_layer", "n_head", "n_embd", "dropout")}
    return {**size, **payload["meta"]["recipe"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    recipe = {**prior_recipe(), "label_smoothing": 0.0}  # the official MaskGIT uses 0.1
    for name, value in recipe.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                            help=f"default: {value}")
    parser.add_argument("--out", type=Path, default=checkpoints.checkpoint_path("maskgit"))
    args = parser.parse_args(argv)
    recipe = {name: getattr(args, name) for name in recipe}

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
    seconds = time.perf_counter() - start
    path, results = checkpoints.save_trained(model, args.out, "scripts/train_maskgit.py", recipe,
                                             seconds, losses, tokenizer=tokenizer)
    print(f"wrote {path}: {args.steps} steps in {seconds:.0f} s, mean loss of the last 100 "
          f"steps {results['final_loss']:.3f} (uniform guess: ln {config.num_codes} = "
          f"{math.log(config.num_codes):.3f})")


if __name__ == "__main__":
    main()
