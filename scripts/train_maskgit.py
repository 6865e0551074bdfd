"""Rebuild minitok/checkpoints/maskgit.pt: a class-conditional MaskGIT over the digit tokens.

    python scripts/train_maskgit.py                   # the shipped checkpoint (1 CPU thread)
    python scripts/train_maskgit.py --steps 200 --out /tmp/maskgit.pt

The data are the training digits at 16 x 16, turned into 8 x 8 token grids by the shipped
tokenizer (minitok/checkpoints/tokenizer.pt). The model's size (layers, heads, channels,
dropout) and the recipe (steps, batch size, learning rate, share of labels dropped to the
null class) are read from the shipped AR prior's checkpoint (minitok/checkpoints/prior.pt),
so that Lesson 06 compares two ways of generating, not two models or two ways of training.
Each can be overridden on the command line.

Reproducible: the same seed, steps and thread count give the same weights on the same CPU
(the thread count changes how float sums are split, so it is pinned and recorded). The
checkpoint's meta records a hash of the token grids it was trained on; tests/test_maskgit.py
checks that the shipped tokenizer still produces them.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from anywhere: import the checkout's minitok
    sys.path.insert(0, str(ROOT))

from minitok import maskgit  # noqa: E402
from minitok.checkpoints import checkpoint_path, load_checkpoint  # noqa: E402
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


def prior_recipe() -> dict:
    """The shipped prior's transformer size and training recipe, from its checkpoint."""
    payload = load_checkpoint(checkpoint_path("prior"), "prior")
    config, train = payload["config"], payload["meta"]["train"]
    return {
        "n_layer": config["n_layer"], "n_head": config["n_head"], "n_embd": config["n_embd"],
        "dropout": config["dropout"], "steps": train["steps"],
        "batch_size": train["batch_size"], "lr": train["lr"], "p_uncond": train["p_uncond"],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    recipe = prior_recipe()
    for name, value in recipe.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                            help=f"default: the prior's, {value}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--label-smoothing", type=float, default=0.0,
                        help="the official MaskGIT uses 0.1; the shipped model 0, as the prior")
    parser.add_argument("--out", type=Path, default=checkpoint_path("maskgit"))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)  # fixed kernel choice
    codes, labels = training_data()
    tokenizer = load_tokenizer()
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
    final = sum(losses[-100:]) / len(losses[-100:])
    meta = {
        "script": "scripts/train_maskgit.py",
        "seed": args.seed,
        "steps": args.steps,
        "train": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                  "p_uncond": args.p_uncond, "seed": args.seed},
        "threads": args.threads,
        "machine": f"{platform.machine()} CPU ({platform.processor() or 'unknown'}), "
                   f"{torch.get_num_threads()} thread(s)",
        "torch": str(torch.__version__),
        "label_smoothing": args.label_smoothing,
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
