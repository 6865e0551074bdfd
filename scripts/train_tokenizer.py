"""Rebuild the pretrained tokenizer that ships in minitok/checkpoints/tokenizer.pt.

    python scripts/train_tokenizer.py                 # the shipped checkpoint
    python scripts/train_tokenizer.py --out /tmp/tok.pt --steps 300

Trains `minitok.tokenizer.train_tokenizer` from scratch with the default TokenizerConfig and
TrainConfig (a plain VQ-VAE: Lesson 03 shows what the GAN terms do on 16 x 16 digits),
writes a weights-only checkpoint, and prints the held-out quality. Same seed, same result on
the same CPU (about two minutes on a busy 2-core machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from minitok import checkpoints
from minitok.evaluate import quality_lines, tokenizer_quality
from minitok.tokenizer import TokenizerConfig, TrainConfig, train_tokenizer


def main(argv: list[str] | None = None) -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=checkpoints.checkpoint_path("tokenizer"),
                        help="where to write the checkpoint (default: the shipped one)")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    config = TokenizerConfig()
    train = dataclasses.replace(defaults, steps=args.steps, seed=args.seed)
    start = time.perf_counter()
    tokenizer, history = train_tokenizer(config, train, device=args.device)
    seconds = time.perf_counter() - start
    quality = tokenizer_quality(tokenizer.cpu())
    meta = checkpoints.training_meta("scripts/train_tokenizer.py", dataclasses.asdict(train),
                                     seconds, {"final_train_rec": history["rec"][-1],
                                               **{f"test_{k}": v for k, v in quality.items()}})
    path = checkpoints.save(tokenizer, args.out, meta)
    print(f"trained {train.steps} steps in {seconds:.0f} s on {args.device}; "
          f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    for line in quality_lines(quality, config.num_codes):
        print(line)


if __name__ == "__main__":
    main()
