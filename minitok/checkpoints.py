"""Saving and loading the small pretrained models that ship inside the package.

A checkpoint is a plain dict of tensors, numbers and strings, so it loads with
`torch.load(..., weights_only=True)`: loading never runs code from the file.

    {"kind": "tokenizer", "config": {...plain values...}, "state_dict": {...tensors...},
     "meta": {"seed": 0, "steps": 3000, "script": "scripts/train_tokenizer.py", ...}}
"""

from __future__ import annotations

from pathlib import Path

import torch

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"


def checkpoint_path(name: str) -> Path:
    """Where the shipped checkpoint `name` (e.g. "tokenizer") lives inside the package."""
    return CHECKPOINT_DIR / f"{name}.pt"


def save_checkpoint(path: str | Path, kind: str, config: dict, model: torch.nn.Module,
                    meta: dict | None = None) -> Path:
    """Write a weights-only checkpoint: the model's fp32 CPU state dict plus its config."""
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    payload = {"kind": kind, "config": dict(config), "state_dict": state, "meta": dict(meta or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def load_checkpoint(path: str | Path, kind: str) -> dict:
    """Read a checkpoint written by `save_checkpoint`, safely, and check what it holds."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"path: no checkpoint at {str(path)!r}; the script named in its lesson rebuilds it"
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        found = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"path: {str(path)!r} holds a {found!r} checkpoint, expected {kind!r}")
    return payload
