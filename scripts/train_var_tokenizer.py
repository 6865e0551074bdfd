"""Rebuild the multi-scale tokenizer that ships in minitok/checkpoints/var_tokenizer.pt.

    python scripts/train_var_tokenizer.py                 # the shipped checkpoint
    python scripts/train_var_tokenizer.py --out /tmp/vt.pt --steps 200

Starts from the shipped Lesson 03 tokenizer (encoder, decoder, codebook; phi at the
identity) and fine-tunes it with VAR's multi-scale residual quantizer (scales 1, 2, 4, 8:
`minitok.msvq.train_multiscale`), writes a weights-only checkpoint, and prints the held-out
quality next to the single-scale tokenizer's, measured the same way. Same seed, same result
on the same CPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from minitok import checkpoints
from minitok.evaluate import quality_lines, tokenizer_quality
from minitok.msvq import train_multiscale


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=checkpoints.checkpoint_path("var_tokenizer"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    single = checkpoints.load("tokenizer")
    start = time.perf_counter()
    model, history = train_multiscale(single, args.steps, lr=args.lr, seed=args.seed)
    seconds = time.perf_counter() - start
    quality = tokenizer_quality(model)
    recipe = {"steps": args.steps, "lr": args.lr, "seed": args.seed, "batch_size": 32}
    meta = checkpoints.training_meta("scripts/train_var_tokenizer.py", recipe, seconds,
                                     {"final_train_rec": history["rec"][-1],
                                      **{f"test_{k}": v for k, v in quality.items()}},
                                     tokenizer=single)
    path = checkpoints.save(model, args.out, meta)
    print(f"trained {args.steps} steps in {seconds:.0f} s; wrote {path} "
          f"({path.stat().st_size / 1024:.0f} KiB)")
    print("multi-scale (1, 2, 4, 8):")
    for line in quality_lines(quality, model.num_codes):
        print("  " + line)
    print("single-scale (the shipped Lesson 03 tokenizer):")
    for line in quality_lines(tokenizer_quality(single), single.num_codes):
        print("  " + line)


if __name__ == "__main__":
    main()
