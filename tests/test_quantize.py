"""minitok.quantize (Lesson 01) against brute force, torch's kernels and vector-quantize-pytorch.

Facts tested here are in docs/references.md ("Vector quantization"). Every test runs
on the CPU and, when one is present, on CUDA (the `device` fixture).
"""

from __future__ import annotations

import pytest
import torch
from vector_quantize_pytorch import VectorQuantize

from minitok import quantize
from minitok.data import load_digits
from minitok.quantize import (
    code_counts,
    codebook_usage,
    default_chunk_size,
    kmeans,
    kmeans_step,
    lookup,
    nearest_code,
    perplexity,
    squared_distances,
)


def randn(*shape, gen, device, scale=1.0, dtype=torch.float32):
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(device, dtype)


def whole_numbers(*shape, gen, device, low=-4, high=4):
    """Small whole numbers as float32 vectors: every squared distance between such vectors
    (sums of products far below 2^24) is exact in float32, in whatever order a kernel adds
    them, so two ways of computing the lookup agree exactly by construction, not by luck.
    (On random normal vectors a chunk of rows and the whole matrix go through different
    matrix-product kernels: their distances differed by 4e-6 at 2 threads, a quarter of the
    smallest best-to-second gap of the default-chunking case.)"""
    return torch.randint(low, high + 1, shape, generator=gen).to(device, torch.float32)


def brute_force_distances(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """||z_i - e_k||^2 by the (N, K, D) broadcast in float64: slow, but no cancellation."""
    diff = z.double()[:, None, :] - codebook.double()[None, :, :]  # (N, K, D)
    return (diff * diff).sum(dim=-1)  # (N, K)


def assert_same_codes(got, expected, z, codebook, rtol=1e-5, max_ties=0.001):
    """got == expected, except where the two codes are equally near in exact arithmetic.

    A disagreement is accepted only if the float64 distances of z_i to both codes differ by
    less than rtol * (||z_i||^2 + ||e||^2) (float32 rounding of the expansion), and such ties
    must stay rare (at most max_ties of the vectors), so a systematic error still fails.
    """
    z = z.reshape(-1, z.shape[-1])
    got, expected = got.reshape(-1).cpu(), expected.reshape(-1).cpu()
    assert got.shape == expected.shape
    differ = (got != expected).nonzero().flatten()
    if differ.numel() == 0:
        return
    d = brute_force_distances(z[differ].cpu(), codebook.cpu())  # (M, K)
    rows = torch.arange(differ.numel())
    gap = (d[rows, got[differ]] - d[rows, expected[differ]]).abs()
    scale = (z[differ].cpu().double() ** 2).sum(1) + (codebook.cpu().double() ** 2).sum(1).max()
    assert (gap <= rtol * scale).all(), f"codes differ by more than rounding: gaps {gap.tolist()}"
    assert differ.numel() <= max_ties * got.numel(), f"{differ.numel()} near-ties: too many"


CASES = {
    # name: (N, K, D, how z and codes are made)
    "normal": (2000, 300, 16, "normal"),
    "llamagen_unit_sphere": (2000, 4096, 8, "unit"),  # LlamaGen: l2-normalised, D = 8
    "offset": (1000, 200, 4, "offset"),  # large norms, small differences: cancellation
}


def make_case(name, gen, device):
    n, k, d, kind = CASES[name]
    z = randn(n, d, gen=gen, device=device)
    codebook = randn(k, d, gen=gen, device=device)
    if kind == "unit":
        z = torch.nn.functional.normalize(z, dim=-1)
        codebook = torch.nn.functional.normalize(codebook, dim=-1)
    if kind == "offset":
        z, codebook = z + 20.0, codebook + 20.0
    return z, codebook


# --------------------------------------------------------------------------- the lookup


@pytest.mark.parametrize("case", list(CASES))
def test_nearest_code_equals_float64_brute_force(device, gen, case):
    z, codebook = make_case(case, gen, device)
    got = nearest_code(z, codebook)
    assert got.dtype == torch.int64 and got.shape == (z.shape[0],) and got.device == z.device
    expected = brute_force_distances(z.cpu(), codebook.cpu()).argmin(dim=1)
    assert_same_codes(got, expected, z, codebook)


@pytest.mark.parametrize("case", list(CASES))
def test_nearest_code_equals_cdist_argmin(device, gen, case):
    z, codebook = make_case(case, gen, device)
    expected = torch.cdist(z.double(), codebook.double()).argmin(dim=1)
    assert_same_codes(nearest_code(z, codebook), expected, z, codebook)


def test_nearest_code_float64_inputs_match_brute_force_exactly(device, gen):
    z, codebook = make_case("normal", gen, device)
    got = nearest_code(z.double(), codebook.double())
    expected = brute_force_distances(z, codebook).argmin(dim=1)
    assert torch.equal(got.cpu(), expected.cpu())


def test_squared_distances_equal_brute_force(device, gen):
    z, codebook = make_case("normal", gen, device)
    got = squared_distances(z, codebook)
    assert got.shape == (z.shape[0], codebook.shape[0]) and got.dtype == torch.float32
    torch.testing.assert_close(got.double().cpu(), brute_force_distances(z, codebook).cpu(),
                               rtol=1e-5, atol=1e-4)


def test_nearest_code_keeps_leading_shape(device, gen):
    z = randn(2, 3, 5, 4, gen=gen, device=device)
    codebook = randn(7, 4, gen=gen, device=device)
    got = nearest_code(z, codebook)
    assert got.shape == (2, 3, 5)
    assert torch.equal(got.reshape(-1), nearest_code(z.reshape(-1, 4), codebook))


@pytest.mark.parametrize("layout", ["fmap", "sequence"])
def test_matches_vector_quantize_pytorch(device, gen, layout):
    """vector-quantize-pytorch as a plain nearest-neighbour quantizer (docs/references.md)."""
    dim, num_codes = 16, 512
    codebook = randn(num_codes, dim, gen=gen, device=device)
    ref = VectorQuantize(
        dim=dim,
        codebook_size=num_codes,
        rotation_trick=False,
        ema_update=False,
        threshold_ema_dead_code=0,
        kmeans_init=False,
        commitment_weight=0.25,
        accept_image_fmap=(layout == "fmap"),
    ).to(device)
    with torch.no_grad():
        ref.codebook = codebook
    ref.train()
    if layout == "fmap":
        z = randn(4, dim, 6, 10, gen=gen, device=device)  # (B, C, H, W)
    else:
        z = randn(4, 60, dim, gen=gen, device=device)  # (B, N, D)
    ref_quantized, ref_indices, _ = ref(z)
    quantized, indices = quantize.quantize(z, codebook)
    assert indices.shape == ref_indices.shape
    assert_same_codes(
        indices, ref_indices, z.permute(0, 2, 3, 1) if layout == "fmap" else z, codebook
    )
    assert torch.equal(indices.cpu(), ref_indices.cpu())  # no near-ties in this case
    torch.testing.assert_close(quantized, ref_quantized, rtol=0, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 7, 256, 1999, 2000, 5000])
