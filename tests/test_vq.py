"""minitok.vq against vector-quantize-pytorch and the published VQ-VAE / taming behaviour.

Facts tested here are in docs/references.md ("Vector quantization").
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from vector_quantize_pytorch import VectorQuantize

from minitok import quantize
from minitok.vq import (
    VectorQuantizer,
    VQOutput,
    codebook_loss,
    commitment_loss,
    ema_update,
    laplace_smoothed,
    straight_through,
    vq_loss,
)

BETA = 0.25


def randn(*shape, gen, device, scale=1.0):
    return (torch.randn(*shape, generator=gen) * scale).to(device)


def set_codebook(vq: VectorQuantizer, codebook: torch.Tensor) -> None:
    """Give a minitok quantizer a known codebook (and the matching fresh EMA state)."""
    with torch.no_grad():
        vq.codebook.copy_(codebook)
        if hasattr(vq, "cluster_size"):  # EMA or dead-code restarts
            vq.cluster_size.fill_(1.0)
        if vq.ema:
            vq.embed_avg.copy_(codebook)


def reference_vq(dim, num_codes, codebook, device, ema=False, decay=0.8, beta=BETA):
    """vector-quantize-pytorch as a plain nearest-neighbour + STE quantizer (or EMA)."""
    ref = VectorQuantize(
        dim=dim,
        codebook_size=num_codes,
        rotation_trick=False,
        ema_update=ema,
        decay=decay,
        eps=1e-5,
        threshold_ema_dead_code=0,
        kmeans_init=False,
        commitment_weight=beta,
        accept_image_fmap=True,
    ).to(device)
    with torch.no_grad():
        ref.codebook = codebook
        ref._codebook.embed_avg.copy_(codebook[None])
        ref._codebook.cluster_size.fill_(1.0)
    return ref.train()


# --------------------------------------------------------------------------- vs the reference


@pytest.mark.parametrize("layout", ["map", "sequence"])
def test_matches_vector_quantize_pytorch(device, gen, layout):
    K, D = 32, 8
    codebook = randn(K, D, gen=gen, device=device)
    z = randn(3, D, 5, 6, gen=gen, device=device)
    vq = VectorQuantizer(K, D, beta=BETA).to(device)
    set_codebook(vq, codebook)
    ref = reference_vq(D, K, codebook, device)
    if layout == "sequence":
        z = z.flatten(2).transpose(1, 2)  # (B, N, C)
        ref.accept_image_fmap = False
    out = vq(z)
    ref_q, ref_idx, ref_loss = ref(z)
    assert isinstance(out, VQOutput)
    assert out.indices.dtype == torch.int64
    assert torch.equal(out.indices, ref_idx.long())
    torch.testing.assert_close(out.quantized, ref_q, rtol=0, atol=1e-6)
    # vector-quantize-pytorch's loss is beta * mse only (its codebook moves by EMA);
    # minitok adds the codebook loss, so its value is (1 + beta) * mse as in taming.
    torch.testing.assert_close(out.loss, ref_loss * (1 + BETA) / BETA, rtol=1e-5, atol=1e-7)


def test_indices_follow_the_permute_flatten_order(device, gen):
    K, D = 16, 4
    vq = VectorQuantizer(K, D).to(device).eval()
    set_codebook(vq, randn(K, D, gen=gen, device=device))
    z = randn(2, D, 3, 5, gen=gen, device=device)
    expected = quantize.nearest_code(z.permute(0, 2, 3, 1), vq.codebook.detach())  # (B, H, W)
    out = vq(z)
    assert out.indices.shape == (2, 3, 5)
    assert torch.equal(out.indices, expected)
    assert out.quantized.shape == z.shape
    # the decoder-side vectors of the tokens are the quantized map
    torch.testing.assert_close(vq.codes(out.indices), out.quantized, rtol=0, atol=1e-6)


def test_loss_value_is_one_plus_beta_times_mse(device, gen):
    K, D, beta = 16, 4, 0.4
    vq = VectorQuantizer(K, D, beta=beta).to(device)
    z = randn(4, 10, D, gen=gen, device=device)
    out = vq(z)
    q = vq.codebook.detach()[out.indices]
    torch.testing.assert_close(out.loss, (1 + beta) * F.mse_loss(z, q), rtol=1e-5, atol=1e-7)


def test_usage_and_perplexity_match_lesson_01(device, gen):
    K, D = 16, 4
    vq = VectorQuantizer(K, D).to(device)
    set_codebook(vq, randn(K, D, gen=gen, device=device))
    out = vq(randn(2, 12, D, gen=gen, device=device))
    assert out.usage.item() == pytest.approx(quantize.codebook_usage(out.indices, K))
    assert out.perplexity.item() == pytest.approx(quantize.perplexity(out.indices, K), rel=1e-5)
    # a single code everywhere: usage 1/K, perplexity 1
    one = vq(vq.codebook.detach()[3].expand(1, 7, D).clone())
    assert one.usage.item() == pytest.approx(1 / K)
    assert one.perplexity.item() == pytest.approx(1.0)


# --------------------------------------------------------------------------- gradients


def test_straight_through_value_and_gradient(device, gen):
    z = randn(6, 5, gen=gen, device=device).requires_grad_()
    q = randn(6, 5, gen=gen, device=device).requires_grad_()  # stands for looked-up codes
    g = randn(6, 5, gen=gen, device=device)
    q_st = straight_through(z, q)
    torch.testing.assert_close(q_st, q)  # allclose, not bit-equal: z + (q - z) rounds
    (q_st * g).sum().backward()
    assert torch.equal(z.grad, g)  # the upstream gradient, exactly
    assert q.grad is None  # nothing reaches the codebook through q_st


def test_module_output_gradient_goes_to_z_only(device, gen):
    K, D = 16, 4
    vq = VectorQuantizer(K, D).to(device)
    z = randn(2, D, 3, 3, gen=gen, device=device).requires_grad_()
    g = randn(2, D, 3, 3, gen=gen, device=device)
    out = vq(z)
    (out.quantized * g).sum().backward()
    assert torch.equal(z.grad, g)
    assert vq.codebook.grad is None


def assert_vq_loss_gradients(loss_fn, z, codebook, beta):
    """The published gradients of the VQ-VAE loss; raises AssertionError otherwise.

    dL/dz = 2 beta (z - e) / n (commitment only) and dL/de_k = sum over vectors assigned to k
    of 2 (e_k - z_i) / n (codebook loss only), zero for unused codes.
    """
    z = z.clone().requires_grad_()
    codebook = codebook.clone().requires_grad_()
    indices = quantize.nearest_code(z.detach(), codebook.detach())  # (N,)
    q = codebook[indices]  # (N, D)
    loss_fn(z, q, beta).backward()
    n = z.numel()
    e = codebook.detach()[indices]
    torch.testing.assert_close(z.grad, 2 * beta * (z.detach() - e) / n)
    expected = torch.zeros_like(codebook).index_add_(0, indices, 2 * (e - z.detach()) / n)
    torch.testing.assert_close(codebook.grad, expected)
    used = torch.bincount(indices, minlength=codebook.shape[0]) > 0
    assert used.sum() < codebook.shape[0], "test setup: some codes must be unused"
    assert torch.all(codebook.grad[~used] == 0)
    assert torch.all(codebook.grad[used].abs().sum(dim=1) > 0)


def taming_legacy_loss(z, q, beta):
    """taming's legacy=True orientation: beta on the codebook term."""
    return beta * codebook_loss(z, q) + commitment_loss(z, q)


