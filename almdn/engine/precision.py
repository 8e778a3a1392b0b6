"""Mixed precision (bf16 / fp16 autocast) and channels_last for the SSD detectors on CUDA.

Only the network runs in reduced precision: the outputs of the backbone and of the mixture
head are cast back to float32, so the anchors, the box decoding (Eq. 7), NMS, the four
uncertainties (Eq. 1, 8) and the losses (Eq. 3-6) are computed in float32 exactly as without
autocast. On the CPU autocast is ignored with a note (bfloat16 autocast made a demo training
step 3-4x slower on this project's 2-core CPU: its backward pass, bench/results/train-speed-cpu.md),
while ``channels_last`` is honoured for the SSD models: an opt-in, off by default, that speeds up
the MobileNetV2 forward pass on the CPU and changes float32 rounding (the default float32
contiguous path is the one every result of this project was measured with).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from almdn.models import MixtureSSD

AMP_MODES: tuple[str, ...] = ("off", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """How a model runs: ``autocast_dtype`` None means float32.

    Attributes:
        autocast_dtype: torch.bfloat16, torch.float16 or None.
        device_type: the autocast device type ("cuda", or "cpu" in tests).
        channels_last: convert the model's 4-d weights to channels_last.
        grad_scaler: training needs a GradScaler (fp16 only: its range is too narrow for
            small gradients; bf16 has float32's range).
        note: one sentence when a requested option was ignored, else "".
    """

    autocast_dtype: torch.dtype | None = None
    device_type: str = "cpu"
    channels_last: bool = False
    grad_scaler: bool = False
    note: str = ""


def resolve_precision(amp: str, channels_last: bool, device: torch.device, model: nn.Module | None = None) -> Precision:
    """What ``amp`` ("off", "bf16", "fp16") and ``channels_last`` mean for ``model`` on ``device``."""
    if amp not in AMP_MODES:
        raise ValueError(f"Unknown mixed-precision mode '{amp}'; choose one of {', '.join(AMP_MODES)}.")
    device = torch.device(device)
    asked = [f"mixed precision {amp}"] if amp != "off" else []
    asked += ["channels_last"] if channels_last else []
    if not asked:
        return Precision(device_type=device.type)
    if device.type != "cuda":
        # channels_last is honoured on the CPU too, for the SSD models (opt-in: MobileNetV2's
        # depthwise convolutions run faster in it, bench/results/train-speed-cpu.md, at a
        # float32 rounding difference); autocast stays CUDA only.
        cl = channels_last and (model is None or isinstance(model, MixtureSSD))
        ignored = [a for a in asked if a != "channels_last" or not cl]
        note = f"{' and '.join(ignored)} ignored on {device.type} (CUDA only); running in float32." if ignored else ""
        return Precision(device_type=device.type, channels_last=cl, note=note)
    if model is not None and not isinstance(model, MixtureSSD):
        return Precision(device_type="cuda", note=f"{' and '.join(asked)} ignored: supported for the SSD models only; running in float32.")
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        return Precision(device_type="cuda", channels_last=channels_last, note="bf16 is not supported by this GPU; running in float32 (try --amp fp16).")
    dtype = _DTYPES.get(amp)
    return Precision(dtype, "cuda", channels_last, grad_scaler=amp == "fp16")


def _to_float32(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    return value


def _float32_hook(module: nn.Module, inputs: Any, output: Any) -> Any:
    return _to_float32(output)


@contextmanager
def mixed_precision(model: MixtureSSD, precision: Precision) -> Iterator[None]:
    """Run ``model``'s forward passes inside this block under ``precision``'s autocast, with
    the backbone's feature maps and the head's mixture parameters returned as float32.

    The feature maps matter too: the anchor generator takes its dtype from them.
    """
    if precision.autocast_dtype is None:
        yield
        return
    handles = [model.backbone.register_forward_hook(_float32_hook), model.head.register_forward_hook(_float32_hook)]
    try:
        with torch.autocast(device_type=precision.device_type, dtype=precision.autocast_dtype):
            yield
    finally:
        for handle in handles:
            handle.remove()


def apply_channels_last(model: nn.Module, precision: Precision) -> nn.Module:
    """Convert ``model``'s 4-d weights to channels_last when ``precision`` asks for it (the
    convolutions then produce channels_last activations, which tensor cores prefer)."""
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    return model