def test_chunked_equals_unchunked_exactly(device, gen, chunk_size):
    z = whole_numbers(2000, 16, gen=gen, device=device)
    codebook = whole_numbers(300, 16, gen=gen, device=device)
    whole = nearest_code(z, codebook, chunk_size=z.shape[0])
    assert torch.equal(nearest_code(z, codebook, chunk_size=chunk_size), whole)


def test_default_chunking_covers_every_row(device, gen):
    codebook = whole_numbers(4096, 8, gen=gen, device=device)
    z = whole_numbers(3 * default_chunk_size(4096) + 5, 8, gen=gen, device=device)  # 4 chunks
    assert torch.equal(nearest_code(z, codebook), nearest_code(z, codebook, chunk_size=len(z)))


def test_nearest_code_of_no_vectors_is_no_indices(device, gen):
    """An empty batch of vectors has an empty answer (every chunk loop simply runs no step)."""
    codebook = randn(5, 4, gen=gen, device=device)
    got = nearest_code(torch.zeros(0, 4, device=device), codebook)
    assert got.shape == (0,) and got.dtype == torch.int64
    quantized, indices = quantize.quantize(torch.zeros(2, 0, 4, device=device), codebook)
    assert quantized.shape == (2, 0, 4) and indices.shape == (2, 0)