def test_vq_loss_gradients(device, gen):
    z = randn(40, 6, gen=gen, device=device)
    codebook = randn(64, 6, gen=gen, device=device)
    assert_vq_loss_gradients(vq_loss, z, codebook, beta=0.25)


def test_gradient_test_catches_beta_on_the_wrong_term(device, gen):
    z = randn(40, 6, gen=gen, device=device)
    codebook = randn(64, 6, gen=gen, device=device)
    indices = quantize.nearest_code(z, codebook)
    # the loss VALUE cannot tell the orientations apart ...
    q = codebook[indices]
    torch.testing.assert_close(vq_loss(z, q, 0.25), taming_legacy_loss(z, q, 0.25))
    # ... the gradients can
    with pytest.raises(AssertionError):
        assert_vq_loss_gradients(taming_legacy_loss, z, codebook, beta=0.25)


def test_module_loss_gradients(device, gen):
    K, D = 32, 4
    vq = VectorQuantizer(K, D, beta=BETA).to(device)
    set_codebook(vq, randn(K, D, gen=gen, device=device))
    z = randn(3, 7, D, gen=gen, device=device).requires_grad_()
    out = vq(z)
    out.loss.backward()
    e = vq.codebook.detach()[out.indices]
    torch.testing.assert_close(z.grad, 2 * BETA * (z.detach() - e) / z.numel())
    unused = torch.bincount(out.indices.flatten(), minlength=K) == 0
    assert unused.any() and torch.all(vq.codebook.grad[unused] == 0)


