"""Lesson 01: vector quantization, the step that turns continuous vectors into tokens.

A codebook is a (K, D) table of vectors. Quantizing a vector z means replacing it by its
nearest codebook row, and the *index* of that row is the token:

    idx = argmin_k ||z - e_k||^2

Everything else in the course (the tokenizer, the transformers that model tokens) stands on
this one lookup, so it is written here with care for memory, precision and bad input.
"""

from __future__ import annotations

import math

import torch


def _check_pair(z: torch.Tensor, codebook: torch.Tensor) -> None:
    """Clear errors for the inputs of a nearest-code lookup."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
    if not isinstance(codebook, torch.Tensor):
        raise TypeError(f"codebook must be a torch.Tensor, got {type(codebook).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"z must be a floating-point tensor, got dtype {z.dtype}")
    if not codebook.is_floating_point():
        raise TypeError(f"codebook must be a floating-point tensor, got dtype {codebook.dtype}")
    if codebook.dim() != 2:
        raise ValueError(f"codebook must be (K, D), got shape {tuple(codebook.shape)}")
    if codebook.shape[0] == 0:
        raise ValueError("codebook must have at least one code (K = 0)")
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


def squared_distances(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """All squared distances ||z_i - e_k||^2 for z (N, D) and codebook (K, D), as (N, K).

    The expansion ||z||^2 - 2 z.e + ||e||^2 needs one (N, K) matrix product, never the
    (N, K, D) tensor that `(z[:, None] - codebook[None]) ** 2` would build. It is computed in
    float32 (or float64 if given) even under autocast: in bf16 the three terms are large and
    nearly cancel, and a few percent of vectors would get the wrong code.
    """
    dtype = torch.float64 if torch.float64 in (z.dtype, codebook.dtype) else torch.float32
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = z.to(dtype)
        codebook = codebook.to(dtype)
        z_sq = (z * z).sum(dim=1, keepdim=True)  # (N, 1)
        e_sq = (codebook * codebook).sum(dim=1)  # (K,)
        cross = z @ codebook.t()  # (N, K)
        return z_sq - 2.0 * cross + e_sq  # (N, K)


def nearest_code(
    z: torch.Tensor, codebook: torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    """Index of the nearest codebook row for every vector in z.

    z: (..., D) any leading shape; codebook: (K, D). Returns int64 indices of shape
    z.shape[:-1]. With `chunk_size`, rows of z are processed that many at a time, so the
    distance matrix held at once is (chunk_size, K) instead of (N, K): the answer is
    identical, the peak memory is bounded.
    """
    _check_pair(z, codebook)
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    flat = z.reshape(-1, z.shape[-1])  # (N, D)
    step = flat.shape[0] if chunk_size is None else chunk_size
    indices = torch.empty(flat.shape[0], dtype=torch.long, device=z.device)  # (N,)
    for start in range(0, flat.shape[0], step):
        block = flat[start : start + step]  # (n, D)
        indices[start : start + step] = squared_distances(block, codebook).argmin(dim=1)
    return indices.reshape(z.shape[:-1])


def lookup(indices: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The code vectors of integer indices: (...,) -> (..., D). The inverse of a lookup."""
    if indices.is_floating_point() or indices.dtype == torch.bool:
        raise TypeError(f"indices must be an integer tensor, got dtype {indices.dtype}")
    if indices.numel() and (indices.min() < 0 or indices.max() >= codebook.shape[0]):
        raise ValueError(
            f"indices must lie in [0, {codebook.shape[0] - 1}], "
            f"got values in [{int(indices.min())}, {int(indices.max())}]"
        )
    return codebook[indices]


def quantize(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize vectors (..., D) or a feature map (B, D, H, W): return (quantized, indices).

    For a 4-D input the channels are the vectors: the map is read as
    z.permute(0, 2, 3, 1), so indices come back as a (B, H, W) grid of tokens and the
    quantized map keeps z's (B, D, H, W) layout. Other inputs quantize their last dimension.
    """
    if isinstance(z, torch.Tensor) and z.dim() == 4:
        channels_last = z.permute(0, 2, 3, 1)  # (B, H, W, D)
        indices = nearest_code(channels_last, codebook)  # (B, H, W)
        quantized = lookup(indices, codebook).permute(0, 3, 1, 2)  # (B, D, H, W)
        return quantized.to(z.dtype), indices
    indices = nearest_code(z, codebook)  # (...,)
    return lookup(indices, codebook).to(z.dtype), indices


def _check_indices(indices: torch.Tensor, num_codes: int) -> None:
    if not isinstance(num_codes, int) or num_codes < 1:
        raise ValueError(f"num_codes must be a positive int, got {num_codes!r}")
    if indices.is_floating_point() or indices.dtype == torch.bool:
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
    return torch.bincount(indices.flatten(), minlength=num_codes)


def codebook_usage(indices: torch.Tensor, num_codes: int) -> float:
    """Fraction of the K codes used at least once: 1.0 means every code is used."""
    return (code_counts(indices, num_codes) > 0).sum().item() / num_codes


def perplexity(indices: torch.Tensor, num_codes: int) -> float:
    """exp(entropy) of the code histogram: the 'effective number of codes' in use.

    K when every code is used equally often, 1 when a single code takes everything.
    """
    p = code_counts(indices, num_codes).double() / indices.numel()  # (K,)
    p = p[p > 0]
    return math.exp(-(p * p.log()).sum().item())


def kmeans(
    vectors: torch.Tensor, num_codes: int, iters: int = 10, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Fit a (K, D) codebook to vectors (N, D) with Lloyd's algorithm.

    Start from K distinct random vectors, then alternate: assign each vector to its nearest
    code, move each code to the mean of its vectors. A code that loses all its vectors keeps
    its place. The codebook that minimises the mean squared quantization error is exactly
    what k-means looks for, which is why it is the classic way to start a codebook.
    """
    if vectors.dim() != 2:
        raise ValueError(f"vectors must be (N, D), got shape {tuple(vectors.shape)}")
    if not isinstance(num_codes, int) or not 1 <= num_codes <= vectors.shape[0]:
        raise ValueError(
            f"num_codes must be an int in [1, N={vectors.shape[0]}], got {num_codes!r}"
        )
    if not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be a non-negative int, got {iters!r}")
    start = torch.randperm(vectors.shape[0], generator=generator)[:num_codes]
    codebook = vectors[start.to(vectors.device)].clone()  # (K, D)
    for _ in range(iters):
        indices = nearest_code(vectors, codebook)  # (N,)
        sums = torch.zeros_like(codebook).index_add_(0, indices, vectors)  # (K, D)
        counts = torch.bincount(indices, minlength=num_codes)  # (K,)
        used = counts > 0
        codebook[used] = sums[used] / counts[used, None].to(vectors.dtype)
    return codebook
