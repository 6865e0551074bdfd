"""Lesson 01: vector quantization, the step that turns continuous vectors into tokens.

A codebook is a (K, D) table of vectors. Quantizing a vector z means replacing it by its
nearest codebook row, and the *index* of that row is the token:

    idx = argmin_k ||z - e_k||^2

Everything else in the course (the tokenizer, the transformers that model tokens) stands on
this one lookup, so it is written here with care for memory, precision and bad input:

- memory: distances come from the expansion ||z||^2 - 2 z.e + ||e||^2, one (N, K) matrix
  product instead of an (N, K, D) broadcast, and rows of z are processed in chunks so the
  (chunk, K) matrix held at once stays small;
- precision: distances are computed in float32 even under autocast (in bf16 the three terms
  nearly cancel and a few percent of vectors would get the wrong code);
- bad input: every public function says which argument is wrong and what it expected.
"""

from __future__ import annotations

import math

import torch

# With chunk_size=None, nearest_code takes as many rows at a time as keep the (chunk, K)
# distance matrix at about this many elements (2^24 floats = 64 MiB in float32). Measured on
# a 2-core CPU at N = 65,536, K = 16,384, D = 8 (minitok/bench/nearest_code.py), chunks of
# 256 to 8,192 rows ran equally fast, and about twice as fast as torch.cdist's (N, K) matrix.
DISTANCES_PER_CHUNK = 2**24


# --------------------------------------------------------------------------- input checks


