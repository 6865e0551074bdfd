"""minitok.transformer against torch's own attention kernels, and the KV cache against the
full forward pass (docs/references.md, "Transformers and autoregressive sampling")."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

from minitok.evaluate import count_forward
from minitok.rope import apply_rope, rope_angles_2d
from minitok.transformer import (
    KVCache,
    SelfAttention,
    Transformer,
    TransformerConfig,
    attention,
    attention_weights,
    causal_mask,
    count_parameters,
    generate,
    merge_heads,
    split_heads,
)

# fp32 atol: the from-scratch formula and torch's kernels sum in different orders.
ATOL = {"cpu": 1e-6, "cuda": 1e-5}
# Half precision: about one unit in the last place of outputs of size ~1
# (bf16 has 8 significant bits, eps 7.8e-3; fp16 has 11, eps 9.8e-4).
HALF_TOL = {torch.bfloat16: dict(atol=3e-2, rtol=2e-2), torch.float16: dict(atol=4e-3, rtol=3e-3)}


def qkv(gen, B=2, H=3, T_q=7, T_k=7, d=16, d_v=None, device="cpu", dtype=torch.float32):
    q = torch.randn(B, H, T_q, d, generator=gen)
    k = torch.randn(B, H, T_k, d, generator=gen)
    v = torch.randn(B, H, T_k, d_v or d, generator=gen)
    return (t.to(device=device, dtype=dtype) for t in (q, k, v))


def small_config(**overrides) -> TransformerConfig:
    settings = dict(vocab_size=37, block_size=24, n_layer=2, n_head=4, n_embd=32)
    settings.update(overrides)
    return TransformerConfig(**settings)


def make_model(device, seed=0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(small_config(**overrides)).to(device).eval()




# --------------------------------------------------------------------------- attention vs SDPA


def test_attention_equals_sdpa_without_mask(device, gen):
    q, k, v = qkv(gen, T_q=5, T_k=9, d=16, d_v=12, device=device)
    expected = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(attention(q, k, v), expected, atol=ATOL[device.type], rtol=1e-5)


def test_attention_equals_sdpa_with_causal_mask(device, gen):
    q, k, v = qkv(gen, T_q=11, T_k=11, device=device)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    got = attention(q, k, v, causal_mask(11, device=device))
    torch.testing.assert_close(got, expected, atol=ATOL[device.type], rtol=1e-5)


@pytest.mark.parametrize("mask_shape", [(6, 8), (2, 1, 6, 8), (2, 3, 6, 8)])
def test_attention_equals_sdpa_with_explicit_bool_mask(device, gen, mask_shape):
    q, k, v = qkv(gen, T_q=6, T_k=8, device=device)
    mask = torch.rand(mask_shape, generator=gen) < 0.5
    mask[..., 0] = True  # every query sees at least one key
    mask = mask.to(device)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attention(q, k, v, mask), expected, atol=ATOL[device.type], rtol=1e-5)


def test_attention_in_float64_matches_sdpa_to_float64_precision(device, gen):
    q, k, v = qkv(gen, device=device, dtype=torch.float64)
    mask = causal_mask(7, device=device)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attention(q, k, v, mask), expected, atol=1e-12, rtol=1e-12)


def test_weights_are_a_softmax_over_keys_with_exact_zeros_where_masked(gen):
    q, k, _ = qkv(gen, T_q=6, T_k=6)
    mask = causal_mask(6)
    w = attention_weights(q, k, mask)  # (B, H, 6, 6)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 6))
    assert torch.all(w[..., ~mask] == 0)
    assert torch.all(w[..., mask] > 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_half_precision_matches_sdpa_flash_kernel_on_cpu(gen, dtype, causal):
    """torch ships a CPU flash-attention kernel for bf16/fp16: compare with it."""
    q, k, v = qkv(gen, B=2, H=4, T_q=33, T_k=33, d=64, dtype=dtype)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    got = attention(q, k, v, causal_mask(33) if causal else None)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), expected.float(), **HALF_TOL[dtype])


CUDA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("backend", CUDA_BACKENDS, ids=lambda b: b.name.lower())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_half_precision_matches_sdpa_cuda_backends(gen, backend, dtype, causal):
    q, k, v = qkv(gen, B=2, H=4, T_q=70, T_k=70, d=64, device="cuda", dtype=dtype)
    with sdpa_kernel(backend):
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    got = attention(q, k, v, causal_mask(70, device="cuda") if causal else None)
    torch.testing.assert_close(got.float(), expected.float(), **HALF_TOL[dtype])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_bool_mask_matches_memory_efficient_kernel(gen, dtype):
    q, k, v = qkv(gen, B=2, H=4, T_q=40, T_k=72, d=64, device="cuda", dtype=dtype)
    mask = torch.rand(40, 72, generator=gen) < 0.5
    mask[:, 0] = True
    mask = mask.cuda()
    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attention(q, k, v, mask).float(), expected.float(), **HALF_TOL[dtype])


# --------------------------------------------------------------------------- masks


def test_causal_mask_is_the_lower_triangle(device):
    mask = causal_mask(5, device=device)
    assert mask.dtype == torch.bool and mask.device.type == device.type
    expected = torch.tensor([[j <= i for j in range(5)] for i in range(5)], device=device)
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("T_q, T_k", [(1, 9), (3, 9), (9, 9), (4, 5)])
def test_rectangular_causal_mask_is_bottom_right_aligned_like_torch(device, gen, T_q, T_k):
    """torch.nn.attention.bias.causal_lower_right is the mask for queries at the end."""
    q, k, v = qkv(gen, T_q=T_q, T_k=T_k, device=device)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(T_q, T_k))
    got = attention(q, k, v, causal_mask(T_q, T_k, device=device))
    torch.testing.assert_close(got, expected, atol=ATOL[device.type], rtol=1e-5)


def test_one_query_against_a_longer_cache_sees_every_key(device, gen):
    """The trap: SDPA's is_causal=True is top-left aligned, so a lone query sees key 0 only."""
    q, k, v = qkv(gen, T_q=1, T_k=9, device=device)
    assert causal_mask(1, 9).all()
    ours = attention(q, k, v, causal_mask(1, 9, device=device))
    sees_all = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(ours, sees_all, atol=ATOL[device.type], rtol=1e-5)
    top_left = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(top_left, v[:, :, :1], atol=ATOL[device.type], rtol=1e-5)
    assert not torch.allclose(ours, top_left, atol=1e-3)
    w = attention_weights(q, k, causal_mask(1, 9, device=device))
    assert torch.all(w > 0)  # every cached key has a share


