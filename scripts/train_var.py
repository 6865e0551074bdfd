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

import sys
import time
from pathlib import Path

import torch

from minitok import checkpoints
from minitok.data import load_digits
from minitok.var import VAR, VARConfig, train_var

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prior_recipe import parse_recipe, prior_recipe, save_trained  # noqa: E402  (shared)


def main(argv=None) -> None:
    args, recipe = parse_recipe(prior_recipe(), "var", argv, __doc__.splitlines()[0])
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
    save_trained(model, args.out, "scripts/train_var.py", recipe, time.perf_counter() - start,
                 losses, tokenizer)


if __name__ == "__main__":
    main()
