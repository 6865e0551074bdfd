"""Rebuild the pretrained tokenizer that ships in minitok/checkpoints/tokenizer.pt.

    .venv/bin/python scripts/train_tokenizer.py                 # the shipped checkpoint
    .venv/bin/python scripts/train_tokenizer.py --out /tmp/tok.pt --steps 300

Trains `minitok.tokenizer.train_tokenizer` from scratch with the default TokenizerConfig and
TrainConfig (a plain VQ-VAE: Lesson 03 shows that the GAN terms do not help on 16 x 16
digits), writes a weights-only checkpoint, and prints the held-out quality. Same seed, same
result on the same CPU (about two minutes on a busy 2-core machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from minitok.checkpoints import checkpoint_path
from minitok.tokenizer import (
    TokenizerConfig,
    TrainConfig,
    held_out_quality,
    quality_lines,
    train_tokenizer,
)


def main(argv: list[str] | None = None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=checkpoint_path("tokenizer"),
                        help="where to write the checkpoint (default: the shipped one)")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true", help="hide the tqdm bar")
    args = parser.parse_args(argv)

    config = TokenizerConfig()
    train = dataclasses.replace(defaults, steps=args.steps, seed=args.seed)
    start = time.perf_counter()
    tokenizer, history = train_tokenizer(config, train, device=args.device,
                                         progress=not args.no_progress)
    seconds = time.perf_counter() - start
    tokenizer = tokenizer.cpu()
    quality = held_out_quality(tokenizer)
    meta = {
        "script": "scripts/train_tokenizer.py",
        "train": dataclasses.asdict(train),
        "device": str(args.device),
        "torch": str(torch.__version__),
        "final_train_rec": history["rec"][-1],
        **{f"test_{key}": value for key, value in quality.items()},
    }
    path = tokenizer.save(args.out, meta)
    print(f"trained {train.steps} steps in {seconds:.0f} s on {args.device}; "
          f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    for line in quality_lines(quality, config.num_codes):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