# --------------------------------------------------------------------------- heads, layer


def test_split_heads_cuts_each_tokens_channels_into_heads(gen):
    x = torch.randn(2, 5, 12, generator=gen)
    heads = split_heads(x, 3)  # (2, 3, 5, 4)
    assert heads.shape == (2, 3, 5, 4)
    for h in range(3):
        assert torch.equal(heads[:, h], x[:, :, 4 * h : 4 * (h + 1)])
    assert torch.equal(merge_heads(heads), x)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_self_attention_equals_torch_multihead_attention(device, gen, causal):
    """Same weights, same outputs. Note MHA's bool attn_mask is True where NOT allowed."""
    C, H, T = 32, 4, 10
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(C, H, batch_first=True).to(device).eval()
    ours = SelfAttention(small_config(n_embd=C, n_head=H, causal=causal)).to(device).eval()
    with torch.no_grad():
        ours.qkv.weight.copy_(mha.in_proj_weight)  # rows: q, then k, then v
        ours.qkv.bias.copy_(mha.in_proj_bias)
        ours.proj.weight.copy_(mha.out_proj.weight)
        ours.proj.bias.copy_(mha.out_proj.bias)
    x = torch.randn(3, T, C, generator=gen).to(device)
    blocked = ~causal_mask(T, device=device) if causal else None
    expected, _ = mha(x, x, x, attn_mask=blocked, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=ATOL[device.type] * 5, rtol=1e-5)


# --------------------------------------------------------------------------- causality


