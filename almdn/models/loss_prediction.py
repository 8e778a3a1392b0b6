"""The learning-loss module of LLAL (Yoo & Kweon, CVPR 2019), the Tab. 4 baseline.

A small head on the detector's feature maps predicts each image's detection loss; it is
trained jointly with the detector by a pairwise margin ranking loss, and the pool images with
the highest predicted loss are labeled next.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LossPredictionModule(nn.Module):
    """Global average pooling, a ``hidden``-wide linear layer and ReLU per feature map, then
    one linear layer over their concatenation: one predicted loss per image.

    Args:
        in_channels: channels of each feature map the detector's head reads.
        hidden: width per feature map (128 in LLAL).
        detach_features: stop the ranking loss's gradient at the features. LLAL does this for
            the last 40% of training because that gradient hurts the detector; on the short
            schedules used here there is no room for a first phase, so it is on from the start.
    """

    def __init__(self, in_channels: list[int], hidden: int = 128, detach_features: bool = True):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(nn.Linear(c, hidden), nn.ReLU(inplace=True)) for c in in_channels)
        self.out = nn.Linear(hidden * len(in_channels), 1)
        self.detach_features = detach_features

    def forward(self, features: list[Tensor]) -> Tensor:
        pooled = [f.detach() if self.detach_features else f for f in features]
        hidden = [branch(f.mean(dim=(2, 3))) for branch, f in zip(self.branches, pooled)]
        return self.out(torch.cat(hidden, dim=1)).squeeze(1)


def loss_prediction_loss(predicted: Tensor, target: Tensor, margin: float = 1.0) -> Tensor:
    """LLAL's ranking loss: the batch is split into pairs (i, B-1-i) and each pair pays
    ``max(0, -sign(l_i - l_j) * (p_i - p_j) + margin)``; averaged over the B // 2 pairs.

    ``target`` (the real per-image losses) is detached: the module learns to rank the
    detector's losses, it does not change them.
    """
    half = predicted.shape[0] // 2
    if half == 0:
        return predicted.sum() * 0.0
    diff_pred = (predicted - predicted.flip(0))[:half]
    diff_true = (target - target.flip(0)).detach()[:half]
    sign = torch.where(diff_true > 0, 1.0, -1.0).to(diff_pred.dtype)
    return torch.clamp(margin - sign * diff_pred, min=0).mean()
