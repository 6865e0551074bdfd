"""Saving and loading minitok's models: weights-only files, checked for integrity on load.

A checkpoint is a plain dict of tensors, numbers and strings, so it loads with
`torch.load(..., weights_only=True)` (loading never runs code from the file), and it carries
the sha256 of everything else in it, so a file that changed after it was written (one
flipped byte in a weight) is refused instead of giving subtly different tokens:

    {"format": 2, "kind": "prior", "config": {...plain values...},
     "state_dict": {...tensors...}, "meta": {"script": ..., "seed": ..., ...},
     "sha256": "..."}

    Checkpointable                       what every saved model is: a kind and a config
    save(model, path, meta)              any Checkpointable model
    load(kind, path=None, device="cpu")  the model, in eval mode, with `.meta`
    load_payload(path, kind)             the verified dict, for tools that need the raw parts
    training_meta(script, recipe, ...)   the one layout of `meta`, for every model
    check_tokenizer(model, tokenizer)    a token model must be read with its own tokenizer

The shipped models live in minitok/checkpoints/; the scripts in scripts/ rebuild them.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from minitok import validate

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
FORMAT = 2

# kind -> "module:Class" of the model it holds; each class has `config_class` and is built
# from `config_class(**payload["config"])`.
MODELS = {
    "tokenizer": "minitok.tokenizer:VQTokenizer",
    "prior": "minitok.prior:ARPrior",
    "maskgit": "minitok.maskgit:MaskGIT",
    "anytoany": "minitok.anytoany:AnyToAny",
    "diffusion": "minitok.diffusion:DiffusionModel",
    "diffusion_decoder": "minitok.diffusion:DiffusionDecoder",
    "var_tokenizer": "minitok.msvq:MultiScaleTokenizer",
    "var": "minitok.var:VAR",
    "classifier": "minitok.classifier:DigitClassifier",
}


class Checkpointable(torch.nn.Module):
    """A model `save` and `load` know. Its class names its checkpoint `kind` (a key of MODELS)
    and its `config_class`, a dataclass (`load` builds `config_class(**saved config)`).

    Every such model keeps the config it was built from as `self.config`, checked here, once
    for all of them.
    """

    kind: str
    config_class: type

    def __init__(self, config):
        super().__init__()
        self.config = validate.instance(config, "config", self.config_class)


class CheckpointError(ValueError):
    """A file that is not a sound minitok checkpoint of the expected kind."""


def check_kind(kind) -> str:
    """`kind` if it names a model minitok saves (a key of MODELS)."""
    if not isinstance(kind, str) or kind not in MODELS:
        raise ValueError(f"kind must be one of {', '.join(MODELS)}; got {kind!r}")
    return kind


def check_path(path, name: str = "path") -> Path:
    """`path` as a Path, if it is a str or a path-like object."""
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise TypeError(f"{name} must be a file path (str or pathlib.Path), got {path!r}")
    return Path(path)


def check_device(device) -> torch.device:
    """`device` as a torch.device, if it names one this machine has."""
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got "
                         f"{device!r}") from err
    backends = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if found.type in backends and not backends[found.type]():
        raise ValueError(f"device {device!r} is not available on this machine "
                         f"(torch.{found.type} finds none); use 'cpu'")
    return found


def check_meta(meta) -> dict:
    """A copy of `meta` (None: {}), if it is a dict of plain values: str keys, and values that
    JSON can write (numbers, strings, lists, dicts...), which is what the digest reads and
    what `torch.load(weights_only=True)` can read back."""
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(key, str) for key in meta):
        raise TypeError(f"meta must be a dict with str keys (or None), got {meta!r}"[:200])
    try:
        json.dumps(meta, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise TypeError(f"meta must hold only plain values (numbers, strings, lists, dicts): "
                        f"{err}") from err
    return dict(meta)


def checkpoint_path(kind: str) -> Path:
    """Where the shipped checkpoint of `kind` (e.g. "tokenizer") lives inside the package."""
    return CHECKPOINT_DIR / f"{check_kind(kind)}.pt"


def model_class(kind: str) -> type:
    """The class of the `kind` models (imported on first use)."""
    module, name = MODELS[check_kind(kind)].split(":")
    return getattr(importlib.import_module(module), name)


def digest(kind: str, config: dict, state_dict: dict, meta: dict) -> str:
    """sha256 of a checkpoint's contents: its kind, config and meta (as JSON) and every tensor
    (name, dtype, shape and bytes), in name order."""
    h = hashlib.sha256(json.dumps([kind, config, meta], sort_keys=True).encode())
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save(model: torch.nn.Module, path: str | Path, meta: dict | None = None) -> Path:
    """Write `model` (its kind, its config, its CPU state dict) and `meta` to `path`.

    model: one of the MODELS (a `kind` and a `config` of its class's config_class); meta: a
    dict of plain values, or None."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a minitok model (a torch.nn.Module with a kind), got "
                        f"{type(model).__name__}")
    if getattr(model, "kind", None) not in MODELS:
        raise TypeError(f"model must be one of minitok's models ({', '.join(MODELS)}), got a "
                        f"{type(model).__name__} of kind {getattr(model, 'kind', None)!r}")
    cls = model_class(model.kind)
    if not isinstance(model, cls) or not isinstance(getattr(model, "config", None),
                                                    cls.config_class):
        raise TypeError(f"model must be a {cls.__name__} with a {cls.config_class.__name__} "
                        f"config, as its kind {model.kind!r} says, got {type(model).__name__}")
    path, meta = check_path(path), check_meta(meta)
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    config = asdict(model.config)
    payload = {"format": FORMAT, "kind": model.kind, "config": config, "state_dict": state,
               "meta": meta, "sha256": digest(model.kind, config, state, meta)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def read_safely(path: Path, error: Callable[[str], Exception]):
    """torch.load(path) onto the CPU with weights_only=True (tensors and plain values: loading
    runs no code from the file). A damaged file raises `error(why)`: torch raises many types
    for one, and `why` names the type and the first of its message."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise error(f"{type(err).__name__}: {str(err)[:200]}") from err


def load_payload(path: str | Path, kind: str) -> dict:
    """The verified contents of the checkpoint at `path`, which must hold a `kind` model.

    Every way a file can be wrong (missing, empty, truncated, not a checkpoint, another
    kind, edited after it was written) is a CheckpointError that names the file.
    """
    check_kind(kind)
    path = check_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file (the script named in its "
                              f"lesson rebuilds it)")
    payload = read_safely(path, lambda why: CheckpointError(f"{path}: not a readable "
                                                           f"checkpoint ({why})"))
    keys = {"format", "kind", "config", "state_dict", "meta", "sha256"}
    if not isinstance(payload, dict) or not keys <= set(payload):
        raise CheckpointError(f"{path}: not a minitok checkpoint (format {FORMAT}: a dict with "
                              f"{', '.join(sorted(keys))})")
    if payload["kind"] != kind:
        raise CheckpointError(f"{path}: holds a {payload['kind']!r} model, expected {kind!r}")
    found = digest(kind, payload["config"], payload["state_dict"], payload["meta"])
    if found != payload["sha256"]:
        raise CheckpointError(f"{path}: its contents do not match the sha256 it was saved with "
                              f"(the file changed after it was written); rebuild it")
    return payload


def load(kind: str, path: str | Path | None = None, device: str | torch.device = "cpu"):
    """The `kind` model saved at `path` (default: the shipped one), on `device`, in eval mode.

    Its `meta` (how it was trained, and what it scored) is kept as `model.meta`.
    """
    cls, device = model_class(kind), check_device(device)
    payload = load_payload(checkpoint_path(kind) if path is None else path, kind)
    model = cls(cls.config_class(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    model.meta = payload["meta"]
    model.checkpoint_sha256 = payload["sha256"]
    return model.to(device).eval()


def save_trained(model, path: str | Path, script: str, recipe: dict, seconds: float,
                 losses: list[float], results: dict | None = None, tokenizer=None,
                 name: str = "final_loss") -> tuple[Path, dict]:
    """Save a model a script has trained (`training_meta` says how): its results are
    `results` and, under `name`, the mean loss of its last 100 steps (4 decimals).
    Returns (the path written, the results)."""
    last = losses[-100:]
    results = {name: round(sum(last) / len(last), 4), **(results or {})}
    meta = training_meta(script, recipe, seconds, results, tokenizer)
    return save(model, path, meta), results


def training_meta(script: str, recipe: dict, seconds: float, results: dict | None = None,
                  tokenizer=None) -> dict:
    """The meta every checkpoint carries: how it was made, where, and what it scored.

    recipe: every setting that rebuilds it (steps, seed, lr, ...); results: what it scored;
    tokenizer: for models of token grids, the tokenizer they were trained on (its sha256 is
    kept, so that `check_tokenizer` can refuse another one).
    """
    validate.instance(script, "script", str)
    if not isinstance(recipe, dict) or not (results is None or isinstance(results, dict)):
        raise TypeError(f"recipe and results must be dicts (results may be None), got "
                        f"{type(recipe).__name__} and {type(results).__name__}")
    validate.number(seconds, "seconds", low=0)
    meta = {"script": script, "recipe": dict(recipe), "results": dict(results or {}),
            "seconds": round(float(seconds), 1), "torch": str(torch.__version__),
            "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs "
                       f"(training.train_loop runs on one thread)"}
    if tokenizer is not None:
        if not isinstance(getattr(tokenizer, "checkpoint_sha256", None), str):
            raise TypeError("tokenizer must be a model loaded with checkpoints.load (it "
                            "carries checkpoint_sha256), or None")
        meta["tokenizer_sha256"] = tokenizer.checkpoint_sha256
    return meta


def check_tokenizer(model, tokenizer) -> None:
    """Refuse to pair a token model with a tokenizer other than the one it was trained on:
    its ids would mean other codes. Both come from checkpoints, which record their sha256."""
    expected = getattr(model, "meta", {}).get("tokenizer_sha256")
    found = getattr(tokenizer, "checkpoint_sha256", None)
    if expected is not None and found != expected:
        raise ValueError(
            f"tokenizer: this {model.kind} model was trained on the tokenizer checkpoint "
            f"{expected[:12]}..., not {str(found)[:12]}...; its ids would mean other codes. "
            f"Rebuild it: python scripts/train_{model.kind}.py")