def test_changing_token_t_never_changes_earlier_logits(device, gen):
    model = make_model(device)
    T = model.config.block_size
    idx = torch.randint(0, 37, (2, T), generator=gen).to(device)
    base = model(idx)
    for t in (0, 1, T // 2, T - 1):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % 37
        out = model(changed)
        torch.testing.assert_close(out[:, :t], base[:, :t], atol=ATOL[device.type], rtol=0)
        assert (out[:, t] - base[:, t]).abs().max() > 1e-4  # the token itself does matter


def test_bidirectional_model_sees_the_future(device, gen):
    model = make_model(device, causal=False)
    idx = torch.randint(0, 37, (2, 12), generator=gen).to(device)
    changed = idx.clone()
    changed[:, 11] = (changed[:, 11] + 1) % 37
    diff = (model(changed)[:, :11] - model(idx)[:, :11]).abs().amax(dim=-1)  # (2, 11)
    assert torch.all(diff > 1e-5)


def _gradient_reach(model, idx, s):
    """Per input position: how much gradient flows from the logits at position s."""
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["emb"] = output

    handle = model.wte.register_forward_hook(keep)
    try:
        model(idx)[:, s].sum().backward()
    finally:
        handle.remove()
    return captured["emb"].grad.abs().sum(dim=(0, 2))  # (T,)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_gradients_flow_only_from_the_past_when_causal(device, gen, causal):
    model = make_model(device, causal=causal)
    idx = torch.randint(0, 37, (2, 12), generator=gen).to(device)
    s = 5
    reach = _gradient_reach(model, idx, s)
    assert torch.all(reach[: s + 1] > 0)
    if causal:
        assert torch.all(reach[s + 1 :] == 0)
    else:
        assert torch.all(reach[s + 1 :] > 0)


# --------------------------------------------------------------------------- KV cache


@pytest.mark.parametrize("prompt_len", [1, 5])
def test_prefill_then_decode_equals_the_full_forward(device, gen, prompt_len):
    model = make_model(device)
    T = model.config.block_size
    idx = torch.randint(0, 37, (3, T), generator=gen).to(device)
    full = model(idx)  # (3, T, V)
    cache = model.new_cache(3)
    steps = [model(idx[:, :prompt_len], cache)]
    assert cache.length == prompt_len
    for t in range(prompt_len, T):
        steps.append(model(idx[:, t : t + 1], cache))  # (3, 1, V)
        assert cache.length == t + 1
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_chunks_of_several_tokens_against_the_cache_equal_the_full_forward(device, gen):
    """Several new queries at once use the bottom-right aligned mask."""
    model = make_model(device)
    idx = torch.randint(0, 37, (2, 20), generator=gen).to(device)
    full = model(idx)
    cache = model.new_cache(2)
    chunks = [model(idx[:, a:b], cache) for a, b in [(0, 3), (3, 10), (10, 11), (11, 20)]]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=1e-5)


def test_decode_step_uses_every_cached_key(device, gen):
    """Change the cached value of any one earlier token: the next token's logits change."""
    model = make_model(device)
    idx = torch.randint(0, 37, (1, 9), generator=gen).to(device)
    cache = model.new_cache(1)
    model(idx[:, :8], cache)
    saved = cache.values.clone()
    base = model(idx[:, 8:9], cache)
    for j in range(8):
        cache.values.copy_(saved)
        cache.values[0, :, :, j] += 1.0
        cache.length = 8
        out = model(idx[:, 8:9], cache)
        assert (out - base).abs().max() > 1e-4, f"decode step ignored cached position {j}"


def test_generate_gives_the_same_tokens_with_and_without_cache(device, gen):
    model = make_model(device, block_size=40)
    prompt = torch.randint(0, 37, (3, 4), generator=gen).to(device)
    with count_forward(model) as stats:
        cached = generate(model, prompt, 30)
    assert stats["passes"] == 30  # prefill + 29 one-token steps
    with count_forward(model) as stats:
        recomputed = generate(model, prompt, 30, use_cache=False)
    assert stats["passes"] == 30
    assert cached.shape == (3, 34)
    assert torch.equal(cached[:, :4], prompt)
    assert torch.equal(cached, recomputed)


def test_generate_accepts_a_pick_over_a_doubled_batch(device, gen):
    """Lesson 05's guidance: [cond; null] in one batch, the same token for both halves."""
    model = make_model(device, block_size=20)
    cond = torch.randint(0, 37, (2, 2), generator=gen).to(device)
    prompt = torch.cat([cond, torch.zeros_like(cond)])  # (4, 2)
    seen = []

    def guided(logits):  # (4, V)
        seen.append(tuple(logits.shape))
        c, u = logits.chunk(2)
        token = (u + 1.5 * (c - u)).argmax(-1)  # (2,)
        return torch.cat([token, token])

    out = generate(model, prompt, 6, pick=guided)
    assert seen == [(4, 37)] * 6
    assert torch.equal(out[:2, 2:], out[2:, 2:])


def test_kv_cache_storage_and_reset(device):
    model = make_model(device)
    cache = model.new_cache(2, max_len=10)
    assert isinstance(cache, KVCache)
    assert cache.keys.shape == (2, 2, 4, 10, 8) and cache.keys.device.type == device.type
    model(torch.zeros(2, 10, dtype=torch.long, device=device), cache)
    with pytest.raises(ValueError, match="cache is full"):
        model(torch.zeros(2, 1, dtype=torch.long, device=device), cache)
    cache.reset()
    assert cache.length == 0
    model(torch.zeros(2, 1, dtype=torch.long, device=device), cache)


