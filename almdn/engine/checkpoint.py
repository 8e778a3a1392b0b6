"""Checkpoints: what a model is (its builder call) plus its weights, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from almdn.models import MixtureSSD, model_from_config

FORMAT = "almdn-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read as an almdn model."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: as given, else CUDA when present, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def save_checkpoint(path: str | Path, model: MixtureSSD, **extra: Any) -> Path:
    """Write ``model`` (config + weights) and ``extra`` entries to ``path`` atomically.

    The file is written beside its destination and renamed, so an interruption never leaves a
    truncated checkpoint where a good one was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dictionary; one clear error if the file is missing or not ours."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No checkpoint at '{path}'; train a model first (almdn train).")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"Cannot read checkpoint '{path}' ({type(exc).__name__}); it is damaged or not a model file.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not an almdn checkpoint.")
    return payload


def load_model(path: str | Path, device: str | torch.device | None = "cpu") -> MixtureSSD:
    """Rebuild the model stored in ``path`` and load its weights (eval mode)."""
    payload = read_checkpoint(path)
    model = model_from_config(payload["model_config"])
    model.load_state_dict(payload["state_dict"])
    return model.to(resolve_device(device)).eval()