def test_nearest_code_accepts_tensors_that_require_grad(device, gen):
    """A training loop passes its nn.Parameter codebook: the lookup must not try to backprop."""
    z = randn(300, 8, gen=gen, device=device).requires_grad_()
    codebook = torch.nn.Parameter(randn(50, 8, gen=gen, device=device))
    got = nearest_code(z, codebook, chunk_size=64)
    assert not got.requires_grad
    assert torch.equal(got, nearest_code(z.detach(), codebook.detach()))


def bf16_trap(gen, device, n=4000, k=256, d=64):
    """N(0, 1) vectors and codes, D = 64 (docs/references.md: bf16 gets ~4.5% wrong)."""
    return randn(n, d, gen=gen, device=device), randn(k, d, gen=gen, device=device)


def naive_distances(z, codebook):
    """The expansion with no precision care: under autocast the matmul runs in bf16."""
    return (z * z).sum(1, keepdim=True) - 2 * z @ codebook.t() + (codebook * codebook).sum(1)


def test_bf16_autocast_gives_fp32_indices(device, gen):
    z, codebook = bf16_trap(gen, device)
    reference = nearest_code(z, codebook)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        naive = naive_distances(z, codebook).argmin(dim=1)
        got = nearest_code(z, codebook)
        distances = squared_distances(z, codebook)
    # The trap is real: with the product in bf16, some vectors get another code.
    wrong = (naive != reference).float().mean().item()
    assert wrong > 0.002, f"bf16 autocast distances got only {wrong:.2%} wrong"
    assert torch.equal(got, reference)
    assert distances.dtype == torch.float32
    exact = brute_force_distances(z, codebook).argmin(dim=1)
    assert_same_codes(distances.argmin(dim=1), exact, z, codebook)


def test_all_bf16_distances_pick_wrong_codes_for_a_few_percent(device, gen):
    """docs/references.md: bf16 distances, N(0, 1) and D = 64, are wrong for a few percent."""
    z, codebook = bf16_trap(gen, device)
    reference = nearest_code(z, codebook)
    wrong = (naive_distances(z.bfloat16(), codebook.bfloat16()).argmin(dim=1) != reference)
    assert 0.01 < wrong.float().mean().item() < 0.1
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        assert torch.equal(nearest_code(z, codebook), reference)


def test_low_precision_inputs_are_compared_in_float32(device, gen):
    z, codebook = bf16_trap(gen, device)
    z16, codebook16 = z.bfloat16(), codebook.bfloat16()
    got = nearest_code(z16, codebook16)
    assert torch.equal(got, nearest_code(z16.float(), codebook16.float()))
    assert squared_distances(z16, codebook16).dtype == torch.float32


# --------------------------------------------------------------------------- feature maps


def test_quantize_feature_map_follows_permute_order(device, gen):
    b, c, h, w = 2, 3, 4, 5  # all different, so a wrong reshape cannot pass
    z = randn(b, c, h, w, gen=gen, device=device)
    codebook = randn(11, c, gen=gen, device=device)
    quantized, indices = quantize.quantize(z, codebook)
    assert indices.shape == (b, h, w) and quantized.shape == (b, c, h, w)
    expected = nearest_code(z.permute(0, 2, 3, 1).reshape(-1, c), codebook).reshape(b, h, w)
    assert torch.equal(indices, expected)
    for bi, hi, wi in [(0, 0, 0), (1, 3, 4), (0, 2, 1), (1, 0, 3)]:
        assert indices[bi, hi, wi] == nearest_code(z[bi, :, hi, wi], codebook)
        assert torch.equal(quantized[bi, :, hi, wi], codebook[indices[bi, hi, wi]])
    # the permutation matters: the flattening without it gives other tokens
    assert not torch.equal(nearest_code(z.reshape(-1, c), codebook).reshape(b, h, w), indices)


def test_quantize_vectors_and_lookup_round_trip(device, gen):
    codebook = randn(9, 4, gen=gen, device=device)
    quantized, indices = quantize.quantize(codebook[[3, 3, 8, 0]], codebook)
    assert torch.equal(indices.cpu(), torch.tensor([3, 3, 8, 0]))
    assert torch.equal(quantized, lookup(indices, codebook))
    assert quantize.quantize(codebook.bfloat16(), codebook)[0].dtype == torch.bfloat16


# --------------------------------------------------------------------------- usage