# --------------------------------------------------------------------------- config, count


@pytest.mark.parametrize(
    "overrides",
    [{}, {"bias": False}, {"n_layer": 3, "n_embd": 48, "n_head": 6}, {"causal": False}],
    ids=["default", "no-bias", "wider", "bidirectional"],
)
def test_count_parameters_matches_the_model(overrides):
    config = small_config(**overrides)
    assert count_parameters(config) == Transformer(config).num_parameters()


def test_forward_is_deterministic_for_a_seed():
    idx = torch.arange(12).reshape(2, 6)
    a = make_model("cpu", seed=3)(idx)
    b = make_model("cpu", seed=3)(idx)
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- bad input


def test_sequence_longer_than_block_size_is_refused(device):
    model = make_model(device)
    with pytest.raises(ValueError, match="block_size = 24"):
        model(torch.zeros(1, 25, dtype=torch.long, device=device))
    cache = model.new_cache(1)
    model(torch.zeros(1, 20, dtype=torch.long, device=device), cache)
    with pytest.raises(ValueError, match="after 20 cached tokens"):
        model(torch.zeros(1, 5, dtype=torch.long, device=device), cache)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, torch.zeros(1, 4, dtype=torch.long, device=device), 21)


@pytest.mark.parametrize("bad", [-1, 37, 1000])
def test_token_ids_out_of_range_are_refused(device, bad):
    model = make_model(device)
    idx = torch.zeros(2, 4, dtype=torch.long, device=device)
    idx[1, 2] = bad
    with pytest.raises(ValueError, match=r"idx must lie in \[0, 36\]"):
        model(idx)


@pytest.mark.parametrize("idx", [torch.zeros(1, 4), torch.tensor([[1.0, 2.0, 3.0]]),
                                 torch.zeros(1, 4, dtype=torch.bool)],
                         ids=["zeros", "whole-number-floats", "bool"])
def test_float_codes_are_refused_not_rounded(idx):
    """Token ids that arrive as floats (even whole numbers) are a mistake upstream."""
    with pytest.raises(TypeError, match="idx must be an integer tensor of ids"):
        make_model("cpu")(idx)
    with pytest.raises(TypeError, match="prompt must be an integer tensor of ids"):
        generate(make_model("cpu"), idx, 2)


def test_malformed_token_tensors_are_refused():
    model = make_model("cpu")
    with pytest.raises(ValueError, match="idx must be a 2-d tensor"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="idx must be a torch.Tensor"):
        model([[1, 2, 3]])
    with pytest.raises(ValueError, match="prompt must be a 2-d tensor"):
        generate(model, torch.zeros(4, dtype=torch.long), 2)
    cache = model.new_cache(2)
    with pytest.raises(ValueError, match=r"cache: made for .* \(2, 2, 4, 8\), but this model "
                                         r"and idx need \(2, 1, 4, 8\)"):
        model(torch.zeros(1, 4, dtype=torch.long), cache)  # a batch of 1, a cache for 2
    assert cache.length == 0


@pytest.mark.parametrize("other", [{"n_layer": 3}, {"n_head": 2}, {"n_embd": 64}],
                         ids=["layers", "heads", "head-size"])
def test_a_cache_made_for_another_model_is_refused(other):
    model = make_model("cpu")
    cache = make_model("cpu", **other).new_cache(1)
    assert cache.made_for != (2, 1, 4, 8)  # (n_layer, batch, n_head, head_dim) of `model`
    with pytest.raises(ValueError, match=r"cache: made for \(n_layer, batch, n_head, head_dim\)"):
        model(torch.zeros(1, 4, dtype=torch.long), cache)
    assert cache.length == 0  # refused before anything was written
    model(torch.zeros(1, 4, dtype=torch.long), model.new_cache(1))  # its own cache works


def test_a_cache_longer_than_the_context_is_refused():
    model = make_model("cpu")
    with pytest.raises(ValueError, match=r"max_len must lie in \[1, 24\], got 25"):
        model.new_cache(1, max_len=25)


