"""The tokenizer's held-out quality, and minitok's quantizer against vector-quantize-pytorch's.

    python -m minitok.bench.tokenizer            # shipped tokenizer + 2,000-step comparison
    python -m minitok.bench.tokenizer --quick    # shipped tokenizer + 300-step comparison
    python -m minitok.bench.tokenizer --device cuda

Goals (issue 3), on the 360 held-out test digits (never seen in training):
- the shipped tokenizer (minitok/checkpoints/tokenizer.pt) uses >= 95% of its codes, and the
  digit classifier's accuracy on its reconstructions is within 2 points of the real images;
- same-budget comparison: the same encoder and decoder (same initial weights, same batches,
  same steps, same seed) trained once with minitok's `VectorQuantizer` and once with
  `vector_quantize_pytorch.VectorQuantize`. Both use k-means initialisation, dead-code
  restarts at threshold 1 and commitment weight 0.25; otherwise each library keeps its own
  defaults (minitok: a codebook learned by the codebook loss; vector-quantize-pytorch: EMA
  codebook updates with decay 0.8 and the rotation trick). Goal: minitok's reconstruction
  MSE and usage no worse.

`run(...)` returns the measured rows, so other tools (`python -m minitok.bench`) can import
this module and print or record them.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import Tensor, nn

from minitok import checkpoints
from minitok.evaluate import quality_lines, tokenizer_quality
from minitok.tokenizer import TokenizerConfig, TrainConfig, train_tokenizer
from minitok.tools.bench import bench_parser
from minitok.vq import VQOutput, usage_stats

QUICK_STEPS = 300


class LucidrainsQuantizer(nn.Module):
    """vector-quantize-pytorch's VectorQuantize behind the interface VQTokenizer expects."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        self.num_codes = config.num_codes
        self.vq = VectorQuantize(
            dim=config.code_dim,
            codebook_size=config.num_codes,
            commitment_weight=config.beta,
            kmeans_init=config.kmeans_init,
            threshold_ema_dead_code=config.dead_code_threshold,
            accept_image_fmap=True,  # (B, D, H, W) in and out, indices (B, H, W)
        )

    def forward(self, z: Tensor) -> VQOutput:
        quantized, indices, loss = self.vq(z)
        perplexity, usage = usage_stats(indices, self.num_codes)
        return VQOutput(quantized, indices, loss.sum(), perplexity, usage)

    def codes(self, indices: Tensor) -> Tensor:
        return self.vq.get_output_from_indices(indices)  # (B, D, H, W)


def quality_row(device: str = "cpu") -> dict:
    """The shipped tokenizer's held-out quality (see minitok.evaluate.tokenizer_quality)."""
    tokenizer = checkpoints.load("tokenizer", device=device)
    return {
        "what": "shipped tokenizer",
        "num_codes": tokenizer.num_codes,
        **tokenizer_quality(tokenizer),
    }


def comparison_rows(steps: int, device: str = "cpu", seed: int = 0) -> list[dict]:
    """Train the same encoder/decoder with each quantizer for `steps`; held-out quality of each."""
    config = TokenizerConfig()
    train = dataclasses.replace(TrainConfig(), steps=steps, seed=seed)
    rows = []
    for name, make in (
        ("minitok VectorQuantizer", lambda: None),
        ("vector-quantize-pytorch VectorQuantize", lambda: LucidrainsQuantizer(config)),
    ):
        start = time.perf_counter()
        tokenizer, _ = train_tokenizer(
            config, train, device=device, progress=False, quantizer=make()
        )
        seconds = time.perf_counter() - start
        rows.append(
            {
                "what": name,
                "steps": steps,
                "seconds": seconds,
                "num_codes": config.num_codes,
                **tokenizer_quality(tokenizer),
            }
        )
    return rows


def run(device: str = "cpu", quick: bool = False, seed: int = 0) -> list[dict]:
    """The shipped tokenizer's row, then one row per quantizer of the same-budget comparison."""
    steps = QUICK_STEPS if quick else TrainConfig().steps
    return [quality_row(device), *comparison_rows(steps, device, seed)]


def report(rows: list[dict], device: str = "cpu") -> str:
    """The rows as the lines this script prints."""
    shipped, ours, theirs = rows
    lines = ["shipped tokenizer, held-out digits:"]
    lines += [f"  {line}" for line in quality_lines(shipped, shipped["num_codes"])]
    lines.append(
        f"same budget: {ours['steps']} steps, same encoder/decoder/seed/batches, on {device}"
        f"{' (train_tokenizer trains on one CPU thread)' if device == 'cpu' else ''}:"
    )
    for row in (ours, theirs):
        used = round(row["usage"] * row["num_codes"])
        lines.append(
            f"  {row['what']:<40} test MSE {row['mse']:.4f}, usage {used}/{row['num_codes']} "
            f"({100 * row['usage']:.1f}%), recon accuracy {100 * row['acc_recon']:.1f}%, "
            f"{row['seconds']:.0f} s"
        )
    lines.append(
        f"  ratio minitok / vector-quantize-pytorch: MSE {ours['mse'] / theirs['mse']:.2f} "
        f"(goal <= 1.00), usage {ours['usage'] / theirs['usage']:.2f} (goal >= 1.00)"
    )
    if ours["steps"] != TrainConfig().steps:
        lines.append(f"  (a smoke run: the goal is set for the full {TrainConfig().steps:,} steps)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.splitlines()[0], f"{QUICK_STEPS} training steps per "
                          f"quantizer instead of {TrainConfig().steps}")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda, but torch.cuda.is_available() is False")
    print(report(run(args.device, args.quick, args.seed), args.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
