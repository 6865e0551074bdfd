"""Generation with a KV cache against recomputing the whole prefix every step.

Recomputing is how textbook samplers and nanoGPT's `generate` work: to produce token t they
run the model on all t tokens again, so n tokens cost 1 + 2 + ... + n = O(n^2) token-passes.
With a KV cache the prompt is run once and every later step runs one token: O(n). Same
model, same seed, same prompt, and the script asserts that both produce the same tokens.

    python -m minitok.bench.kv_cache            # 64, 256 and 1024 new tokens
    python -m minitok.bench.kv_cache --quick    # 64 and 256 only
    python -m minitok.bench.kv_cache --threads 2

Goal: at least 5x at 256 tokens (batch 1, CPU, a small model), growing with length.
`run()` returns the rows, so other scripts (minitok.bench) can import it.
"""

from __future__ import annotations

import sys
import time

import torch

from minitok.evaluate import count_forward
from minitok.tools.bench import bench_parser
from minitok.transformer import Transformer, TransformerConfig, generate

LENGTHS = (64, 256, 1024)
QUICK_LENGTHS = (64, 256)
PROMPT_LEN = 1  # e.g. a class token: generation starts from one token


def bench_config(max_new_tokens: int) -> TransformerConfig:
    """A small GPT (4.3M parameters at 1024 tokens): 2 layers, 6 heads, 384 channels.

    Few, wide layers: at batch 1 a decode step is a chain of small ops whose fixed cost
    does not depend on the length, so a model this size shows what the cache saves.
    """
    return TransformerConfig(vocab_size=512, block_size=PROMPT_LEN + max_new_tokens,
                             n_layer=2, n_head=6, n_embd=384)


def time_generation(model: Transformer, prompt: torch.Tensor, n: int, use_cache: bool,
                    repeats: int) -> tuple[float, torch.Tensor, int]:
    """Best-of-`repeats` wall time of generating n tokens; the tokens; forward passes used."""
    best = float("inf")
    for _ in range(repeats):
        with count_forward(model) as stats:
            start = time.perf_counter()
            tokens = generate(model, prompt, n, use_cache=use_cache)
            best = min(best, time.perf_counter() - start)
    return best, tokens, stats["passes"]


def run(lengths=LENGTHS, seed: int = 0, threads: int | None = None) -> list[dict]:
    """Time cached and recomputing generation at each length; one row per length."""
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = Transformer(bench_config(max(lengths))).eval()
    prompt = torch.zeros(1, PROMPT_LEN, dtype=torch.long)
    generate(model, prompt, 8)  # warm-up: first calls pay for allocations
    generate(model, prompt, 8, use_cache=False)
    rows = []
    for n in lengths:
        repeats = 3 if n <= 256 else 1  # the same for both ways, so the ratio stays fair
        t_cache, out_cache, passes_cache = time_generation(model, prompt, n, True, repeats)
        t_full, out_full, passes_full = time_generation(model, prompt, n, False, repeats)
        assert torch.equal(out_cache, out_full), f"cached and recomputed tokens differ at n={n}"
        rows.append({
            "tokens": n,
            "cached_ms_per_token": 1e3 * t_cache / n,
            "recompute_ms_per_token": 1e3 * t_full / n,
            "speedup": t_full / t_cache,
            "forward_passes": passes_cache,
            "token_passes_cached": PROMPT_LEN + n - 1,
            "token_passes_recompute": sum(range(PROMPT_LEN, PROMPT_LEN + n)),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    args = bench_parser(__doc__.split("\n")[0], "64 and 256 tokens only", device=False,
                        threads="torch threads (default 1: batch-1 decoding is a chain of tiny "
                                "ops, and extra threads on a shared CPU mostly add waiting)"
                        ).parse_args(argv)
    rows = run(QUICK_LENGTHS if args.quick else LENGTHS, seed=args.seed, threads=args.threads)
    config = bench_config(1)
    print(f"KV cache vs recompute, batch 1, CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {config.n_layer} layers x {config.n_head} heads "
          f"x {config.n_embd} channels, vocab {config.vocab_size}")
    for r in rows:
        print(f"{r['tokens']:5d} tokens: cached {r['cached_ms_per_token']:7.2f} ms/token, "
              f"recompute {r['recompute_ms_per_token']:7.2f} ms/token, "
              f"speedup {r['speedup']:5.1f}x  "
              f"(token-passes {r['token_passes_cached']} vs {r['token_passes_recompute']}; "
              f"same tokens out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
