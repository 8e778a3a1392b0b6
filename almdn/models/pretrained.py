"""Starting points for training: torchvision's COCO-trained detectors (``--init``).

``--init`` is ``coco`` (torchvision's COCO weights from torch's cache, or a download),
``imagenet`` (ImageNet backbone only), ``none`` (random) or a PATH to a torchvision-format
state dict. From a torchvision detector every layer except the last predictor layers loads
exactly; the last layers are mapped class by class: a user class whose name is a COCO category
(case-insensitive, with the usual synonyms) takes that category's predictor rows, so the
mixture's Eq. 7 mean starts equal to the pretrained predictor's output; other classes start
fresh.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from almdn.errors import UserError
from almdn.models.frcnn import MixtureBoxPredictor, MixtureFasterRCNN, PlainBoxPredictor
from almdn.models.heads import MixtureHead, PlainHead
from almdn.models.ssd import MixtureSSD

INIT_CHOICES: tuple[str, ...] = ("coco", "imagenet", "none")

# almdn architecture -> name of torchvision's weights enum with its COCO_V1 entry.
TORCHVISION_COCO_WEIGHTS = {
    "ssd300_vgg16": "SSD300_VGG16_Weights",
    "ssdlite320_mobilenet_v3_large": "SSDLite320_MobileNet_V3_Large_Weights",
    "frcnn_resnet50_fpn": "FasterRCNN_ResNet50_FPN_Weights",
    "frcnn_resnet50_fpn_v2": "FasterRCNN_ResNet50_FPN_V2_Weights",
    "frcnn_mobilenet_v3_large_fpn": "FasterRCNN_MobileNet_V3_Large_FPN_Weights",
    "frcnn_mobilenet_v3_large_320_fpn": "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights",
}

# Other names users give COCO's categories (PASCAL VOC's among them).
COCO_SYNONYMS = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "plane": "airplane",
    "bike": "bicycle",
    "sofa": "couch",
    "tvmonitor": "tv",
    "tv monitor": "tv",
    "television": "tv",
    "diningtable": "dining table",
    "table": "dining table",
    "pottedplant": "potted plant",
    "plant": "potted plant",
    "cellphone": "cell phone",
    "mobile phone": "cell phone",
    "phone": "cell phone",
    "people": "person",
    "pedestrian": "person",
    "human": "person",
    "ball": "sports ball",
    "hydrant": "fire hydrant",
    "laptop computer": "laptop",
    "hand bag": "handbag",
    "doughnut": "donut",
    "hotdog": "hot dog",
    "aircraft": "airplane",
    "ship": "boat",
    "automobile": "car",
}


class InitError(UserError, ValueError):
    """A starting point that cannot be used, said in one sentence."""


def coco_categories() -> list[str]:
    """torchvision's 91 COCO labels (index 0 background, "N/A" for ids COCO left unused)."""
    from torchvision.models.detection import SSD300_VGG16_Weights

    return list(SSD300_VGG16_Weights.COCO_V1.meta["categories"])


def coco_class_map(class_names: list[str]) -> dict[int, int]:
    """``{label: COCO index}`` for the classes (label i is ``class_names[i-1]``) named like a
    COCO category, case-insensitive, after :data:`COCO_SYNONYMS`; background maps to 0."""
    index = {name.lower(): i for i, name in enumerate(coco_categories()) if name not in ("__background__", "N/A")}
    mapping = {0: 0}
    for label, name in enumerate(class_names, start=1):
        key = " ".join(name.lower().replace("_", " ").replace("-", " ").split())
        key = COCO_SYNONYMS.get(key, COCO_SYNONYMS.get(key.replace(" ", ""), key))
        if key in index:
            mapping[label] = index[key]
    return mapping


def coco_weights_file(arch: str) -> Path:
    """Where torchvision keeps (or would download) the COCO weights of ``arch``."""
    from torchvision.models import detection

    weights = getattr(detection, TORCHVISION_COCO_WEIGHTS[arch]).COCO_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]


