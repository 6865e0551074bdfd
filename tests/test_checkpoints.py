"""minitok.checkpoints: one API for every model, weights only, refused when damaged.

A checkpoint must load back bit for bit with its meta; every way a file can be wrong
(edited after saving, not a checkpoint, empty, cut short, another kind, not weights only)
must be a CheckpointError that names the file; a token model must refuse a tokenizer other
than the one it was trained on. The shipped checkpoints are checked the same way.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from minitok import checkpoints
from minitok.anytoany import AnyToAny, AnyToAnyConfig
from minitok.checkpoints import CheckpointError
from minitok.classifier import ClassifierConfig, DigitClassifier
from minitok.maskgit import MaskGIT, MaskGITConfig
from minitok.msvq import MultiScaleConfig, MultiScaleTokenizer
from minitok.prior import ARPrior, PriorConfig
from minitok.tokenizer import TokenizerConfig, VQTokenizer
from minitok.var import VAR, VARConfig

KINDS = ("tokenizer", "prior", "maskgit", "anytoany", "var_tokenizer", "var", "classifier")


def tiny(kind: str, seed: int = 0) -> torch.nn.Module:
    """A small untrained model of `kind`, in eval mode."""
    torch.manual_seed(seed)
    size = {"n_layer": 1, "n_head": 2, "n_embd": 16}
    model = {
        "tokenizer": lambda: VQTokenizer(TokenizerConfig(image_size=8, channels=8, num_codes=12)),
        "prior": lambda: ARPrior(PriorConfig(num_codes=12, grid_size=4, **size)),
        "maskgit": lambda: MaskGIT(MaskGITConfig(num_codes=12, grid_size=4, **size)),
        "anytoany": lambda: AnyToAny(AnyToAnyConfig(num_codes=12, grid_size=4, **size)),
        "var_tokenizer": lambda: MultiScaleTokenizer(MultiScaleConfig(
            image_size=8, channels=8, num_codes=12, scales=(1, 2, 4))),
        "var": lambda: VAR(VARConfig(num_codes=12, code_dim=4, scales=(1, 2), **size)),
        "classifier": lambda: DigitClassifier(ClassifierConfig(hidden=8)),
    }[kind]()
    return model.eval()


def first_weight_bytes(model) -> bytes:
    """The raw little-endian bytes of the state dict's first tensor, as the file stores them."""
    tensor = next(iter(model.state_dict().values()))
    return tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_round_trip_is_bit_identical_and_keeps_meta(kind, tmp_path):
    model = tiny(kind)
    meta = {"script": "a test", "recipe": {"steps": 3, "seed": 0}, "results": {"loss": 1.5}}
    path = checkpoints.save(model, tmp_path / "sub" / f"{kind}.pt", meta)
    assert path == tmp_path / "sub" / f"{kind}.pt" and path.is_file()  # folders are made
    loaded = checkpoints.load(kind, path)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded.meta == meta and not loaded.training
    saved, back = model.state_dict(), loaded.state_dict()
    assert list(back) == list(saved)
    for name, tensor in saved.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name
    payload = checkpoints.load_payload(path, kind)
    assert payload["format"] == checkpoints.FORMAT and payload["kind"] == kind
    assert loaded.checkpoint_sha256 == payload["sha256"]
    assert payload["sha256"] == checkpoints.digest(kind, payload["config"],
                                                    payload["state_dict"], meta)
    # a plain dict of tensors and values: it loads with weights_only=True
    assert torch.load(path, weights_only=True)["meta"] == meta


def test_load_puts_the_model_on_the_device_and_meta_defaults_to_empty(tmp_path, device):
    path = checkpoints.save(tiny("prior"), tmp_path / "p.pt")
    loaded = checkpoints.load("prior", path, device=device)
    assert loaded.meta == {} and loaded.device.type == device.type


def test_save_writes_cpu_tensors_from_a_model_on_any_device(tmp_path, device):
    path = checkpoints.save(tiny("prior").to(device), tmp_path / "p.pt")
    state = torch.load(path, weights_only=True)["state_dict"]
    assert all(t.device.type == "cpu" for t in state.values())


def test_the_same_weights_with_other_meta_have_another_sha256(tmp_path):
    model = tiny("prior")
    a = checkpoints.load("prior", checkpoints.save(model, tmp_path / "a.pt", {"seed": 0}))
    b = checkpoints.load("prior", checkpoints.save(model, tmp_path / "b.pt", {"seed": 1}))
    c = checkpoints.load("prior", checkpoints.save(model, tmp_path / "c.pt", {"seed": 0}))
    assert a.checkpoint_sha256 != b.checkpoint_sha256
    assert a.checkpoint_sha256 == c.checkpoint_sha256  # the sha of the contents, not the file


# --------------------------------------------------------------------------- damaged files


def _saved(tmp_path, kind="prior"):
    model = tiny(kind)
    return model, checkpoints.save(model, tmp_path / f"{kind}.pt", {"seed": 0})


