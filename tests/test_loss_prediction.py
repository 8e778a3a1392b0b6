"""LLAL's learning-loss module and its ranking loss, alone and inside the SSD."""

import pytest
import torch

from almdn.models import build_model
from almdn.models.loss_prediction import LossPredictionModule, loss_prediction_loss


def test_ranking_loss_against_a_hand_computation():
    predicted = torch.tensor([0.5, 2.0, 1.0, 0.0])
    target = torch.tensor([3.0, 1.0, 2.0, 0.5])
    # pairs (0, 3) and (1, 2): true diffs 2.5 > 0 and -1 < 0; predicted diffs 0.5 and 1.0
    # losses max(0, 1 - 0.5) = 0.5 and max(0, 1 + 1.0) = 2.0 -> mean 1.25
    assert float(loss_prediction_loss(predicted, target, margin=1.0)) == pytest.approx(1.25)


def test_ranking_loss_is_zero_when_the_order_is_right_by_the_margin():
    predicted = torch.tensor([5.0, 0.0, 1.0, 3.0])
    target = torch.tensor([9.0, 1.0, 2.0, 0.0])
    assert float(loss_prediction_loss(predicted, target, margin=1.0)) == 0.0
    assert float(loss_prediction_loss(torch.tensor([1.0]), torch.tensor([2.0]))) == 0.0  # no pair


def test_module_predicts_one_value_per_image_and_its_gradient_stops_at_the_features():
    module = LossPredictionModule([4, 8], hidden=16)
    features = [torch.rand(3, 4, 5, 5, requires_grad=True), torch.rand(3, 8, 2, 2, requires_grad=True)]
    out = module(features)
    assert out.shape == (3,)
    out.sum().backward()
    assert features[0].grad is None and module.out.weight.grad is not None
    attached = LossPredictionModule([4, 8], hidden=16, detach_features=False)
    attached(features).sum().backward()
    assert features[0].grad is not None


def _batch():
    images = [torch.rand(3, 128, 128) for _ in range(4)]
    box = {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([2])}
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    return images, [box, box, empty, box]


def test_the_ssd_trains_the_module_jointly_and_reports_predicted_losses():
    torch.manual_seed(0)
    model = build_model("ssd_small", num_classes=3, loss_prediction=True)
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_localization", "loss_classification", "loss_loss_prediction"}
    assert float(losses["loss_loss_prediction"]) >= 0
    sum(losses.values()).backward()
    assert model.loss_prediction.out.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        detections = model(images)
    predicted = torch.stack([d["predicted_loss"] for d in detections])
    assert predicted.shape == (4,) and torch.isfinite(predicted).all()
    assert model.config["loss_prediction"] is True
    plain = build_model("ssd_small", num_classes=3)
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == sum(p.numel() for p in model.loss_prediction.parameters()) > 0


def test_the_model_learns_to_rank_its_own_losses():
    # An image without objects has no positive, so no hard negatives and a zero loss: the pairs
    # (box, empty) always rank the same way, and a few steps suffice to learn it.
    torch.manual_seed(0)
    model = build_model("ssd_small", num_classes=3, loss_prediction=True)
    images, targets = _batch()
    targets = [targets[0], targets[1], targets[2], targets[2]]
    opt = torch.optim.SGD(model.loss_prediction.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(60):
        losses = model(images, targets)
        opt.zero_grad()
        losses["loss_loss_prediction"].backward()
        opt.step()
    assert float(losses["loss_loss_prediction"]) < 0.5