def coco_state_dict(arch: str) -> dict[str, Tensor]:
    """torchvision's COCO state dict for ``arch``: from torch's cache, else downloaded."""
    from torchvision.models import detection

    if arch not in TORCHVISION_COCO_WEIGHTS:
        raise InitError(f"torchvision has no COCO weights for {arch}; use one of {', '.join(TORCHVISION_COCO_WEIGHTS)} or --init imagenet.")
    path = coco_weights_file(arch)
    if path.is_file():
        return read_state_dict(path)
    try:
        return getattr(detection, TORCHVISION_COCO_WEIGHTS[arch]).COCO_V1.get_state_dict(progress=True, check_hash=True)
    except Exception:  # no network: URLError, OSError, ... -- the user can place the file by hand
        raise InitError(
            f"torchvision's COCO weights for {arch} are not on this machine and cannot be downloaded: "
            f"copy {path.name} (from {getattr(detection, TORCHVISION_COCO_WEIGHTS[arch]).COCO_V1.url}) into {path.parent}."
        ) from None


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from disk (also inside torchvision's reference checkpoints, key "model")."""
    path = Path(path)
    if not path.is_file():
        raise InitError(f"No weights file at {path}; give a torchvision state dict saved with torch.save(model.state_dict(), path).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InitError(f"{path} is not a readable state dict ({type(exc).__name__}); save one with torch.save(model.state_dict(), path).") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InitError(f"{path} holds no state dict of tensors; save one with torch.save(model.state_dict(), path).")
    return state


def _copy_in_order(own: nn.Module, source: dict[str, Tensor], prefix: str, what: str, path: str) -> None:
    """Load ``source``'s ``prefix`` entries into ``own`` by position: almdn's modules hold
    torchvision's layers in torchvision's order under other names (trunk/extras split)."""
    theirs = [(k, v) for k, v in source.items() if k.startswith(prefix)]
    mine = own.state_dict()
    if len(theirs) != len(mine) or any(v.shape != m.shape for (_, v), m in zip(theirs, mine.values())):
        raise InitError(f"The {what} in {path} does not match this architecture's; give a torchvision state dict of the same architecture.")
    own.load_state_dict({k: v for k, (_, v) in zip(mine, theirs)})


def _final_layer(source: dict[str, Tensor], prefix: str) -> tuple[Tensor, Tensor]:
    """Weight and bias of the last conv under ``prefix`` (the predictor layer of one map)."""
    keys = [k for k in source if k.startswith(prefix)]
    return source[keys[-2]], source[keys[-1]]


def _into_depthwise_pair(tower: nn.Sequential, source: dict[str, Tensor], i: int, reg_w: Tensor, cls_w: Tensor, path: str) -> tuple[Tensor, Tensor]:
    """SSDLiteHead's two depthwise convs (class, box) of map ``i`` into the tower's paired
    depthwise filters (2c: class, 2c+1: box) and its BatchNorm; returns the two 1x1 predictor
    weights widened to read only their own half of the tower's channels."""
    dw, bn = tower[0], tower[1]
    for half, name in ((0, "classification_head"), (1, "regression_head")):
        pre = f"head.{name}.module_list.{i}.0."
        if source[pre + "0.weight"].shape[0] * 2 != dw.weight.shape[0]:
            raise InitError(f"The {name.replace('_', ' ')} in {path} does not match this architecture's.")
        dw.weight[half::2] = source[pre + "0.weight"]
        for attr in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, attr)[half::2] = source[pre + "1." + attr]
    widened = []
    for half, w in ((1, reg_w), (0, cls_w)):
        wide = w.new_zeros(w.shape[0], 2 * w.shape[1], *w.shape[2:])
        wide[:, half::2] = w
        widened.append(wide)
    return widened[0], widened[1]


@torch.no_grad()
def init_ssd_from_torchvision(model: MixtureSSD, source: dict[str, Tensor], path: str = "the weights file") -> dict[int, int]:
    """Load a torchvision SSD / SSDlite state dict into ``model``; returns the class map used.

    The backbone and, for the plain head, every head layer but the classification predictor
    load exactly. Predictor rows are anchor-major (``a * classes + c``), so each mapped class
    takes its COCO row for every anchor. A mixture head without a hidden layer
    (``hidden_channels=0``: one conv, or SSDlite's paired depthwise conv and 1x1) gets, for every component k, the pretrained box rows as box means
    (plus a perturbation with zero mean over k, so the components can separate) and the
    pretrained class rows as class means, with equal weights: its Eq. 7 mean is the
    predictor's output.
    """
    _copy_in_order(model.backbone, source, "backbone.", "backbone", path)
    mapping = coco_class_map(model.class_names)
    head = model.head
    num_maps = len(model.backbone.out_channels)
    ours = torch.tensor(list(mapping), dtype=torch.long)
    coco = torch.tensor(list(mapping.values()), dtype=torch.long)
    if isinstance(head, PlainHead):
        tv = head.ssd_head
        _copy_in_order(tv.regression_head, source, "head.regression_head.", "regression head", path)
        for i, layer in enumerate(tv.classification_head.module_list):
            w, b = _final_layer(source, f"head.classification_head.module_list.{i}.")
            final = layer if isinstance(layer, nn.Conv2d) else layer[-1]
            if isinstance(layer, nn.Sequential):  # SSDlite: the depthwise conv before loads exactly
                _copy_in_order(layer[:-1], source, f"head.classification_head.module_list.{i}.0.", "classification head", path)
            anchors = final.out_channels // model.num_classes
            if w.shape[0] % anchors or w.shape[1:] != final.weight.shape[1:]:
                raise InitError(f"The classification head in {path} does not match this architecture's.")
            per = w.shape[0] // anchors  # classes of the pretrained predictor
            rows_mine = (torch.arange(anchors)[:, None] * model.num_classes + ours).flatten()
            rows_theirs = (torch.arange(anchors)[:, None] * per + coco).flatten()
            final.weight[rows_mine] = w[rows_theirs]
            final.bias[rows_mine] = b[rows_theirs]
        return mapping
    # hidden_channels 0: one conv (SSD), or SSDlite's depthwise conv, BatchNorm, ReLU6 and 1x1.
    if not isinstance(head, MixtureHead) or any(len(t) != 1 and not (len(t) == 4 and t[0].groups > 1) for t in head.towers):
        raise InitError(
            "Only a mixture head without a hidden layer (hidden_channels 0) can start from a torchvision predictor; "
            "build it with hidden_channels=0 or use --head plain."
        )
    k, c = head.num_components, head.num_classes
    p = sum(head.split_sizes)
    cls_start = 3 * k * 4
    for i in range(num_maps):
        reg_w, reg_b = _final_layer(source, f"head.regression_head.module_list.{i}.")
        cls_w, cls_b = _final_layer(source, f"head.classification_head.module_list.{i}.")
        tower = head.towers[i]
        conv = tower[-1]
        if len(tower) == 4:
            reg_w, cls_w = _into_depthwise_pair(tower, source, i, reg_w, cls_w, path)
        anchors = head.num_anchors[i]
        if reg_w.shape[1:] != conv.weight.shape[1:] or reg_w.shape[0] != anchors * 4:
            raise InitError(f"The regression head in {path} does not match this architecture's.")
        per = cls_w.shape[0] // anchors
        a = torch.arange(anchors)
        # box means: component k of anchor a at rows a*P + 4k + coord.
        box_rows = (a[:, None, None] * p + torch.arange(k)[None, :, None] * 4 + torch.arange(4)).reshape(anchors, k * 4)
        src = reg_w.reshape(anchors, 1, 4, *reg_w.shape[1:]).expand(anchors, k, 4, *reg_w.shape[1:])
        fresh = conv.weight[box_rows.flatten()].reshape(anchors, k, 4, *reg_w.shape[1:])
        spread = 0.1 * (fresh - fresh.mean(dim=1, keepdim=True))  # zero mean over k: Eq. 7 mean unchanged
        conv.weight[box_rows.flatten()] = (src + spread).reshape(-1, *reg_w.shape[1:])
        conv.bias[box_rows.flatten()] = reg_b.reshape(anchors, 1, 4).expand(anchors, k, 4).reshape(-1)
        # weight logits (box: rows 8k.., class: the last k): zero, so pi is uniform.
        for start, size in ((2 * k * 4, k * 4), (p - k, k)):
            rows = (a[:, None] * p + start + torch.arange(size)).flatten()
            conv.weight[rows] = 0.0
            conv.bias[rows] = 0.0
        # class means of mapped classes: component k at rows a*P + cls_start + k*c + label.
        rows_mine = (a[:, None, None] * p + cls_start + torch.arange(k)[None, :, None] * c + ours).flatten()
        rows_theirs = (a[:, None, None] * per + coco).expand(anchors, k, len(coco)).flatten()
        conv.weight[rows_mine] = cls_w[rows_theirs]
        conv.bias[rows_mine] = cls_b[rows_theirs]
    return mapping


@torch.no_grad()
def init_frcnn_from_torchvision(model: MixtureFasterRCNN, source: dict[str, Tensor], path: str = "the weights file") -> dict[int, int]:
    """Load a torchvision Faster R-CNN state dict into ``model``; returns the class map used.

    The module names are torchvision's, so everything but ``roi_heads.box_predictor`` loads by
    name. The plain predictor takes each mapped class's score row and its 4 box rows. A
    mixture predictor with class-specific boxes gets them as every component's means for its
    box set and class means, with equal weights (zero weight logits): its Eq. 7 mean is the
    predictor's output; box-set components are spread with zero mean over k.
    """
    predictor_keys = [k for k in source if k.startswith("roi_heads.box_predictor.")]
    rest = {k: v for k, v in source.items() if k not in predictor_keys}
    own = model.state_dict()
    if any(k in own and own[k].shape != v.shape for k, v in rest.items()):
        raise InitError(f"The layers in {path} do not match this architecture's; give a torchvision state dict of the same architecture.")
    missing, unexpected = model.load_state_dict(rest, strict=False)
    if unexpected or any(not k.startswith("roi_heads.box_predictor.") for k in missing):
        raise InitError(f"The layers in {path} do not match this architecture's; give a torchvision state dict of the same architecture.")
    cls_w, cls_b = source["roi_heads.box_predictor.cls_score.weight"], source["roi_heads.box_predictor.cls_score.bias"]
    box_w, box_b = source["roi_heads.box_predictor.bbox_pred.weight"], source["roi_heads.box_predictor.bbox_pred.bias"]
    mapping = coco_class_map(model.class_names)
    ours = torch.tensor(list(mapping), dtype=torch.long)
    coco = torch.tensor(list(mapping.values()), dtype=torch.long)
    box_mine, box_theirs = (ours[:, None] * 4 + torch.arange(4)), (coco[:, None] * 4 + torch.arange(4))
    predictor = model.roi_heads.box_predictor
    if isinstance(predictor, PlainBoxPredictor):
        predictor.cls_score.weight[ours] = cls_w[coco]
        predictor.cls_score.bias[ours] = cls_b[coco]
        predictor.bbox_pred.weight[box_mine.flatten()] = box_w[box_theirs.flatten()]
        predictor.bbox_pred.bias[box_mine.flatten()] = box_b[box_theirs.flatten()]
        return mapping
    if not isinstance(predictor, MixtureBoxPredictor) or predictor.class_agnostic_boxes:
        raise InitError(
            "A mixture predictor starts from torchvision's class-specific box predictor only with class-specific boxes; "
            "build it with class_agnostic_boxes=False or use --head plain."
        )
    k, c = predictor.num_components, predictor.num_classes
    layer = predictor.mixture
    comp = torch.arange(k)
    # box means of set j, component k, coordinate d at row (j*K + k)*4 + d (reshape (B, K, 4)).
    rows = ((ours[:, None, None] * k + comp[None, :, None]) * 4 + torch.arange(4)).reshape(len(ours), k, 4)
    src_w = box_w[box_theirs][:, None].expand(len(ours), k, 4, box_w.shape[1])
    fresh = layer.weight[rows.flatten()].reshape(len(ours), k, 4, -1)
    layer.weight[rows.flatten()] = (src_w + 0.1 * (fresh - fresh.mean(dim=1, keepdim=True))).reshape(-1, box_w.shape[1])
    layer.bias[rows.flatten()] = box_b[box_theirs][:, None].expand(len(ours), k, 4).reshape(-1)
    b = predictor.box_sets
    box_w_start, cls_start = 2 * b * k * 4, 3 * b * k * 4
    for start, size in ((box_w_start, b * k * 4), (sum(predictor.split_sizes) - k, k)):  # weight logits: uniform pi
        layer.weight[start : start + size] = 0.0
        layer.bias[start : start + size] = 0.0
    cls_rows = (cls_start + comp[:, None] * c + ours).flatten()
    layer.weight[cls_rows] = cls_w[coco].repeat(k, 1)
    layer.bias[cls_rows] = cls_b[coco].repeat(k)
    return mapping


def init_build_options(arch: str, head: str, init: str) -> dict:
    """``build_model`` keywords for starting point ``init``: ``pretrained`` (ImageNet backbone
    for "imagenet" only) and, from a torchvision detector, the head in the predictor's own form
    (the SSD's one-conv tower, Faster R-CNN's class-specific boxes) so Eq. 7 can start at its
    output, and Faster R-CNN's frozen BatchNorm / 3 trainable stages (torchvision's rule for
    loaded weights)."""
    options: dict = {"pretrained": init == "imagenet"}
    if init in ("imagenet", "none"):
        return options
    frcnn = arch.startswith("frcnn")
    if head != "plain":
        options.update({"class_agnostic_boxes": False} if frcnn else {"hidden_channels": 0})
    if frcnn:
        options.update(frozen_batchnorm=True, trainable_backbone_layers=3)
    return options


def apply_init(model: nn.Module, init: str, arch: str) -> str:
    """Load the ``coco`` or PATH starting point into ``model`` (built with ``pretrained=False``);
    returns the sentence naming the mapped classes. ``imagenet`` / ``none`` are build options."""
    if init in ("imagenet", "none"):
        return ""
    if arch not in TORCHVISION_COCO_WEIGHTS:
        raise InitError(f"--init {init} needs one of {', '.join(TORCHVISION_COCO_WEIGHTS)}; {arch} starts from --init imagenet or none.")
    source, where = (coco_state_dict(arch), "torchvision's COCO weights") if init == "coco" else (read_state_dict(init), str(init))
    if isinstance(model, MixtureFasterRCNN):
        mapping = init_frcnn_from_torchvision(model, source, where)
    else:
        mapping = init_ssd_from_torchvision(model, source, where)
    names = [f"{model.class_names[label - 1]} -> {coco_categories()[idx]}" for label, idx in mapping.items() if label]
    fresh = [name for i, name in enumerate(model.class_names, start=1) if i not in mapping]
    return (
        f"Started from {where}: classes mapped to COCO categories: {', '.join(names) or 'none'}"
        + (f"; starting fresh: {', '.join(fresh)}." if fresh else ".")
    )