def test_attention_helpers_trust_their_inputs_and_torch_refuses_mismatches(gen):
    """attention and split_heads run inside every forward pass, behind Transformer.forward's
    checks, so they check nothing themselves: a mismatched call still fails, with torch's own
    error at the line that cannot be computed. causal_mask keeps its one check, since a T_k
    below T_q would silently give queries with no key (NaN attention)."""
    q, k, v = qkv(gen, d=16)
    with pytest.raises(RuntimeError):
        attention(q, k[..., :8], v)  # head sizes differ
    with pytest.raises(RuntimeError):
        attention(q, k, v[:, :, :5])  # 7 keys, 5 values
    with pytest.raises(TypeError):
        attention(q, k, v, causal_mask(7).float())  # ~mask needs a bool mask
    with pytest.raises(RuntimeError):
        attention(q, k, v, causal_mask(6))  # (6, 6) does not broadcast to (7, 7)
    with pytest.raises(RuntimeError):
        split_heads(torch.zeros(1, 2, 12), 5)  # 12 channels do not split into 5 heads
    with pytest.raises(ValueError, match="T_k .* must be >= T_q"):
        causal_mask(5, 3)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="n_embd .* divisible by n_head"):
        small_config(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="vocab_size must be a positive int"):
        small_config(vocab_size=0)
    with pytest.raises(ValueError, match=r"dropout must lie in \[0, 1\)"):
        small_config(dropout=1.0)
    with pytest.raises(ValueError, match="causal=True"):
        make_model("cpu", causal=False).new_cache(1)


def test_pick_must_return_one_token_per_row():
    model = make_model("cpu")
    with pytest.raises(ValueError, match=r"pick must return \(2,\) integer ids, got torch.float32 "
                                         r"\(2, 37\)"):
        generate(model, torch.zeros(2, 1, dtype=torch.long), 3, pick=lambda logits: logits)


# --------------------------------------------------------------------------- 2D RoPE


def _llamagen_style_rope(x, height, width):
    """Independent formulation: channel pairs as complex numbers times exp(i angle),
    row angles in the first half of the pairs, column angles in the second (LlamaGen)."""
    d = x.shape[-1]
    half = d // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, half, 2)[: half // 2].double() / half))
    t = torch.arange(height).double()  # square or not: rows and columns separately
    rows = torch.outer(t, freqs)[:, None, :].expand(height, width, -1)
    cols = torch.outer(torch.arange(width).double(), freqs)[None, :, :].expand(height, width, -1)
    angles = torch.cat([rows, cols], dim=-1).reshape(height * width, half)
    rot = torch.polar(torch.ones_like(angles), angles)  # (T, d/2) complex
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], half, 2).contiguous())
    return torch.view_as_real(pairs * rot).flatten(-2)


def test_rope_matches_the_complex_number_formulation(gen):
    x = torch.randn(2, 3, 12, 16, generator=gen)  # (B, H, 3*4 tokens, d)
    ours = apply_rope(x, rope_angles_2d(3, 4, 16))
    torch.testing.assert_close(ours.double(), _llamagen_style_rope(x, 3, 4), atol=1e-5, rtol=1e-5)


def test_rope_scores_depend_only_on_the_row_and_column_offset(gen):
    """The same q and k placed anywhere on the grid: the score is a function of the offset."""
    H, W, d = 4, 5, 16
    q = torch.randn(d, generator=gen).expand(H * W, d)  # one query vector at every cell
    k = torch.randn(d, generator=gen).expand(H * W, d)  # one key vector at every cell
    angles = rope_angles_2d(H, W, d)
    scores = apply_rope(q, angles) @ apply_rope(k, angles).T  # (HW, HW)
    by_offset: dict[tuple[int, int], float] = {}
    for i in range(H * W):
        for j in range(H * W):
            offset = (j // W - i // W, j % W - i % W)
            first = by_offset.setdefault(offset, scores[i, j].item())
            assert abs(scores[i, j].item() - first) < 1e-4, f"offset {offset} differs"
    assert len({round(v, 3) for v in by_offset.values()}) > 20  # and the offset does matter
    # Raster neighbours across a row break are not grid neighbours:
    across = scores[W - 1, W].item()  # (0, W-1) -> (1, 0): offset (1, -(W-1))
    beside = scores[0, 1].item()  # (0, 0) -> (0, 1): offset (0, 1)
    assert abs(across - beside) > 1e-3


def test_rope_leaves_prefix_tokens_unrotated_and_refuses_bad_shapes(gen):
    angles = rope_angles_2d(2, 2, 8, n_prefix=3)
    assert angles.shape == (7, 4) and torch.all(angles[:3] == 0)
    x = torch.randn(7, 8, generator=gen)
    assert torch.equal(apply_rope(x, angles)[:3], x[:3])
    with pytest.raises(ValueError, match="divisible by 4"):
        rope_angles_2d(2, 2, 6)
    with pytest.raises(RuntimeError):  # 7 tokens, 5 angles: torch refuses (apply_rope trusts
        apply_rope(x, angles[:5])  # its shapes, which the model builds)
