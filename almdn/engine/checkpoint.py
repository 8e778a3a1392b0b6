"""Checkpoints: what a model is (its builder call) plus its weights, written atomically.

Checkpoints are read with ``torch.load(weights_only=True)``: only tensors, numbers, strings
and containers of them are unpickled, so a file from someone else cannot run code when it is
opened. Everything written here is of those types (numpy values become plain numbers).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from almdn.errors import UserError
from almdn.models import Detector, model_from_config

FORMAT = "almdn-checkpoint"
VERSION = 1


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file that cannot be read as an almdn model."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: as given, else CUDA when present, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def save_checkpoint(path: str | Path, model: Detector, **extra: Any) -> Path:
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
        **{k: plain(v) for k, v in extra.items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python numbers and lists (the types
    a ``weights_only`` load accepts); tensors and containers are kept."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


# numpy scalars and dtypes rebuild plain values without calling arbitrary code; older
# checkpoints stored metrics as numpy floats, and these let them load under weights_only.
_numpy_core = np._core if hasattr(np, "_core") else np.core
_NUMPY_GLOBALS = [np.dtype, _numpy_core.multiarray.scalar, *(type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool"))]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dictionary; one clear error if the file is missing or not ours.

    Loaded with ``weights_only=True``: a file holding anything but tensors and plain values
    (a pickled object that could run code) is refused, never executed.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No checkpoint at '{path}'; train a model first (almdn train).")
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"Checkpoint '{path}' holds Python objects other than weights and plain values, which could run code when opened; "
            "almdn refuses to load it: use a model.pt written by almdn train."
        ) from None
    except Exception as exc:
        raise CheckpointError(f"Cannot read checkpoint '{path}' ({type(exc).__name__}); it is damaged or not a model file.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not an almdn checkpoint.")
    return payload


def checkpoint_model(payload: dict[str, Any], path: str | Path, weights: bool = True) -> Detector:
    """The model a checkpoint's ``model_config`` describes (with its weights when
    ``weights``); a config that builds no model, or weights that do not fit it, are one
    :class:`CheckpointError` naming the file, never a traceback."""
    config = payload.get("model_config")
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise CheckpointError(f"Checkpoint '{path}' has no valid model_config (a dictionary of the builder's settings); use a model.pt written by almdn train.")
    try:
        model = model_from_config(config)
    except Exception as exc:  # an unknown architecture, a wrong type or value of a setting
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"Checkpoint '{path}' has a model_config that builds no model ({reason}); use a model.pt written by almdn train.") from None
    if weights:
        state = payload.get("state_dict")
        try:
            if not isinstance(state, dict):
                raise TypeError("no state_dict")
            model.load_state_dict(state)
        except Exception as exc:  # missing or unexpected keys, shapes of another model
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"Checkpoint '{path}' holds weights that do not fit its model_config ({reason}); it is damaged or not a model file.") from None
    return model


def load_model(path: str | Path, device: str | torch.device | None = "cpu") -> Detector:
    """Rebuild the model stored in ``path`` and load its weights (eval mode)."""
    model = checkpoint_model(read_checkpoint(path), path)
    return model.to(resolve_device(device)).eval()
