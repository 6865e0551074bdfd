"""Rebuild minitok/checkpoints/maskgit.pt: a class-conditional MaskGIT over the digit tokens.

    python scripts/train_maskgit.py                   # the shipped checkpoint (1 CPU thread)
    python scripts/train_maskgit.py --steps 200 --out /tmp/maskgit.pt

The data are the training digits at 16 x 16, turned into 8 x 8 token grids by the shipped
tokenizer (minitok/checkpoints/tokenizer.pt). The model has the AR prior's size (4 layers,
4 heads, 128 channels) and is trained with the prior's recipe (AdamW, lr 2e-3, batch 64,
10% of the labels dropped to the null class), so that Lesson 06 compares two ways of
generating, not two ways of training.

Reproducible: the same seed, steps and thread count give the same weights on the same CPU
(the thread count changes how float sums are split, so it is pinned and recorded). The
checkpoint's meta records a hash of the token grids it was trained on; tests/test_maskgit.py
checks that the shipped tokenizer still produces them.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from anywhere: import the checkout's minitok
    sys.path.insert(0, str(ROOT))

from minitok import maskgit  # noqa: E402
from minitok.checkpoints import checkpoint_path  # noqa: E402
from minitok.data import load_digits  # noqa: E402
from minitok.tokenizer import load_tokenizer  # noqa: E402


def codes_digest(codes: torch.Tensor) -> str:
    """A short hash of the training token grids: which tokenizer the model was trained on."""
    return hashlib.sha256(codes.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:16]


def training_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The training digits as (M, 8, 8) token grids by the shipped tokenizer, and labels (M,)."""
    tokenizer = load_tokenizer()
    images, labels = load_digits("train", size=tokenizer.config.image_size)
    return tokenizer.encode(images), labels


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=checkpoint_path("maskgit"))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    codes, labels = training_data()
    tokenizer = load_tokenizer()
    config = maskgit.MaskGITConfig(num_codes=tokenizer.num_codes,
                                   grid_size=tokenizer.grid_size)
    torch.manual_seed(args.seed)  # the initial weights
    model = maskgit.MaskGIT(config)
    start = time.perf_counter()
    losses = maskgit.train_maskgit(model, codes, labels, args.steps, seed=args.seed)
    seconds = time.perf_counter() - start
    final = sum(losses[-100:]) / len(losses[-100:])
    meta = {
        "script": "scripts/train_maskgit.py",
        "seed": args.seed,
        "steps": args.steps,
        "threads": args.threads,
        "codes_sha256": codes_digest(codes),
        "final_loss": round(final, 4),
        "train_seconds": round(seconds, 1),
    }
    path = maskgit.save_maskgit(model, args.out, meta)
    print(f"wrote {path}: {args.steps} steps in {seconds:.0f} s, mean loss of the last 100 "
          f"steps {final:.3f} (uniform guess: ln {config.num_codes} = "
          f"{torch.log(torch.tensor(float(config.num_codes))):.3f})")


if __name__ == "__main__":
    main()