def test_ema_loss_has_no_codebook_term(device, gen):
    K, D = 16, 4
    vq = VectorQuantizer(K, D, beta=BETA, ema=True).to(device)
    assert not any(p is vq.codebook for p in vq.parameters())  # a buffer, not trained by SGD
    z = randn(2, 9, D, gen=gen, device=device)
    out = vq.eval()(z)
    q = vq.codebook[out.indices]
    torch.testing.assert_close(out.loss, BETA * F.mse_loss(z, q))


# --------------------------------------------------------------------------- EMA


@pytest.mark.parametrize("decay", [0.8, 0.99])
def test_one_ema_step_matches_vector_quantize_pytorch(device, gen, decay):
    K, D = 24, 6
    codebook = randn(K, D, gen=gen, device=device)
    z = randn(2, D, 4, 4, gen=gen, device=device)
    vq = VectorQuantizer(K, D, ema=True, decay=decay).to(device).train()
    set_codebook(vq, codebook)
    ref = reference_vq(D, K, codebook, device, ema=True, decay=decay)
    out = vq(z)
    ref_q, ref_idx, _ = ref(z)
    assert torch.equal(out.indices, ref_idx.long())
    torch.testing.assert_close(out.quantized, ref_q, rtol=0, atol=1e-6)
    refcb = ref._codebook
    torch.testing.assert_close(vq.cluster_size, refcb.cluster_size[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(vq.embed_avg, refcb.embed_avg[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(vq.codebook, refcb.embed[0], rtol=0, atol=1e-5)
    assert not torch.allclose(vq.codebook, codebook)  # the step did move the codebook


def test_ema_step_output_uses_the_pre_update_codebook(device, gen):
    K, D = 8, 3
    codebook = randn(K, D, gen=gen, device=device)
    z = randn(1, 40, D, gen=gen, device=device, scale=2.0)
    vq = VectorQuantizer(K, D, ema=True, decay=0.5).to(device)
    set_codebook(vq, codebook)
    out = vq(z)
    old_idx = quantize.nearest_code(z, codebook)
    assert torch.equal(out.indices, old_idx)
    torch.testing.assert_close(out.quantized, codebook[old_idx], rtol=0, atol=1e-6)
    # the update moved the codes enough that some vectors now pick another code
    assert not torch.equal(quantize.nearest_code(z, vq.codebook), old_idx)


def test_ema_update_function_formula(device, gen):
    K, D, decay, eps = 10, 3, 0.9, 1e-5
    codebook = randn(K, D, gen=gen, device=device)
    cluster_size = torch.rand(K, generator=gen).to(device) * 3
    embed_avg = randn(K, D, gen=gen, device=device)
    z = randn(50, D, gen=gen, device=device)
    step = ema_update(codebook, cluster_size, embed_avg, z, decay, eps)
    idx = quantize.nearest_code(z, codebook)
    onehot = F.one_hot(idx, K).float()  # (N, K)
    n_new = decay * cluster_size + (1 - decay) * onehot.sum(0)
    m_new = decay * embed_avg + (1 - decay) * onehot.t() @ z
    smoothed = (n_new + eps) / (n_new.sum() + K * eps) * n_new.sum()
    assert torch.equal(step.indices, idx)
    torch.testing.assert_close(step.cluster_size, n_new)
    torch.testing.assert_close(step.embed_avg, m_new)
    torch.testing.assert_close(step.codebook, m_new / smoothed[:, None])
    torch.testing.assert_close(laplace_smoothed(n_new, eps).sum(), n_new.sum())


def test_eval_mode_changes_no_state(device, gen):
    K, D = 16, 4
    z = randn(2, D, 4, 4, gen=gen, device=device)
    for kwargs in (
        dict(ema=True),
        dict(ema=True, dead_code_threshold=5.0),
        dict(dead_code_threshold=5.0),
        dict(kmeans_init=True),
    ):
        vq = VectorQuantizer(K, D, **kwargs).to(device).eval()
        before = {k: v.clone() for k, v in vq.state_dict().items()}
        vq(z)
        vq(z)
        after = vq.state_dict()
        for key, value in before.items():
            assert torch.equal(value, after[key]), f"{kwargs}: eval changed {key}"


# --------------------------------------------------------------------------- dead codes, k-means


@pytest.mark.parametrize("ema", [False, True])
def test_dead_codes_restart_from_batch_vectors(device, gen, ema):
    K, D, threshold = 16, 4, 0.5
    torch.manual_seed(0)  # the restart draws its vectors from the global RNG
    vq = VectorQuantizer(K, D, ema=ema, dead_code_threshold=threshold, decay=0.9).to(device)
    codebook = randn(K, D, gen=gen, device=device)
    set_codebook(vq, codebook)
    dead = torch.tensor([1, 5, 6, 11], device=device)
    with torch.no_grad():
        vq.codebook[dead] = 100.0  # far away: nothing picks them
        vq.cluster_size[dead] = 0.1  # below the threshold after any decay
    z = randn(2, 30, D, gen=gen, device=device)
    vq(z)
    flat = z.reshape(-1, D)
    for k in dead.tolist():
        # each restarted code is one of the batch's vectors
        assert torch.isclose(flat, vq.codebook[k]).all(dim=1).any(), f"code {k} not restarted"
        assert vq.cluster_size[k].item() == pytest.approx(threshold)
        if ema:
            torch.testing.assert_close(vq.embed_avg[k], vq.codebook[k] * threshold)
    restarted = vq.codebook[dead]
    assert len({tuple(v.tolist()) for v in restarted}) == len(dead)  # distinct vectors
    alive = torch.ones(K, dtype=torch.bool, device=device)
    alive[dead] = False
    if not ema:  # the parameter only moves by SGD, so live codes are untouched
        assert torch.equal(vq.codebook[alive], codebook[alive])


def test_no_restarts_without_threshold(device, gen):
    K, D = 16, 4
    vq = VectorQuantizer(K, D).to(device)
    codebook = randn(K, D, gen=gen, device=device)
    set_codebook(vq, codebook)
    vq(randn(2, 30, D, gen=gen, device=device))
    assert torch.equal(vq.codebook.detach(), codebook)


def test_kmeans_init_from_first_training_batch(device, gen):
    K, D = 8, 3
    z = randn(1, 200, D, gen=gen, device=device)
    vq = VectorQuantizer(K, D, kmeans_init=True).to(device)
    assert not bool(vq.initted)
    torch.manual_seed(3)
    vq(z)
    torch.manual_seed(3)
    expected = quantize.kmeans(z.reshape(-1, D), K, iters=10)
    torch.testing.assert_close(vq.codebook.detach(), expected)
    assert bool(vq.initted)
    # a second training batch is not re-fitted
    vq(randn(1, 200, D, gen=gen, device=device) + 10)
    torch.testing.assert_close(vq.codebook.detach(), expected)


def test_kmeans_init_then_ema_step(device, gen):
    K, D, decay = 8, 3, 0.9
    z = randn(1, 200, D, gen=gen, device=device)
    vq = VectorQuantizer(K, D, kmeans_init=True, ema=True, decay=decay).to(device)
    torch.manual_seed(3)
    out = vq(z)
    torch.manual_seed(3)
    fitted = quantize.kmeans(z.reshape(-1, D), K, iters=10)
    # the batch is quantized with the fitted codebook, then one EMA step starts from it
    assert torch.equal(out.indices, quantize.nearest_code(z, fitted))
    step = ema_update(fitted, torch.ones(K, device=device), fitted, z.reshape(-1, D), decay)
    torch.testing.assert_close(vq.codebook, step.codebook)
    torch.testing.assert_close(vq.embed_avg, step.embed_avg)


def test_kmeans_init_needs_enough_vectors(device, gen):
    vq = VectorQuantizer(64, 3, kmeans_init=True).to(device)
    with pytest.raises(ValueError, match="kmeans_init"):
        vq(randn(1, 10, 3, gen=gen, device=device))


# --------------------------------------------------------------------------- l2 and projections


def test_l2_normalized_lookup_is_cosine_nearest(device, gen):
    K, D = 32, 8
    vq = VectorQuantizer(K, D, l2_normalize=True).to(device)
    set_codebook(vq, randn(K, D, gen=gen, device=device, scale=3.0))
    z = randn(2, 20, D, gen=gen, device=device, scale=5.0)
    out = vq(z)
    cosine = F.normalize(z, dim=-1) @ F.normalize(vq.codebook.detach(), dim=-1).t()  # (B, N, K)
    assert torch.equal(out.indices, cosine.argmax(dim=-1))
    torch.testing.assert_close(out.quantized.norm(dim=-1), torch.ones(2, 20, device=device))


def test_low_dimensional_lookup_with_projections(device, gen):
    K, D, d = 64, 16, 4
    vq = VectorQuantizer(K, D, code_dim=d, l2_normalize=True).to(device)
    assert vq.codebook.shape == (K, d)
    z = randn(2, D, 3, 3, gen=gen, device=device).requires_grad_()
    out = vq(z)
    assert out.quantized.shape == z.shape
    z_code = F.normalize(vq.in_proj(z.detach().permute(0, 2, 3, 1)), dim=-1)
    assert torch.equal(out.indices, quantize.nearest_code(z_code, vq.lookup_codebook().detach()))
    torch.testing.assert_close(vq.codes(out.indices), out.quantized, rtol=0, atol=1e-6)
    (out.quantized.square().sum() + out.loss).backward()
    assert z.grad.abs().sum() > 0 and vq.in_proj.weight.grad.abs().sum() > 0
    assert vq.out_proj.weight.grad.abs().sum() > 0 and vq.codebook.grad.abs().sum() > 0


# --------------------------------------------------------------------------- precision, checkpoints


def test_bf16_autocast_indices_equal_fp32(device, gen):
    K, D = 512, 64
    vq = VectorQuantizer(K, D).to(device)
    set_codebook(vq, randn(K, D, gen=gen, device=device))
    z = randn(4, D, 16, 16, gen=gen, device=device)
    fp32 = vq(z)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        bf16 = vq(z)
    assert torch.equal(bf16.indices, fp32.indices)
    # a bf16 input keeps its dtype on the way out
    assert vq(z.bfloat16()).quantized.dtype == torch.bfloat16


def test_state_dict_round_trips_through_a_weights_only_checkpoint(tmp_path, gen):
    vq = VectorQuantizer(16, 4, ema=True, dead_code_threshold=1.0, code_dim=2)
    vq(torch.randn(2, 10, 4, generator=gen))
    path = tmp_path / "vq.pt"
    torch.save(vq.state_dict(), path)  # what minitok.checkpoints.save writes for a model
    loaded = VectorQuantizer(16, 4, ema=True, dead_code_threshold=1.0, code_dim=2)
    loaded.load_state_dict(torch.load(path, weights_only=True))  # tensors only: EMA state too
    z = torch.randn(1, 5, 4, generator=gen)
    assert torch.equal(loaded.eval()(z).indices, vq.eval()(z).indices)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_codes=0), "num_codes"),
        (dict(dim=-1), "dim"),
        (dict(beta=-0.1), "beta"),
        (dict(beta=float("nan")), "beta"),
        (dict(decay=0.0), "decay"),
        (dict(decay=1.0), "decay"),
        (dict(decay=1.5), "decay"),
        (dict(eps=0.0), "eps"),
        (dict(dead_code_threshold=-1.0), "dead_code_threshold"),
        (dict(code_dim=0), "code_dim"),
    ],
)
def test_bad_constructor_arguments(kwargs, name):
    args = dict(num_codes=8, dim=4) | kwargs
    with pytest.raises(ValueError, match=name):
        VectorQuantizer(**args)


