"""What every detector of almdn offers: the :class:`Detector` protocol.

:class:`~almdn.models.ssd.MixtureSSD` and :class:`~almdn.models.frcnn.MixtureFasterRCNN`
both satisfy it; the training, inference, acquisition and app code is written against it,
so none of them branches on the architecture.

In eval mode ``model(images)`` returns one dictionary per image with ``boxes``, ``scores``,
``labels`` (Eq. 7's mixture prediction), the four uncertainties of Eq. 1 / Eq. 8
(:data:`almdn.registry.UNCERTAINTY_NAMES`), ``cls_entropy`` and each detection's mixture
(:func:`almdn.models.postprocess.detection_values`: component boxes, weights, variances,
per-edge sigmas, class weights and probabilities, the anchor or proposal box); in train mode
``model(images, targets)`` returns a dictionary of losses.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Detector(Protocol):
    """A mixture-density detector (Sec. 3.1), single-stage or two-stage."""

    #: The C object class names; label i is ``class_names[i - 1]`` (0 is background).
    class_names: list[str]
    #: C + 1, background included.
    num_classes: int
    #: The builder call that made the model (a checkpoint rebuilds it from this).
    config: dict[str, Any]
    #: Most detections returned per image.
    detections_per_img: int

    @property
    def head_type(self) -> str:
        """"gmm", "eff" or "plain" (:data:`almdn.registry.HEAD_TYPES`)."""
        ...

    @property
    def num_components(self) -> int:
        """K, mixture components per box coordinate and per class (1 for "plain")."""
        ...

    def __call__(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        """Detections per image (eval mode) or the losses (train mode)."""
        ...

    def image_features(self, images: list[Tensor]) -> Tensor:
        """``(B, D)`` one feature vector per image (the core-set baseline's)."""
        ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def parameters(self, recurse: bool = True) -> Any: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...
