"""Peak memory and time of minitok's chunked nearest_code against torch.cdist(...).argmin.

    python benchmarks/bench_nearest_code.py                 # N = 65,536, K = 16,384, D = 8, CPU
    python benchmarks/bench_nearest_code.py --device cuda
    python benchmarks/bench_nearest_code.py --quick         # N = 8,192, K = 4,096

Goal (issue 2): nearest_code needs at most a quarter of cdist's peak memory and is no slower.
cdist builds the whole (N, K) float32 distance matrix (4 GiB at full size) before the argmin;
nearest_code holds one (chunk, K) block at a time.

How it measures:
- CPU: each method runs in its own fresh Python process, which reads its resident memory
  just before the call and its peak resident memory (ru_maxrss) just after it; the
  difference is what the call needed (or more, never less). Separate processes keep one
  method's allocations from hiding the other's.
- CUDA: torch.cuda.max_memory_allocated above what was allocated before the call.
- Time: the best of `repeats` calls (after one warm-up call on a small input), so a
  neighbour's burst on a shared machine hurts less. Both methods get identical inputs, and
  the script checks that they return the same indices (ties aside: it reports the count).

`run(...)` returns the measured rows, so other tools (e.g. a later `minitok.bench`) can
import this file and print or record them.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the checkout's minitok
    sys.path.insert(0, str(ROOT))

from minitok.quantize import default_chunk_size, nearest_code  # noqa: E402

FULL = {"n": 65_536, "k": 16_384, "d": 8}
QUICK = {"n": 8_192, "k": 4_096, "d": 8}
METHODS = ("nearest_code", "cdist")


def make_inputs(n: int, k: int, d: int, device: str, seed: int = 0):
    """Standard normal vectors z (N, D) and codebook (K, D), drawn from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=gen).to(device)  # (N, D)
    codebook = torch.randn(k, d, generator=gen).to(device)  # (K, D)
    return z, codebook


def call(method: str, z: torch.Tensor, codebook: torch.Tensor, chunk_size: int | None):
    """One lookup by `method`: (N,) int64 indices."""
    if method == "nearest_code":
        return nearest_code(z, codebook, chunk_size=chunk_size)
    if method == "cdist":
        return torch.cdist(z, codebook).argmin(dim=1)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _maxrss_bytes() -> int:
    """The most resident memory this process has ever held (Linux: KiB, macOS: bytes)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _rss_bytes() -> int:
    """The resident memory this process holds now (Linux), else the high-water mark.

    Measuring the call's peak as (high-water mark after) - (resident now, before) can only
    overstate what the call needed, never hide it.
    """
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize()
    except OSError:
        return _maxrss_bytes()


def measure(method, n, k, d, device="cpu", chunk_size=None, repeats=3, seed=0) -> dict:
    """Time and peak memory of one method, measured in this process."""
    z, codebook = make_inputs(n, k, d, device, seed)
    small_z, small_codebook = make_inputs(64, 64, d, device, seed)
    call(method, small_z, small_codebook, chunk_size)  # warm-up: kernels, thread pools
    _sync(device)

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_bytes()
    start = time.perf_counter()
    indices = call(method, z, codebook, chunk_size)
    _sync(device)
    seconds = [time.perf_counter() - start]
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _maxrss_bytes() - before

    for _ in range(repeats - 1):
        start = time.perf_counter()
        call(method, z, codebook, chunk_size)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return {
        "method": method,
        "n": n,
        "k": k,
        "d": d,
        "device": device,
        "chunk_size": chunk_size if method == "nearest_code" else None,
        "seconds": min(seconds),
        "peak_bytes": peak,
        "indices": indices.cpu().tolist(),
    }


def _measure_in_subprocess(method, n, k, d, device, chunk_size, repeats, seed) -> dict:
    """Run `measure` in a fresh interpreter, so its ru_maxrss is this method's alone."""
    args = [sys.executable, str(Path(__file__).resolve()), "--worker", method,
            "--n", str(n), "--k", str(k), "--d", str(d), "--device", device,
            "--repeats", str(repeats), "--seed", str(seed)]
    if chunk_size is not None:
        args += ["--chunk-size", str(chunk_size)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker for {method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(device: str = "cpu", quick: bool = False, chunk_size: int | None = None,
        repeats: int = 3, seed: int = 0) -> list[dict]:
    """Measure both methods; return one row per method plus a 'ratio' row.

    The ratio row holds nearest_code / cdist for peak memory and time (goal: memory <= 0.25,
    time <= 1.0) and how many indices the two methods disagree on.
    """
    size = QUICK if quick else FULL
    n, k, d = size["n"], size["k"], size["d"]
    if chunk_size is None:
        chunk_size = default_chunk_size(k)
    rows = []
    for method in METHODS:
        if device.startswith("cuda"):
            row = measure(method, n, k, d, device, chunk_size, repeats, seed)
        else:
            row = _measure_in_subprocess(method, n, k, d, device, chunk_size, repeats, seed)
        rows.append(row)
    ours, ref = rows
    disagree = sum(a != b for a, b in zip(ours.pop("indices"), ref.pop("indices"), strict=True))
    rows.append({
        "method": "ratio nearest_code / cdist",
        "n": n, "k": k, "d": d, "device": device, "chunk_size": chunk_size,
        "seconds": ours["seconds"] / ref["seconds"],
        "peak_bytes": ours["peak_bytes"] / max(ref["peak_bytes"], 1),
        "disagreements": disagree,
    })
    return rows


def report(rows: list[dict]) -> str:
    """The rows as the lines this script prints."""
    ours, ref, ratio = rows
    mib = 2**20
    lines = [
        f"nearest_code vs torch.cdist(...).argmin: N={ratio['n']:,} K={ratio['k']:,} "
        f"D={ratio['d']} on {ratio['device']} ({torch.get_num_threads()} threads), "
        f"chunk_size={ratio['chunk_size']}",
        f"  nearest_code: {ours['seconds']:.3f} s, peak {ours['peak_bytes'] / mib:,.1f} MiB",
        f"  cdist:        {ref['seconds']:.3f} s, peak {ref['peak_bytes'] / mib:,.1f} MiB",
        f"  ratio: memory {ratio['peak_bytes']:.4f} (goal <= 0.25), "
        f"time {ratio['seconds']:.2f} (goal <= 1.00), "
        f"indices that differ: {ratio['disagreements']} of {ratio['n']:,}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--quick", action="store_true", help="N=8,192, K=4,096 instead")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="rows per chunk for nearest_code (default: its own default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--d", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda, but torch.cuda.is_available() is False")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.chunk_size is not None and args.chunk_size < 1:
        parser.error("--chunk-size must be >= 1")

    if args.worker:  # one method, in this process (see _measure_in_subprocess)
        row = measure(args.worker, args.n, args.k, args.d, args.device, args.chunk_size,
                      args.repeats, args.seed)
        print(json.dumps(row))
        return 0

    rows = run(args.device, args.quick, args.chunk_size, args.repeats, args.seed)
    print(report(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
