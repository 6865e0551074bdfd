"""Saving and loading minitok's models: weights-only files, checked for integrity on load.

A checkpoint is a plain dict of tensors, numbers and strings, so it loads with
`torch.load(..., weights_only=True)` (loading never runs code from the file), and it carries
the sha256 of everything else in it, so a file that changed after it was written (one
flipped byte in a weight) is refused instead of giving subtly different tokens:

    {"format": 2, "kind": "prior", "config": {...plain values...},
     "state_dict": {...tensors...}, "meta": {"script": ..., "seed": ..., ...},
     "sha256": "..."}

    save(model, path, meta)              any model with a `kind`, a `config` dataclass
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
}


class CheckpointError(ValueError):
    """A file that is not a sound minitok checkpoint of the expected kind."""


def checkpoint_path(kind: str) -> Path:
    """Where the shipped checkpoint of `kind` (e.g. "tokenizer") lives inside the package."""
    return CHECKPOINT_DIR / f"{kind}.pt"


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
    """Write `model` (its kind, its config, its CPU state dict) and `meta` to `path`."""
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    config, meta = asdict(model.config), dict(meta or {})
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
    path = Path(path)
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
    if kind not in MODELS:
        raise ValueError(f"kind must be one of {', '.join(MODELS)}; got {kind!r}")
    payload = load_payload(checkpoint_path(kind) if path is None else path, kind)
    module, name = MODELS[kind].split(":")
    cls = getattr(importlib.import_module(module), name)
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
    import torch

    meta = {"script": script, "recipe": dict(recipe), "results": dict(results or {}),
            "seconds": round(float(seconds), 1), "torch": str(torch.__version__),
            "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs "
                       f"(training.train_loop runs on one thread)"}
    if tokenizer is not None:
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