def test_bad_forward_input(gen):
    vq = VectorQuantizer(8, 4)
    with pytest.raises(ValueError, match="channels"):
        vq(torch.randn(2, 3, 5, 5, generator=gen))  # 3 channels, dim 4
    with pytest.raises(ValueError, match="channels"):
        vq(torch.randn(2, 5, 3, generator=gen))
    with pytest.raises(ValueError, match="z must be a 3-d or 4-d tensor"):
        vq(torch.randn(5, 4, generator=gen))  # wrong rank: (B, C, H, W) or (B, N, C)
    with pytest.raises(TypeError, match="floating"):
        vq(torch.ones(2, 5, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="indices"):
        vq.codes(torch.tensor([[0, 8]]))
    with pytest.raises(ValueError, match="beta"):
        vq_loss(torch.zeros(3), torch.zeros(3), beta=-1.0)
    with pytest.raises(ValueError, match="decay"):
        ema_update(torch.zeros(4, 2), torch.ones(4), torch.zeros(4, 2), torch.zeros(3, 2), 1.0)
    with pytest.raises(ValueError, match="same shape"):
        straight_through(torch.zeros(3, 2), torch.zeros(2, 3))


@pytest.mark.parametrize("loss", [commitment_loss, codebook_loss, vq_loss])
def test_losses_refuse_mismatched_shapes(loss, gen):
    """mse_loss would broadcast z (B, N, D) against q (N, D) with only a warning."""
    z = torch.randn(2, 5, 4, generator=gen)
    q = torch.randn(5, 4, generator=gen)
    with pytest.raises(ValueError, match="z and q must have the same shape"):
        loss(z, q)
    with pytest.raises(ValueError, match="z and q must have the same shape"):
        loss(z, q[:, :1])  # (5, 1) would broadcast over the last dimension too


@pytest.mark.parametrize(
    ("options", "keys"),
    [
        ({}, ["codebook"]),
        ({"ema": True}, ["codebook", "cluster_size", "embed_avg"]),
        ({"dead_code_threshold": 1.0}, ["codebook", "cluster_size"]),
        ({"kmeans_init": True}, ["codebook", "initted"]),
    ],
)
def test_state_dict_holds_only_the_state_its_options_use(options, keys):
    """Lesson 02's module exercise (codebook; with EMA cluster_size and embed_avg) loads the
    package's state dict: the options add their own state and nothing else."""
    assert list(VectorQuantizer(8, 3, **options).state_dict()) == keys
