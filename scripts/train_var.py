"""Rebuild minitok/checkpoints/var.pt: a class-conditional next-scale model (VAR) on digits.

    python scripts/train_var.py                   # the shipped checkpoint
    python scripts/train_var.py --steps 200 --out /tmp/var.pt

The data are the training digits at 16 x 16, turned into token maps of scales 1, 2, 4, 8 (85
tokens) by the shipped multi-scale tokenizer (scripts/train_var_tokenizer.py). The
transformer's size and the recipe (steps, batch size, learning rate, share of labels dropped
to the null class) are the shipped AR prior's, read from its checkpoint, so that the race
compares ways of generating, not model sizes. Training runs on one CPU thread with
deterministic kernels (`training.fit`): the same seed gives the same weights on the same CPU.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from minitok import checkpoints
from minitok.data import load_digits
from minitok.var import VAR, VARConfig, train_var


def prior_recipe() -> dict:
    """The shipped prior's transformer size and training recipe, from its checkpoint."""
    payload = checkpoints.load_payload(checkpoints.checkpoint_path("prior"), "prior")
    size = {k: payload["config"][k] for k in ("n_layer", "n_head", "n_embd", "dropout")}
    return {**size, **payload["meta"]["recipe"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    recipe = prior_recipe()
    for name, value in recipe.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                            help=f"default: {value}")
    parser.add_argument("--out", type=Path, default=checkpoints.checkpoint_path("var"))
    args = parser.parse_args(argv)
    recipe = {name: getattr(args, name) for name in recipe}

    tokenizer = checkpoints.load("var_tokenizer")
    images, labels = load_digits("train", size=tokenizer.config.image_size)
    tokens = torch.cat(tokenizer.encode(images), dim=1)  # (N, 85), coarse to fine
    c = tokenizer.config
    config = VARConfig(num_codes=c.num_codes, code_dim=c.code_dim, scales=c.scales,
                       n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                       dropout=args.dropout)
    torch.manual_seed(args.seed)  # the initial weights
    model = VAR(config)
    start = time.perf_counter()
    losses = train_var(model, tokens, labels, tokenizer.quantizer, args.steps, args.batch_size,
                       args.lr, p_uncond=args.p_uncond, seed=args.seed)
    seconds = time.perf_counter() - start
    final = sum(losses[-100:]) / len(losses[-100:])
    meta = checkpoints.training_meta("scripts/train_var.py", recipe, seconds,
                                     {"final_loss": round(final, 4)}, tokenizer=tokenizer)
    path = checkpoints.save(model, args.out, meta)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB): {args.steps} steps in "
          f"{seconds:.0f} s, mean loss of the last 100 steps {final:.3f} (uniform guess: "
          f"ln {config.num_codes} = {math.log(config.num_codes):.3f})")


if __name__ == "__main__":
    main()