def _check_float_tensor(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _check_codebook(codebook) -> None:
    _check_float_tensor(codebook, "codebook")
    if codebook.dim() != 2:
        raise ValueError(f"codebook must be (K, D), got shape {tuple(codebook.shape)}")
    if codebook.shape[0] == 0:
        raise ValueError(f"codebook must have at least one code, got K = 0 (shape {tuple(codebook.shape)})")
    if codebook.shape[1] == 0:
        raise ValueError(f"codebook's vectors must have D >= 1, got shape {tuple(codebook.shape)}")


def _check_pair(z, codebook) -> None:
    """Clear errors for the inputs of a nearest-code lookup: z (..., D), codebook (K, D)."""
    _check_float_tensor(z, "z")
    _check_codebook(codebook)
    if z.dim() < 1:
        raise ValueError("z must have a last dimension D, got a 0-d tensor")
    if z.shape[-1] != codebook.shape[1]:
        raise ValueError(
            f"z's last dimension ({z.shape[-1]}) must equal the codebook's D "
            f"({codebook.shape[1]}): z {tuple(z.shape)}, codebook {tuple(codebook.shape)}"
        )
    if z.numel() == 0:
        raise ValueError(f"z is empty (shape {tuple(z.shape)}): nothing to quantize")
    if z.device != codebook.device:
        raise ValueError(f"z is on {z.device} but codebook is on {codebook.device}")


def _check_finite(x: torch.Tensor, name: str) -> None:
    """NaN or inf would make every distance NaN and argmin would pick a code at random."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or inf values: no nearest code is defined")


# --------------------------------------------------------------------------- the lookup


def squared_distances(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """All squared distances ||z_i - e_k||^2 for z (N, D) and codebook (K, D), as (N, K).

    The expansion ||z||^2 - 2 z.e + ||e||^2 needs one (N, K) matrix product, never the
    (N, K, D) tensor that `(z[:, None] - codebook[None]) ** 2` would build. It is computed in
    float32 (or float64 if given) even under autocast: in bf16 the three terms are large and
    nearly cancel, and a few percent of vectors would get the wrong code.
    """
    _check_pair(z, codebook)
    if z.dim() != 2:
        raise ValueError(f"z must be (N, D), got shape {tuple(z.shape)}")
    dtype = _distance_dtype(z, codebook)
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = z.to(dtype)  # (N, D)
        codebook = codebook.to(dtype)  # (K, D)
        z_sq = (z * z).sum(dim=1, keepdim=True)  # (N, 1)
        e_sq = (codebook * codebook).sum(dim=1)  # (K,)
        cross = z @ codebook.t()  # (N, K)
        return z_sq - 2.0 * cross + e_sq  # (N, K)


def _distance_dtype(z: torch.Tensor, codebook: torch.Tensor) -> torch.dtype:
    """float64 if either input is float64, else float32: never bf16 or fp16 (see module doc)."""
    return torch.float64 if torch.float64 in (z.dtype, codebook.dtype) else torch.float32


def default_chunk_size(num_codes: int) -> int:
    """Rows per chunk that keep a (chunk, K) distance matrix at about DISTANCES_PER_CHUNK."""
    return max(1, DISTANCES_PER_CHUNK // num_codes)


def nearest_code(
    z: torch.Tensor, codebook: torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    """Index of the nearest codebook row for every vector in z.

    z: (..., D) any leading shape; codebook: (K, D). Returns int64 indices of shape
    z.shape[:-1]. Rows of z are processed `chunk_size` at a time (None: a size that keeps the
    (chunk, K) distance matrix at about DISTANCES_PER_CHUNK elements), so the memory held at
    once is (chunk_size, K) instead of (N, K); the answer does not depend on the chunk size.
    """
    _check_pair(z, codebook)
    if chunk_size is None:
        chunk_size = default_chunk_size(codebook.shape[0])
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    _check_finite(z, "z")
    _check_finite(codebook, "codebook")

    flat = z.reshape(-1, z.shape[-1])  # (N, D)
    indices = torch.empty(flat.shape[0], dtype=torch.long, device=z.device)  # (N,)
    dtype = _distance_dtype(z, codebook)
    # Indices have no gradient, so no autograd graph; and no autocast: float32 distances.
    with torch.no_grad(), torch.autocast(device_type=z.device.type, enabled=False):
        codebook = codebook.to(dtype)  # (K, D)
        e_sq = (codebook * codebook).sum(dim=1)  # (K,)
        # One (chunk, K) buffer, reused by every chunk: allocating a fresh one each time
        # costs page faults that can take as long as the arithmetic.
        rows = min(chunk_size, flat.shape[0])
        scores = torch.empty(rows, codebook.shape[0], dtype=dtype, device=z.device)  # (c, K)
        for start in range(0, flat.shape[0], chunk_size):
            block = flat[start : start + chunk_size].to(dtype)  # (n, D)
            n = block.shape[0]
            # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, and ||z||^2 is the same for every
            # code, so the argmin needs only ||e||^2 - 2 z.e: one fused product-and-add.
            torch.addmm(e_sq, block, codebook.t(), alpha=-2.0, out=scores[:n])  # (n, K)
            indices[start : start + n] = scores[:n].argmin(dim=1)  # (n,)
    return indices.reshape(z.shape[:-1])


def lookup(indices: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The code vectors of integer indices: (...,) -> (..., D). Turns tokens back into vectors."""
    _check_codebook(codebook)
    if not isinstance(indices, torch.Tensor):
        raise TypeError(f"indices must be a torch.Tensor, got {type(indices).__name__}")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise TypeError(f"indices must be an integer tensor, got dtype {indices.dtype}")
    if indices.device != codebook.device:
        raise ValueError(f"indices is on {indices.device} but codebook is on {codebook.device}")
    if indices.numel() and (indices.min() < 0 or indices.max() >= codebook.shape[0]):
        raise ValueError(
            f"indices must lie in [0, {codebook.shape[0] - 1}], "
            f"got values in [{int(indices.min())}, {int(indices.max())}]"
        )
    return codebook[indices]  # (..., D)


def quantize(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize vectors (..., D) or a feature map (B, D, H, W): return (quantized, indices).

    For a 4-D input the channels are the vectors: the map is read as
    z.permute(0, 2, 3, 1), so indices come back as a (B, H, W) grid of tokens and the
    quantized map keeps z's (B, D, H, W) layout. Other inputs quantize their last dimension.
    """
    if isinstance(z, torch.Tensor) and z.dim() == 4:
        _check_codebook(codebook)
        if z.shape[1] != codebook.shape[1]:
            raise ValueError(
                f"a 4-d z is read as a feature map (B, C, H, W) whose C channels are the "
                f"vectors: C = {z.shape[1]} must equal the codebook's D = {codebook.shape[1]} "
                f"(z {tuple(z.shape)}, codebook {tuple(codebook.shape)})"
            )
        channels_last = z.permute(0, 2, 3, 1)  # (B, H, W, C)
        indices = nearest_code(channels_last, codebook)  # (B, H, W)
        quantized = lookup(indices, codebook).permute(0, 3, 1, 2)  # (B, C, H, W)
        return quantized.to(z.dtype), indices
    indices = nearest_code(z, codebook)  # (...,)
    return lookup(indices, codebook).to(z.dtype), indices  # (..., D), (...,)


# --------------------------------------------------------------------------- usage


def _check_indices(indices: torch.Tensor, num_codes: int) -> None:
    if isinstance(num_codes, bool) or not isinstance(num_codes, int) or num_codes < 1:
        raise ValueError(f"num_codes must be a positive int, got {num_codes!r}")
    if not isinstance(indices, torch.Tensor):
        raise TypeError(f"indices must be a torch.Tensor, got {type(indices).__name__}")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise TypeError(f"indices must be an integer tensor, got dtype {indices.dtype}")
    if indices.numel() == 0:
        raise ValueError("indices is empty: usage is undefined")
    if indices.min() < 0 or indices.max() >= num_codes:
        raise ValueError(
            f"indices must lie in [0, {num_codes - 1}], "
            f"got values in [{int(indices.min())}, {int(indices.max())}]"
        )


def code_counts(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    """How many times each code was chosen: a (K,) int64 histogram."""
    _check_indices(indices, num_codes)
    return torch.bincount(indices.flatten().long(), minlength=num_codes)  # (K,)


def codebook_usage(indices: torch.Tensor, num_codes: int) -> float:
    """Fraction of the K codes used at least once: 1.0 means every code is used."""
    return (code_counts(indices, num_codes) > 0).sum().item() / num_codes


def perplexity(indices: torch.Tensor, num_codes: int) -> float:
    """exp(entropy) of the code histogram: the 'effective number of codes' in use.

    With p_k the fraction of vectors given code k, perplexity = exp(-sum_k p_k log p_k),
    where codes never used contribute nothing (0 log 0 = 0). It is K when every code is used
    equally often and 1 when a single code takes everything.
    """
    p = code_counts(indices, num_codes).double() / indices.numel()  # (K,)
    p = p[p > 0]  # (used,)
    return math.exp(-(p * p.log()).sum().item())


# --------------------------------------------------------------------------- k-means


def kmeans_step(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """One Lloyd step: give each vector its nearest code, move each code to its vectors' mean.

    vectors: (N, D), codebook: (K, D); returns a new (K, D) codebook (the argument is not
    changed). A code that no vector chose keeps its place: its mean would be 0 / 0.
    """
    _check_float_tensor(vectors, "vectors")
    if vectors.dim() != 2:
        raise ValueError(f"vectors must be (N, D), got shape {tuple(vectors.shape)}")
    indices = nearest_code(vectors, codebook)  # (N,)
    vectors = vectors.to(codebook.dtype)
    sums = torch.zeros_like(codebook).index_add_(0, indices, vectors)  # (K, D)
    counts = torch.bincount(indices, minlength=codebook.shape[0])  # (K,)
    used = counts > 0  # (K,)
    new_codebook = codebook.clone()  # (K, D)
    new_codebook[used] = sums[used] / counts[used, None].to(codebook.dtype)
    return new_codebook


def kmeans(
    vectors: torch.Tensor, num_codes: int, iters: int = 10, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Fit a (K, D) codebook to vectors (N, D) with Lloyd's algorithm.

    Start from K *distinct* vectors drawn at random (image data repeats itself: a digit's
    blank background gives thousands of identical patches, and two equal codes would split
    their vectors by tie-breaking and one would never move), then run `iters` kmeans_steps.
    The codebook that minimises the mean squared quantization error is exactly what k-means
    looks for, which is why it is the classic way to start a codebook.
    """
    _check_float_tensor(vectors, "vectors")
    if vectors.dim() != 2:
        raise ValueError(f"vectors must be (N, D), got shape {tuple(vectors.shape)}")
    if vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise ValueError(f"vectors is empty (shape {tuple(vectors.shape)}): nothing to fit")
    if isinstance(num_codes, bool) or not isinstance(num_codes, int) or num_codes < 1:
        raise ValueError(f"num_codes must be a positive int, got {num_codes!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be a non-negative int, got {iters!r}")
    _check_finite(vectors, "vectors")
    distinct = torch.unique(vectors, dim=0)  # (U, D), sorted, so the draw is reproducible
    if distinct.shape[0] < num_codes:
        raise ValueError(
            f"num_codes={num_codes} is more than the {distinct.shape[0]} distinct vectors "
            f"(of N = {vectors.shape[0]}): k-means cannot place {num_codes} different codes"
        )
    start = torch.randperm(distinct.shape[0], generator=generator)[:num_codes]  # (K,)
    codebook = distinct[start.to(vectors.device)].clone()  # (K, D)
    for _ in range(iters):
        codebook = kmeans_step(vectors, codebook)
    return codebook
