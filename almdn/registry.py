"""Names and defaults every layer needs without importing torch (the CLI's choices, the store, the app).

The library modules that implement these names import them from here, so a choice offered by
the command line or the app is always one the library knows.
"""

from __future__ import annotations

#: Classification losses: "eq5" is the paper's pi-weighted sum of component cross-entropies
#: (Eq. 5 / Eq. 9); "type2" is the reference implementation's mixture likelihood of the target
#: class (:func:`almdn.models.losses.mixture_class_nll`).
CLASS_LOSSES: tuple[str, ...] = ("eq5", "type2")
#: The classification loss of every model trained without saying otherwise. Type-2, by
#: measurement: on the demo protocol it keeps the class mixture from collapsing at equal mAP
#: (README, Results).
DEFAULT_CLS_LOSS = "type2"

#: The four uncertainties of a detection (Sec. 3.3): box and class, aleatoric and epistemic
#: (Eq. 1 for the box, Eq. 8 for the class).
UNCERTAINTY_NAMES: tuple[str, ...] = ("loc_aleatoric", "loc_epistemic", "cls_aleatoric", "cls_epistemic")

#: Heads of every detector: "gmm" (the paper's mixture head, Fig. 2a), "eff" (its efficient
#: variant without class variances, Fig. 2b, Eq. 9) and "plain" (torchvision's head: the
#: baseline, without uncertainties).
HEAD_TYPES: tuple[str, ...] = ("gmm", "eff", "plain")
#: The heads that predict mixtures (Eq. 2), hence the four uncertainties.
MIXTURE_HEAD_TYPES: tuple[str, ...] = ("gmm", "eff")

#: The single-stage detectors (:class:`almdn.models.ssd.MixtureSSD`), in words.
SSD_ARCHITECTURES: dict[str, str] = {
    "ssd_small": "small SSD trained from scratch, 128 px (the demo; trains on a CPU in minutes)",
    "ssd_mobilenet_v2": "ImageNet MobileNetV2 SSD, 320 px",
    "ssd_mobilenet_v2_small": "ImageNet MobileNetV2 SSD, 128 px (trains on a CPU in minutes)",
    "ssd300_vgg16": "the paper's SSD300 with VGG-16, 300 px (needs a GPU)",
    "ssdlite320_mobilenet_v3_large": "torchvision's SSDlite, MobileNetV3-Large with depthwise heads, 320 px (CPU or small GPU)",
}
#: The two-stage detectors (:class:`almdn.models.frcnn.MixtureFasterRCNN`), in words.
FRCNN_ARCHITECTURES: dict[str, str] = {
    "frcnn_resnet50_fpn": "the paper's Faster R-CNN (Tab. 6), ResNet-50 FPN, 800 px (needs a GPU)",
    "frcnn_mobilenet_v2": "Faster R-CNN, ImageNet MobileNetV2 FPN, 320 px (trains on a CPU)",
    "frcnn_resnet50_fpn_v2": "torchvision's Faster R-CNN v2, ResNet-50 FPN, 800 px (needs a GPU)",
    "frcnn_mobilenet_v3_large_fpn": "torchvision's Faster R-CNN, MobileNetV3-Large FPN, 800 px",
    "frcnn_mobilenet_v3_large_320_fpn": "torchvision's Faster R-CNN, MobileNetV3-Large FPN, 320 px (CPU)",
}
#: Architectures whose input side cannot change (their extra layers end at 1x1 for this size).
FIXED_IMAGE_SIZES: dict[str, int] = {"ssd300_vgg16": 300}
#: Every architecture :func:`almdn.models.build_model` builds, with a line on each.
ARCHITECTURES: dict[str, str] = {**SSD_ARCHITECTURES, **FRCNN_ARCHITECTURES}
ARCH_NAMES: tuple[str, ...] = tuple(ARCHITECTURES)

#: What a project's rounds (the app's Settings page) offer, CPU-friendly first; the first is
#: the default. The rounds train with SSD's augmentation recipe, so the single-stage detectors.
ROUND_ARCH_NAMES: tuple[str, ...] = (
    "ssd_mobilenet_v2_small", "ssd_small", "ssd_mobilenet_v2", "ssdlite320_mobilenet_v3_large", "ssd300_vgg16",
)
#: The heads a round offers: the mixture heads (the plain head has no uncertainty to rank by).
ROUND_HEAD_TYPES: tuple[str, ...] = MIXTURE_HEAD_TYPES

# ---- Defaults: each named once; the CLI, the app's settings, the runner and the library read
# them from here (a test searches the tree for second literals).

#: Detections at or above this score are the ones kept, scored and shown (Sec. 3.4's
#: "detections" of an image; the SSD convention the paper follows).
DEFAULT_CONF_THRESHOLD: float = 0.5
#: Detections at or above this score count, each weighted by its score, for the score-weighted
#: methods (entropy_weighted, almdn_weighted): every image with a faint detection is ranked.
DEFAULT_LOW_THRESHOLD: float = 0.05
#: K, the number of mixture components per box coordinate and per class (Eq. 2); the paper
#: uses 4. A head may have 1 (a single Gaussian: no epistemic spread) to 16.
DEFAULT_NUM_COMPONENTS: int = 4
MIN_COMPONENTS: int = 1
MAX_COMPONENTS: int = 16
#: How the four z-scored uncertainties make an image's score (Tab. 2): the maximum of all
#: four, the paper's best.
DEFAULT_AGGREGATION: str = "max_all"
#: Training-time augmentation: "auto" (SSD's recipe for SSD, flips for Faster R-CNN), "ssd"
#: (photometric distortion, zoom-out, IoU crop, flip), "flip" and "none".
AUGMENT_POLICIES: tuple[str, ...] = ("auto", "ssd", "flip", "none")
DEFAULT_AUGMENT: str = "auto"
#: Optimizers a training run takes; AdamW by measurement on the demo (README, Results).
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
DEFAULT_OPTIMIZER: str = "adamw"
#: The port of a locally started Label Studio server (always on 127.0.0.1).
LABEL_STUDIO_PORT: int = 8080
