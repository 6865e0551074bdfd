"""Peak memory and time of minitok's chunked nearest_code against torch.cdist(...).argmin.

    python -m minitok.bench.nearest_code                 # N = 65,536, K = 16,384, D = 8, CPU
    python -m minitok.bench.nearest_code --device cuda
    python -m minitok.bench.nearest_code --quick         # N = 8,192, K = 4,096

Goal (issue 2): nearest_code needs at most a quarter of cdist's peak memory and is no slower.
cdist builds the whole (N, K) float32 distance matrix (4 GiB at full size) before the argmin;
nearest_code holds one (chunk, K) block at a time.

How it measures:
- Peak memory, CPU: each method runs once in its own fresh Python process, which resets its
  peak-RSS mark, reads its resident memory just before the call and the peak (VmHWM) just
  after; the difference is what the call needed (or more, never less). Separate processes
  keep one method's allocations from hiding the other's.
- Peak memory, CUDA: torch.cuda.max_memory_allocated above what was allocated before.
- Time: both methods in this process, called in turn `repeats` times after a warm-up; the
  best time of each counts. Alternating them means a busy neighbour on a shared machine
  slows both, not just one. Both get identical inputs, and the script reports how many
  indices they disagree on (0 expected; a float32 near-tie could make it 1 or 2).

`run(...)` returns the measured rows, so other tools (`python -m minitok.bench`) can import
this module and print or record them.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch

from minitok.quantize import default_chunk_size, nearest_code
from minitok.tools.bench import bench_parser

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


def _proc_status_bytes(field: str) -> int | None:
    """A memory line of /proc/self/status (Linux), e.g. VmRSS or VmHWM, in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        return None
    return None


def _reset_peak_rss() -> None:
    """Start the peak-RSS mark (VmHWM) again from the current RSS, where Linux allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _rss_now() -> int:
    """Resident memory now: VmRSS on Linux, else the high-water mark (overstates the peak)."""
    value = _proc_status_bytes("VmRSS")
    return value if value is not None else _maxrss_bytes()


def _rss_peak() -> int:
    """Highest resident memory since the last reset: VmHWM on Linux, else ru_maxrss.

    ru_maxrss alone is not enough: Linux carries it across fork and exec, so a worker started
    by a process that once held 4 GiB would report 4 GiB. VmHWM belongs to the process's own
    memory map, which exec creates fresh.
    """
    value = _proc_status_bytes("VmHWM")
    return value if value is not None else _maxrss_bytes()


def _maxrss_bytes() -> int:
    """getrusage's high-water mark (Linux: KiB, macOS: bytes), for systems without /proc."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def peak_memory(method, n, k, d, device="cpu", chunk_size=None, seed=0) -> int:
    """Bytes one call of `method` needs above what this process held before it."""
    z, codebook = make_inputs(n, k, d, device, seed)
    small_z, small_codebook = make_inputs(64, 64, d, device, seed)
    call(method, small_z, small_codebook, chunk_size)  # warm-up: kernels, thread pools
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call(method, z, codebook, chunk_size)
        _sync(device)
        return torch.cuda.max_memory_allocated() - before
    _reset_peak_rss()
    before = _rss_now()
    call(method, z, codebook, chunk_size)
    return _rss_peak() - before


def _peak_memory_in_subprocess(method, n, k, d, device, chunk_size, seed) -> int:
    """Run `peak_memory` in a fresh interpreter, so its ru_maxrss is this method's alone."""
    args = [sys.executable, "-m", "minitok.tools.bench.nearest_code", "--worker", method,
            "--n", str(n), "--k", str(k), "--d", str(d), "--device", device,
            "--seed", str(seed)]
    if chunk_size is not None:
        args += ["--chunk-size", str(chunk_size)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker for {method} failed:\n{done.stderr}")
    return int(done.stdout.strip().splitlines()[-1])


def best_times(n, k, d, device="cpu", chunk_size=None, repeats=3, seed=0):
    """Best seconds per method over `repeats` alternating calls, and each method's indices."""
    z, codebook = make_inputs(n, k, d, device, seed)
    small_z, small_codebook = make_inputs(64, 64, d, device, seed)
    for method in METHODS:  # warm-up: kernels, thread pools
        call(method, small_z, small_codebook, chunk_size)
    seconds = {method: float("inf") for method in METHODS}
    indices = {}
    for _ in range(repeats):
        for method in METHODS:
            _sync(device)
            start = time.perf_counter()
            indices[method] = call(method, z, codebook, chunk_size)  # (N,)
            _sync(device)
            seconds[method] = min(seconds[method], time.perf_counter() - start)
    return seconds, indices


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
    peaks = {}
    for method in METHODS:
        if device.startswith("cuda"):
            peaks[method] = peak_memory(method, n, k, d, device, chunk_size, seed)
        else:
            peaks[method] = _peak_memory_in_subprocess(method, n, k, d, device, chunk_size, seed)
    seconds, indices = best_times(n, k, d, device, chunk_size, repeats, seed)
    rows = []
    for method in METHODS:
        rows.append({
            "method": method, "n": n, "k": k, "d": d, "device": device,
            "chunk_size": chunk_size if method == "nearest_code" else None,
            "seconds": seconds[method], "peak_bytes": peaks[method],
        })
    ours, ref = rows
    disagree = int((indices["nearest_code"] != indices["cdist"]).sum())
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
    if ratio["n"] != FULL["n"] or ratio["k"] != FULL["k"]:
        lines.append("  (a smoke run: the goals are set for the full size, N = 65,536, K = 16,384)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.splitlines()[0], "N=8,192, K=4,096 instead")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="rows per chunk for nearest_code (default: its own default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method")
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

    if args.worker:  # one method's peak memory, in this fresh process
        print(peak_memory(args.worker, args.n, args.k, args.d, args.device, args.chunk_size,
                          args.seed))
        return 0

    rows = run(args.device, args.quick, args.chunk_size, args.repeats, args.seed)
    print(report(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