@pytest.mark.parametrize("kind", KINDS)
def test_one_flipped_byte_in_a_weight_is_refused(kind, tmp_path):
    model, path = _saved(tmp_path, kind)
    data = bytearray(path.read_bytes())
    weight = first_weight_bytes(model)
    at = data.find(weight)
    assert at > 0 and data.count(weight) == 1  # the tensor's data record, found once
    data[at + len(weight) // 2] ^= 0x01  # one bit of one byte in the middle of the tensor
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["kind"] == kind  # torch itself reads it
    with pytest.raises(CheckpointError, match="do not match the sha256") as info:
        checkpoints.load(kind, path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="do not match the sha256"):
        checkpoints.load_payload(path, kind)


def test_meta_edited_after_saving_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["meta"]["seed"] = 1  # edited, sha256 left as it was
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not match the sha256") as info:
        checkpoints.load("prior", path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("damage", ["text", "empty", "truncated", "half", "not a dict",
                                    "missing keys", "a pickled object"])
def test_a_file_that_is_not_a_sound_checkpoint_is_a_clear_error_naming_it(damage, tmp_path):
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    if damage == "text":
        path.write_text("epoch 3: loss 1.25\n" * 20)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(data[:-100])
    elif damage == "half":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "not a dict":
        torch.save([torch.zeros(2)], path)
    elif damage == "missing keys":
        torch.save({"kind": "prior", "state_dict": {}}, path)
    else:  # loading never runs code from the file (weights_only=True)
        path.write_bytes(pickle.dumps(Exception("code, not weights"), protocol=2))
    with pytest.raises(CheckpointError) as info:
        checkpoints.load("prior", path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)  # CheckpointError is a ValueError


def test_a_missing_file_is_a_checkpoint_error_naming_it(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file") as info:
        checkpoints.load("prior", tmp_path / "nowhere.pt")
    assert str(tmp_path / "nowhere.pt") in str(info.value)


def test_a_checkpoint_of_another_kind_is_refused(tmp_path):
    _, path = _saved(tmp_path, "maskgit")
    for kind in ("prior", "tokenizer", "anytoany"):
        with pytest.raises(CheckpointError, match=f"holds a 'maskgit' model, expected '{kind}'"
                           ) as info:
            checkpoints.load(kind, path)
        assert str(path) in str(info.value)


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind must be one of tokenizer, prior, maskgit, anytoany"):
        checkpoints.load("vae")


# --------------------------------------------------------------------------- meta and tokenizers


def test_training_meta_has_the_one_layout():
    tokenizer = checkpoints.load("tokenizer")
    meta = checkpoints.training_meta("scripts/x.py", {"steps": 3, "seed": 0}, 12.345,
                                     {"loss": 1.5}, tokenizer=tokenizer)
    assert set(meta) == {"script", "recipe", "results", "seconds", "torch", "machine",
                         "tokenizer_sha256"}
    assert meta["recipe"] == {"steps": 3, "seed": 0} and meta["results"] == {"loss": 1.5}
    assert meta["seconds"] == 12.3 and meta["torch"] == str(torch.__version__)
    assert meta["tokenizer_sha256"] == tokenizer.checkpoint_sha256
    plain = checkpoints.training_meta("scripts/x.py", {"steps": 3}, 1.0)
    assert plain["results"] == {} and "tokenizer_sha256" not in plain


def test_check_tokenizer_refuses_a_tokenizer_with_another_sha256(tmp_path):
    tokenizer = checkpoints.load("tokenizer", checkpoints.save(tiny("tokenizer"),
                                                                tmp_path / "tok.pt"))
    prior = tiny("prior")
    meta = checkpoints.training_meta("scripts/train_prior.py", {"steps": 1}, 1.0,
                                     tokenizer=tokenizer)
    prior = checkpoints.load("prior", checkpoints.save(prior, tmp_path / "prior.pt", meta))
    checkpoints.check_tokenizer(prior, tokenizer)  # its own tokenizer: fine
    other = checkpoints.load("tokenizer", checkpoints.save(tiny("tokenizer", seed=1),
                                                            tmp_path / "other.pt"))
    with pytest.raises(ValueError, match="tokenizer: this prior model was trained on the "
                                         "tokenizer checkpoint") as info:
        checkpoints.check_tokenizer(prior, other)
    assert tokenizer.checkpoint_sha256[:12] in str(info.value)
    assert other.checkpoint_sha256[:12] in str(info.value)
    assert "python scripts/train_prior.py" in str(info.value)
    with pytest.raises(ValueError, match="not None"):  # a tokenizer that is no checkpoint
        checkpoints.check_tokenizer(prior, tiny("tokenizer"))
    checkpoints.check_tokenizer(tiny("prior"), other)  # a model with no record: nothing to check


# --------------------------------------------------------------------------- the shipped ones


@pytest.mark.parametrize("kind", KINDS)
def test_the_shipped_checkpoints_verify_and_carry_the_one_meta_layout(kind):
    path = checkpoints.checkpoint_path(kind)
    assert path == checkpoints.CHECKPOINT_DIR / f"{kind}.pt" and path.is_file()
    model = checkpoints.load(kind)  # verified against its sha256
    for key in ("script", "recipe", "results", "seconds", "torch", "machine"):
        assert key in model.meta, (kind, key)
    assert model.meta["script"] == f"scripts/train_{kind}.py"
    assert {"steps", "seed"} <= set(model.meta["recipe"])
    if kind not in ("tokenizer", "classifier"):  # token models pin their tokenizer (VAR: the
        # multi-scale one, itself fine-tuned from the shipped tokenizer)
        checkpoints.check_tokenizer(model, checkpoints.load("var_tokenizer" if kind == "var"
                                                            else "tokenizer"))
    assert checkpoints.checkpoint_path(kind).stat().st_size <= 2 * 2**20  # the 2 MB budget
