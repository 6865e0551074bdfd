"""Lesson 02: finite scalar quantization (FSQ), a quantizer with no codebook to collapse.

FSQ (Mentzer et al., 2023) drops the learned codebook altogether. Each of the d channels of
z is squashed into a bounded range and rounded to one of L_i integer levels; the grid of all
level combinations *is* the codebook, fixed in advance:

    codebook size = L_1 * L_2 * ... * L_d       e.g. levels [8, 5, 5, 5] -> 1000 codes

Nothing is learned in the quantizer, so no code can die, and no codebook or commitment loss
is needed: rounding gets a straight-through gradient and the encoder does the rest. The
paper recommends levels [8, 6, 5] for 2^8 codes, [8, 5, 5, 5] for 2^10, [7, 5, 5, 5, 5] for 2^12.

Conventions (the same as vector-quantize-pytorch's `FSQ`): a code is the rounded level
divided by L // 2, so its entries lie in [-1, 1]; the index of a code reads its level indices
as digits of a mixed-radix number with the *first* channel the least significant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from minitok import validate
from minitok.vq import VQOutput, channels_last, usage_stats

BOUND_EPS = 1e-3  # keeps tanh's range slightly beyond the outermost levels, so they are reachable


def check_levels(levels: Sequence[int]) -> list[int]:
    """`levels` as a list, if it is a non-empty sequence (or 1-d tensor) of ints >= 2."""
    levels = levels.tolist() if isinstance(levels, Tensor) else levels
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or not levels or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in levels):
        raise ValueError(f"levels must be a non-empty list of ints >= 2, got {levels!r}")
    return list(levels)


def _levels_tensor(levels: Sequence[int], device: torch.device) -> Tensor:
    return torch.tensor(check_levels(levels), device=device)  # (d,) int64


def round_ste(x: Tensor) -> Tensor:
    """Round to the nearest integer going forward, identity going backward."""
    return x + (x.round() - x).detach()


def fsq_bound(z: Tensor, levels: Sequence[int], eps: float = BOUND_EPS) -> Tensor:
    """Squash each channel of z (..., d) into the range its L levels round into.

    tanh(z + shift) * half_l - offset, with half_l = (L - 1)(1 + eps) / 2. For odd L the
    result rounds to the integers -(L-1)/2 .. (L-1)/2. For even L there is no symmetric set
    of integers with L members, so everything is shifted by offset = 0.5 (rounding to
    -L/2 .. L/2 - 1) and `shift = atanh(offset / half_l)` keeps z = 0 mapping to 0.
    """
    level = _levels_tensor(levels, z.device).to(z.dtype)  # (d,)
    half_l = (level - 1) * (1 + eps) / 2  # (d,)
    offset = torch.where(level % 2 == 0, 0.5, 0.0).to(z.dtype)  # (d,)
    shift = torch.atanh(offset / half_l)  # (d,)
    return torch.tanh(z + shift) * half_l - offset  # (..., d)


def fsq_quantize(z: Tensor, levels: Sequence[int]) -> Tensor:
    """Quantize z (..., d) to the FSQ grid: bound, round with STE, scale into [-1, 1].

    The output has z's shape; every channel i takes one of levels[i] values, and the
    gradient passes straight through the rounding to z.
    """
    validate.float_tensor(z, "z", finite=True)  # an integer z would give 1.0 everywhere
    validate.last_dim(z, "z", len(check_levels(levels)), "len(levels)")
    half_width = _levels_tensor(levels, z.device) // 2  # (d,)
    return round_ste(fsq_bound(z, levels)) / half_width  # (..., d)


def codes_to_indices(codes: Tensor, levels: Sequence[int]) -> Tensor:
    """FSQ codes (..., d), each entry one of its channel's levels in [-1, 1] -> int64 (...,).

    A code off the grid (beyond [-1, 1], or more than a quarter of a level step from every
    level: float and bf16 rounding stay far below that) is refused, not read as another code.
    """
    validate.float_tensor(codes, "codes", finite=True)
    level = _levels_tensor(levels, codes.device)  # (d,)
    validate.last_dim(codes, "codes", len(level), "len(levels)")
    half_width = level // 2
    scaled = codes * half_width + half_width  # (..., d), the level digits in [0, L_i - 1]
    digits = scaled.round()  # (..., d)
    on_grid = ((scaled - digits).abs() <= 0.25) & (digits >= 0) & (digits < level)  # (..., d)
    if not bool(on_grid.all()):
        raise ValueError(f"codes must lie on the FSQ grid of levels {level.tolist()}: every "
                         f"entry one of its channel's levels k / (L // 2), in [-1, 1]")
    basis = torch.cumprod(torch.cat([level.new_ones(1), level[:-1]]), dim=0)  # (d,)
    return (digits.long() * basis).sum(dim=-1)  # (...,)


def indices_to_codes(indices: Tensor, levels: Sequence[int]) -> Tensor:
    """int indices (...,) -> FSQ codes (..., d): the inverse of `codes_to_indices`."""
    level = _levels_tensor(levels, indices.device)  # (d,)
    validate.index_tensor(indices, "indices", size=math.prod(level.tolist()))
    basis = torch.cumprod(torch.cat([level.new_ones(1), level[:-1]]), dim=0)  # (d,)
    digits = (indices[..., None] // basis) % level  # (..., d)
    half_width = level // 2
    return (digits - half_width).float() / half_width  # (..., d)


class FSQ(nn.Module):
    """FSQ with the same interface as `VectorQuantizer`.

    forward(z) takes (B, C, H, W) or (B, N, C) with C == dim and returns a VQOutput whose
    loss is zero (FSQ needs no auxiliary loss). When dim != len(levels), z is projected to
    len(levels) channels before quantization and back after it.
    """

    def __init__(self, levels: Sequence[int], dim: int | None = None):
        super().__init__()
        self.levels = check_levels(levels)
        code_dim = len(self.levels)
        self.dim = code_dim if dim is None else validate.positive_int(dim, "dim")
        projected = self.dim != code_dim
        self.in_proj = nn.Linear(self.dim, code_dim) if projected else nn.Identity()
        self.out_proj = nn.Linear(code_dim, self.dim) if projected else nn.Identity()

    @property
    def num_codes(self) -> int:
        """The size of the implicit codebook: the product of the levels."""
        return math.prod(self.levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, dim={self.dim}, num_codes={self.num_codes}"

    def forward(self, z: Tensor) -> VQOutput:
        z_code = self.in_proj(channels_last(z, self.dim))  # (..., d)
        # tanh and rounding in float32 even under autocast: bf16 would misplace level edges.
        with torch.autocast(device_type=z.device.type, enabled=False):
            codes = fsq_quantize(z_code.float(), self.levels)  # (..., d)
            indices = codes_to_indices(codes.detach(), self.levels)  # (B, H, W) or (B, N)
        quantized = self.out_proj(codes.to(z_code.dtype))  # (..., dim)
        if z.dim() == 4:
            quantized = quantized.permute(0, 3, 1, 2)  # (B, dim, H, W)
        perplexity, usage = usage_stats(indices, self.num_codes)
        loss = z.new_zeros((), dtype=torch.float32)
        return VQOutput(quantized, indices, loss, perplexity, usage)

    def codes(self, indices: Tensor) -> Tensor:
        """Decoder-side vectors of tokens: (B, H, W) -> (B, dim, H, W); (B, N) -> (B, N, dim)."""
        validate.tensor(indices, "indices", dim=(2, 3))
        vectors = self.out_proj(indices_to_codes(indices, self.levels))  # (..., dim)
        return vectors.permute(0, 3, 1, 2) if indices.dim() == 3 else vectors