def test_usage_and_perplexity_extremes(device):
    k = 8
    uniform = torch.arange(k, device=device).repeat(5)
    single = torch.full((40,), 3, device=device)
    assert codebook_usage(uniform, k) == 1.0
    assert perplexity(uniform, k) == pytest.approx(k, rel=1e-12)
    assert codebook_usage(single, k) == 1 / k
    assert perplexity(single, k) == pytest.approx(1.0, abs=1e-12)


def test_perplexity_equals_exp_entropy_of_the_histogram(device, gen):
    indices = torch.randint(0, 6, (500,), generator=gen).pow(2).remainder(10).to(device)
    counts = torch.bincount(indices.cpu(), minlength=10)
    assert torch.equal(code_counts(indices, 10).cpu(), counts)
    expected = torch.distributions.Categorical(probs=counts.double()).entropy().exp().item()
    assert perplexity(indices, 10) == pytest.approx(expected, rel=1e-12)
    assert codebook_usage(indices, 10) == (counts > 0).sum().item() / 10
    # a known case: p = (1/2, 1/4, 1/4) has entropy 1.5 bits, perplexity 2^1.5
    assert perplexity(torch.tensor([0, 0, 1, 2], device=device), 3) == pytest.approx(2**1.5)


# --------------------------------------------------------------------------- k-means


def loop_kmeans_step(vectors, codebook):
    """One Lloyd step written the slow, obvious way (a reference for kmeans_step)."""
    indices = brute_force_distances(vectors, codebook).argmin(dim=1)
    new = codebook.clone()
    for k in range(codebook.shape[0]):
        members = vectors[indices == k]
        if len(members):
            new[k] = members.double().mean(dim=0).to(codebook.dtype)
    return new


def digit_patches(device):
    """2 x 2 patches of the training digits: (N, 4) vectors with many exact repeats."""
    images, _ = load_digits("train", size=8)
    patches = torch.nn.functional.pixel_unshuffle(images, 2)  # (B, 4, 4, 4)
    return patches.permute(0, 2, 3, 1).reshape(-1, 4).to(device)  # (B*16, 4)


def distortion(vectors, codebook):
    return ((lookup(nearest_code(vectors, codebook), codebook) - vectors) ** 2).sum(1).mean().item()


def test_kmeans_step_equals_a_loop_and_leaves_empty_codes(device, gen):
    vectors = randn(300, 3, gen=gen, device=device)
    codebook = randn(6, 3, gen=gen, device=device)
    codebook[5] = 100.0  # far from everything: no vector chooses it
    before = codebook.clone()
    new = kmeans_step(vectors, codebook)
    assert torch.equal(codebook, before), "kmeans_step must not change its argument"
    assert torch.equal(new[5], before[5])
    torch.testing.assert_close(new, loop_kmeans_step(vectors, codebook), rtol=1e-5, atol=1e-6)


def test_kmeans_decreases_distortion_on_digit_patches(device):
    vectors = digit_patches(device)
    gen = torch.Generator().manual_seed(0)
    codebook = kmeans(vectors, 16, iters=0, generator=gen)  # the random start
    assert torch.unique(codebook, dim=0).shape[0] == 16, "the start must be 16 distinct vectors"
    history = [distortion(vectors, codebook)]
    for _ in range(10):
        codebook = kmeans_step(vectors, codebook)
        history.append(distortion(vectors, codebook))
    assert all(b <= a * (1 + 1e-6) for a, b in zip(history, history[1:], strict=False)), history
    assert history[-1] < 0.6 * history[0], history


def test_kmeans_is_close_to_scikit_learn(device):
    from sklearn.cluster import KMeans

    vectors = digit_patches(device)
    ours = kmeans(vectors, 32, iters=20, generator=torch.Generator().manual_seed(0))
    sk = KMeans(n_clusters=32, n_init=3, random_state=0).fit(vectors.cpu().numpy())
    sk_distortion = sk.inertia_ / vectors.shape[0]
    # Lloyd from a random start is a local search; k-means++ with 3 restarts is a strong bar.
    assert distortion(vectors, ours) < 1.15 * sk_distortion


