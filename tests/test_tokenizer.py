"""The tokenizer: shapes, round trips, bad input, training, the shipped checkpoint.

The shipped tokenizer's quality claims (codebook usage, the classifier on reconstructions)
are measured by `evaluate.tokenizer_quality` and tested in tests/test_evaluate.py.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from minitok import checkpoints
from minitok.data import load_digits
from minitok.evaluate import reconstruct
from minitok.tokenizer import (
    TokenizerConfig,
    TrainConfig,
    VQTokenizer,
    tokens_to_image,
    train_tokenizer,
)
from minitok.vq import VQOutput

SHIPPED = checkpoints.checkpoint_path("tokenizer")


@pytest.fixture
def small(device) -> VQTokenizer:
    torch.manual_seed(0)
    return VQTokenizer(TokenizerConfig(channels=8, num_codes=16, kmeans_init=False)).to(device)


# --------------------------------------------------------------------------- shapes


def test_encode_decode_forward_shapes(small, device, gen):
    images = (torch.rand(3, 1, 16, 16, generator=gen) * 2 - 1).to(device)
    before = {k: v.clone() for k, v in small.state_dict().items()}
    indices = small.encode(images)  # in train mode: must not touch the codebook
    assert all(torch.equal(v, small.state_dict()[k]) for k, v in before.items())
    assert indices.shape == (3, 8, 8) and indices.dtype == torch.int64
    assert 0 <= indices.min() and indices.max() < 16
    decoded = small.decode(indices)
    assert decoded.shape == (3, 1, 16, 16)
    assert decoded.abs().max() < 1  # tanh output
    small.eval()
    reconstruction, vq = small(images)
    assert isinstance(vq, VQOutput)
    assert reconstruction.shape == (3, 1, 16, 16) and vq.quantized.shape == (3, 16, 8, 8)
    # In eval mode, decode(encode(x)) is the forward's reconstruction: the same codes through
    # the same decoder. The values are compared in float64: in float32 the forward's
    # straight-through output z + (q - z) rounds q by an ulp, which the decoder carried to
    # 4e-6, within 3x of the default tolerance; in float64 the two agree to 1e-14.
    assert torch.equal(vq.indices, indices)
    exact, x64 = copy.deepcopy(small).double(), images.double()
    torch.testing.assert_close(exact.decode(exact.encode(x64)), exact(x64)[0], rtol=0, atol=1e-12)


def test_tokens_to_image_equals_decode(small, device, gen):
    indices = torch.randint(0, 16, (2, 8, 8), generator=gen).to(device)
    with torch.no_grad():
        by_hand = tokens_to_image(indices, small.quantizer.codebook, small.decoder)
    torch.testing.assert_close(by_hand, small.decode(indices))


def test_grid_size_follows_image_size():
    config = TokenizerConfig(image_size=32, channels=8, num_codes=16, kmeans_init=False)
    tok = VQTokenizer(config)
    assert config.grid_size == 16
    assert tok.encode(torch.zeros(1, 1, 32, 32)).shape == (1, 16, 16)


# --------------------------------------------------------------------------- bad input


def test_bad_images(small, device):
    with pytest.raises(ValueError, match=r"images must be \(B, 1, 16, 16\).*\(2, 1, 8, 8\)"):
        small.encode(torch.zeros(2, 1, 8, 8, device=device))
    with pytest.raises(ValueError, match=r"in_channels=1"):
        small.encode(torch.zeros(2, 3, 16, 16, device=device))
    with pytest.raises(ValueError, match=r"images must be"):
        small(torch.zeros(1, 16, 16, device=device))
    with pytest.raises(TypeError, match="floating-point"):
        small.encode(torch.zeros(2, 1, 16, 16, dtype=torch.uint8, device=device))
    with pytest.raises(ValueError, match="empty"):
        small.encode(torch.zeros(0, 1, 16, 16, device=device))


def test_bad_indices(small, device):
    with pytest.raises(
        ValueError, match=r"indices must lie in \[0, 15\].*got values in \[16, 16\]"
    ):
        small.decode(torch.full((1, 8, 8), 16, device=device))
    with pytest.raises(ValueError, match=r"\[-1, 0\]"):
        small.decode(
            torch.cat([torch.full((1, 1, 8), -1), torch.zeros(1, 7, 8, dtype=torch.int64)], 1).to(
                device
            )
        )
    with pytest.raises(ValueError, match=r"indices must be \(B, 8, 8\)"):
        small.decode(torch.zeros(1, 64, dtype=torch.int64, device=device))
    with pytest.raises(TypeError, match="integer"):
        small.decode(torch.zeros(1, 8, 8, device=device))


def test_decode_reads_uint8_ids_as_ids_not_as_a_mask(small, device, gen):
    indices = torch.randint(0, 16, (2, 8, 8), generator=gen).to(device)
    torch.testing.assert_close(small.decode(indices.to(torch.uint8)), small.decode(indices))


def test_bad_configs():
    with pytest.raises(ValueError, match="image_size must be even"):
        TokenizerConfig(image_size=15)
    with pytest.raises(ValueError, match="num_codes"):
        TokenizerConfig(num_codes=0)
    with pytest.raises(ValueError, match="unknown TokenizerConfig fields"):
        TokenizerConfig.from_dict({"num_codes": 8, "codes": 3})
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="disc_weight"):
        TrainConfig(disc_weight=-1.0)
    with pytest.raises(ValueError, match="lr must be a finite number"):  # inf made NaN weights
        TrainConfig(lr=float("inf"))
    with pytest.raises(ValueError, match="disc_weight must be a finite number"):
        TrainConfig(disc_weight=float("inf"))
    with pytest.raises(TypeError, match="TokenizerConfig"):
        VQTokenizer({"num_codes": 8})


# --------------------------------------------------------------------------- training


@pytest.mark.slow
def test_training_is_deterministic_and_learns():
    config = TokenizerConfig(channels=8, num_codes=16)
    train = TrainConfig(steps=40, batch_size=16)
    a, history_a = train_tokenizer(config, train, progress=False)
    b, history_b = train_tokenizer(config, train, progress=False)
    assert history_a == history_b
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not a.training
    assert sum(history_a["rec"][-5:]) < 0.5 * sum(history_a["rec"][:5])
    other, _ = train_tokenizer(config, dataclasses.replace(train, seed=1), progress=False)
    assert not torch.equal(other.decoder.conv_out.weight, a.decoder.conv_out.weight)


def test_train_restores_the_determinism_and_thread_settings():
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    train_tokenizer(
        TokenizerConfig(channels=8, num_codes=16),
        TrainConfig(steps=2, batch_size=16),
        progress=False,
    )
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == before


def test_train_on_device(device):
    config = TokenizerConfig(channels=8, num_codes=16)
    tok, history = train_tokenizer(
        config, TrainConfig(steps=3, batch_size=16), device=device, progress=False
    )
    assert tok.device.type == torch.device(device).type
    assert len(history["rec"]) == 3


# --------------------------------------------------------------------------- checkpoints


def test_save_and_load_round_trip(small, tmp_path, gen):
    small = small.cpu().eval()
    path = checkpoints.save(small, tmp_path / "tok.pt", meta={"note": "test"})
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["kind"] == "tokenizer" and payload["meta"] == {"note": "test"}
    loaded = checkpoints.load("tokenizer", path)
    assert isinstance(loaded, VQTokenizer) and loaded.meta == {"note": "test"}
    assert loaded.config == small.config and not loaded.training
    images = torch.rand(2, 1, 16, 16, generator=gen) * 2 - 1
    assert torch.equal(loaded.encode(images), small.encode(images))


def test_loading_the_wrong_kind_is_an_error(tmp_path):
    from minitok.prior import ARPrior, PriorConfig

    prior = ARPrior(PriorConfig(num_codes=16, grid_size=4, n_layer=1, n_head=2, n_embd=16))
    path = checkpoints.save(prior, tmp_path / "other.pt")
    with pytest.raises(checkpoints.CheckpointError, match="expected 'tokenizer'"):
        checkpoints.load("tokenizer", path)
    with pytest.raises(checkpoints.CheckpointError, match="no such checkpoint file"):
        checkpoints.load("tokenizer", tmp_path / "missing.pt")


def test_shipped_checkpoint_is_small_and_weights_only():
    assert SHIPPED.is_file(), "run scripts/train_tokenizer.py"
    assert SHIPPED.stat().st_size < 512 * 1024
    payload = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert payload["kind"] == "tokenizer"
    assert payload["meta"]["script"] == "scripts/train_tokenizer.py"
    config = TokenizerConfig.from_dict(payload["config"])
    assert config.grid_size >= 8 and config.image_size == 16


def test_shipped_tokenizer_on_device(device):
    images, _ = load_digits("test", size=16)
    cpu_recon, cpu_indices = reconstruct(checkpoints.load("tokenizer"), images)
    recon, indices = reconstruct(checkpoints.load("tokenizer", device=device), images)
    # Float rounding differs between devices, so a vector exactly between two codes may flip.
    assert (indices == cpu_indices).float().mean() > 0.99
    assert (recon - cpu_recon).abs().mean() < 1e-3
    # encode/decode accept CPU tensors and answer on the model's device.
    on_device = checkpoints.load("tokenizer", device=device)
    ids = on_device.encode(images[:2])
    assert ids.device.type == device.type
    assert on_device.decode(cpu_indices[:2]).device.type == device.type


def test_train_tokenizer_runs_the_step_it_is_given():
    """Lesson 03 trains with the learner's step: train_tokenizer calls step_fn, without a
    discriminator before disc_start and with it (and disc_weight, max_weight) after."""
    from minitok.tokenizer import tokenizer_step

    calls = []

    def step(model, images, optimizer, disc=None, d_optimizer=None, disc_weight=1.0,
             max_weight=1e4):
        calls.append((disc is not None, disc_weight, max_weight))
        return tokenizer_step(model, images, optimizer, disc, d_optimizer, disc_weight,
                              max_weight)

    train = TrainConfig(steps=4, batch_size=8, gan=True, disc_start=2, disc_channels=8,
                        disc_weight=0.5, max_weight=0.25)
    _, history = train_tokenizer(TokenizerConfig(channels=8, num_codes=8), train,
                                 progress=False, step_fn=step)
    assert calls == [(False, 1.0, 1e4)] * 2 + [(True, 0.5, 0.25)] * 2
    assert history["lambda"][:2] == [0.0, 0.0] and max(history["lambda"]) <= 0.25