def test_kmeans_is_reproducible_with_a_generator(device):
    vectors = digit_patches(device)
    a = kmeans(vectors, 8, iters=3, generator=torch.Generator().manual_seed(5))
    b = kmeans(vectors, 8, iters=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- bad input


def _bad_cases():
    z = torch.randn(10, 4)
    cb = torch.randn(5, 4)
    idx = torch.tensor([0, 1, 4])
    return [
        # (what, call, error type, words the message must contain)
        ("codebook rank", lambda: nearest_code(z, torch.randn(5, 4, 1)), ValueError, "codebook must be a 2-d tensor"),
        ("codebook 1-d", lambda: nearest_code(z, torch.randn(4)), ValueError, "codebook must be a 2-d tensor"),
        ("z 0-d", lambda: nearest_code(torch.tensor(1.0), cb), ValueError, "the last dimension of z must be the codebook's D = 4, got shape ()"),
        ("mismatched D", lambda: nearest_code(torch.randn(10, 3), cb), ValueError, "the last dimension of z must be the codebook's D = 4, got shape (10, 3)"),
        ("K = 0", lambda: nearest_code(z, torch.randn(0, 4)), ValueError, "number of codes K must be a positive int, got 0"),
        ("integer z", lambda: nearest_code(z.long(), cb), TypeError, "z must be a floating-point"),
        ("integer codebook", lambda: nearest_code(z, cb.int()), TypeError, "codebook must be a floating-point"),
        ("z not a tensor", lambda: nearest_code([[1.0] * 4], cb), TypeError, "z must be a torch.Tensor"),
        ("NaN in z", lambda: nearest_code(z * float("nan"), cb), ValueError, "z holds NaN"),
        ("inf in codebook", lambda: nearest_code(z, cb / 0.0), ValueError, "codebook holds NaN or inf"),
        ("chunk_size 0", lambda: nearest_code(z, cb, chunk_size=0), ValueError, "chunk_size"),
        ("chunk_size float", lambda: nearest_code(z, cb, chunk_size=2.0), ValueError, "chunk_size"),
        ("squared_distances 3-d z", lambda: squared_distances(z[None], cb), ValueError, "z must be a 2-d tensor"),
        ("quantize map C != D", lambda: quantize.quantize(torch.randn(2, 3, 4, 4), cb), ValueError, "(B, C, H, W)"),
        ("lookup float indices", lambda: lookup(idx.float(), cb), TypeError, "indices must be an integer"),
        ("lookup out of range", lambda: lookup(torch.tensor([5]), cb), ValueError, "indices must lie in [0, 4]"),
        ("lookup codebook rank", lambda: lookup(idx, torch.randn(5)), ValueError, "codebook must be a 2-d tensor"),
        ("usage K = 0", lambda: codebook_usage(idx, 0), ValueError, "num_codes must be a positive int"),
        ("usage empty", lambda: codebook_usage(idx[:0], 5), ValueError, "indices is empty"),
        ("usage float indices", lambda: codebook_usage(idx.float(), 5), TypeError, "indices must be an integer"),
        ("perplexity out of range", lambda: perplexity(idx, 4), ValueError, "indices must lie in [0, 3]"),
        ("perplexity K = 0", lambda: perplexity(idx, 0), ValueError, "num_codes"),
        ("kmeans rank", lambda: kmeans(torch.randn(10), 2), ValueError, "vectors must be a 2-d tensor"),
        ("kmeans integer", lambda: kmeans(z.long(), 2), TypeError, "vectors must be a floating-point"),
        ("kmeans empty", lambda: kmeans(torch.randn(0, 4), 2), ValueError, "the 0 distinct vectors"),
        ("kmeans K = 0", lambda: kmeans(z, 0), ValueError, "num_codes must be a positive int"),
        ("kmeans K > distinct", lambda: kmeans(torch.zeros(10, 4), 2), ValueError, "1 distinct vectors"),
        ("kmeans iters", lambda: kmeans(z, 2, iters=-1), ValueError, "iters"),
        ("kmeans_step rank", lambda: kmeans_step(torch.randn(10), cb), ValueError, "vectors must be a 2-d tensor"),
        ("kmeans_step mismatched D", lambda: kmeans_step(torch.randn(10, 3), cb), ValueError, "codebook's D"),
    ]


@pytest.mark.parametrize("what, call, error, words", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_input_names_the_argument(what, call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value), f"{what}: {info.value}"


def test_device_mismatch_is_named():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    with pytest.raises(ValueError, match="z and codebook must be on the same device"):
        nearest_code(torch.randn(3, 4, device="cuda"), torch.randn(5, 4))

