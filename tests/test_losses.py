"""Eq. 3, 5, 6 and 9: float64 agreement, reductions, stability, zero and positive cases."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from almdn.models.losses import (
    class_loss_function,
    detection_loss,
    gaussian_log_density,
    hard_negative_mask,
    mixture_class_nll,
    mixture_cross_entropy,
    mixture_nll,
    perturbed_class_logits,
)


@pytest.fixture
def rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print("seed", seed)
    return np.random.default_rng(seed)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("density", ["paper", "reference"])
def test_mixture_nll_equals_direct_float64_evaluation(rng, density):
    n, k = 9, 4
    target = rng.normal(size=(n, 4))
    mu = rng.normal(size=(n, k, 4))
    var_logits = rng.normal(size=(n, k, 4))
    w_logits = rng.normal(size=(n, k, 4))
    got = mixture_nll(*(torch.tensor(a, dtype=torch.float32) for a in (target, mu, var_logits, w_logits)), density=density)
    pi = _softmax(w_logits, axis=1)
    v = _sigmoid(var_logits)
    if density == "paper":
        dens = norm.pdf(target[:, None, :], loc=mu, scale=np.sqrt(v))
    else:
        dens = np.exp(-((target[:, None, :] - mu) ** 2) / (2 * v**2)) / (np.sqrt(2 * np.pi) * (v + 0.3))
    expected = -np.log((pi * dens).sum(1) + 1e-9)
    np.testing.assert_allclose(got.numpy(), expected, rtol=2e-5, atol=2e-5)


def test_k1_reduces_to_a_single_gaussian(rng):
    target = torch.tensor(rng.normal(size=(5, 4)))
    mu = torch.tensor(rng.normal(size=(5, 1, 4)))
    var_logits = torch.tensor(rng.normal(size=(5, 1, 4)))
    zero_w = torch.zeros(5, 1, 4, dtype=torch.float64)
    var = torch.sigmoid(var_logits[:, 0])
    log_prob = torch.distributions.Normal(mu[:, 0], var.sqrt()).log_prob(target)
    torch.testing.assert_close(mixture_nll(target, mu, var_logits, zero_w, eps=0.0), -log_prob)
    # with Eq. 3's epsilon: -log(N + eps)
    torch.testing.assert_close(mixture_nll(target, mu, var_logits, zero_w), -torch.logaddexp(log_prob, torch.tensor(math.log(1e-9), dtype=torch.float64)))
    # and the classification loss with K = 1 is the ordinary cross-entropy
    logits = torch.tensor(rng.normal(size=(6, 1, 5)))
    labels = torch.tensor(rng.integers(0, 5, size=6))
    ce = mixture_cross_entropy(logits, torch.zeros(6, 1, dtype=torch.float64), labels)
    torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(logits[:, 0], labels, reduction="none"))


def test_nll_is_finite_where_direct_evaluation_underflows():
    # A target 200 standard deviations away: the density is 0 in float32; eps bounds the loss.
    nll = mixture_nll(torch.full((1, 4), 50.0), torch.zeros(1, 4, 4), torch.full((1, 4, 4), -3.0), torch.zeros(1, 4, 4))
    assert torch.isfinite(nll).all()
    assert nll.max().item() == pytest.approx(-math.log(1e-9), rel=1e-4)
    # A very negative variance logit is floored instead of giving log(0).
    assert torch.isfinite(gaussian_log_density(torch.zeros(2), torch.zeros(2), torch.full((2,), -1e4))).all()


def test_mixture_cross_entropy_equals_weighted_component_ce(rng):
    logits = torch.tensor(rng.normal(size=(4, 3, 6)))
    w = torch.tensor(rng.normal(size=(4, 3)))
    y = torch.tensor([0, 5, 2, 1])
    got = mixture_cross_entropy(logits, w, y)
    pi = torch.softmax(w, -1)
    expected = sum(pi[:, j] * torch.nn.functional.cross_entropy(logits[:, j], y, reduction="none") for j in range(3))
    torch.testing.assert_close(got, expected)


def test_reparameterisation_uses_the_standard_deviation():
    mu, var_logits, noise = torch.zeros(3), torch.zeros(3), torch.ones(3)
    # sigmoid(0) = 0.5 -> sqrt(0.5)
    torch.testing.assert_close(perturbed_class_logits(mu, var_logits, noise), torch.full((3,), 0.5**0.5))
    assert perturbed_class_logits(mu, None, noise) is mu


def test_hard_negative_mining_keeps_ratio_times_positives_of_highest_loss():
    loss = torch.tensor([[5.0, 1.0, 4.0, 3.0, 2.0, 9.0, 0.5], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
    fg = torch.tensor([[False, False, False, False, False, True, False], [False] * 7])
    neg = hard_negative_mask(loss, fg, 3)
    assert neg[0].tolist() == [True, False, True, True, False, False, False]
    assert not neg[1].any()  # no positives in that image -> no negatives


def _outputs(b, a, k, c, requires_grad=False, eff=False):
    shapes = {
        "bbox_means": (b, a, k, 4),
        "bbox_var_logits": (b, a, k, 4),
        "bbox_weight_logits": (b, a, k, 4),
        "cls_means": (b, a, k, c),
        "cls_var_logits": (b, a, k, c),
        "cls_weight_logits": (b, a, k),
    }
    out = {n: torch.randn(*s, requires_grad=requires_grad) for n, s in shapes.items()}
    if eff:
        out["cls_var_logits"] = None
    return out


@pytest.mark.parametrize("eff", [False, True])
def test_loss_is_zero_without_positives_and_positive_with_one_box(eff):
    out = _outputs(2, 30, 4, 5, requires_grad=True, eff=eff)
    none = detection_loss(out, torch.zeros(2, 30, 4), torch.zeros(2, 30, dtype=torch.long))
    assert all(v.item() == 0.0 for v in none.values())
    sum(none.values()).backward()  # still differentiable
    cls_targets = torch.zeros(2, 30, dtype=torch.long)
    cls_targets[1, 7] = 3
    one = detection_loss(out, torch.randn(2, 30, 4), cls_targets)
    assert one["loss_classification"].item() > 0
    assert one["loss_localization"].item() != 0


def test_total_loss_matches_eq6_by_hand():
    torch.manual_seed(0)
    out = _outputs(1, 20, 3, 4, eff=True)
    loc_t = torch.randn(1, 20, 4)
    cls_t = torch.zeros(1, 20, dtype=torch.long)
    cls_t[0, [2, 5]] = torch.tensor([1, 3])
    got = detection_loss(out, loc_t, cls_t, neg_to_pos_ratio=3, eta=2.0, cls_loss="eq5")
    fg = cls_t[0] > 0
    l_loc = mixture_nll(loc_t[0][fg], out["bbox_means"][0][fg], out["bbox_var_logits"][0][fg], out["bbox_weight_logits"][0][fg]).sum()
    ce = mixture_cross_entropy(out["cls_means"][0], out["cls_weight_logits"][0], cls_t[0])
    neg_loss = ce.masked_fill(fg, -1).topk(6).values.sum()
    expected_cls = (ce[fg].sum() + neg_loss) / 2
    torch.testing.assert_close(got["loss_localization"], l_loc / 2 / 2)
    torch.testing.assert_close(got["loss_classification"], expected_cls)


@pytest.mark.parametrize("eff", [False, True])
def test_gradients_reach_every_mixture_parameter(eff):
    out = _outputs(2, 40, 4, 6, requires_grad=True, eff=eff)
    cls_t = torch.zeros(2, 40, dtype=torch.long)
    cls_t[0, :3] = torch.tensor([1, 2, 5])
    cls_t[1, 10] = 4
    sum(detection_loss(out, torch.randn(2, 40, 4), cls_t).values()).backward()
    for name, t in out.items():
        if t is None:
            continue
        assert t.grad is not None and torch.isfinite(t.grad).all(), name
        assert t.grad.abs().sum() > 0, name


def test_per_image_loss_is_each_image_s_own_eq6_loss():
    # eff head: no noise draw, so the batch and the single-image losses are comparable exactly.
    torch.manual_seed(0)
    out = _outputs(3, 30, 2, 4, eff=True)
    cls_t = torch.zeros(3, 30, dtype=torch.long)
    cls_t[0, [1, 5]] = 2
    cls_t[2, 7] = 1  # image 1 has no positive
    loc_t = torch.randn(3, 30, 4)
    batch = detection_loss(out, loc_t, cls_t, per_image=True)
    for i in range(3):
        alone = detection_loss({k: None if v is None else v[i : i + 1] for k, v in out.items()}, loc_t[i : i + 1], cls_t[i : i + 1])
        assert float(batch["per_image"][i]) == pytest.approx(float(sum(alone.values())), rel=1e-5)
    assert float(batch["per_image"][1]) == 0.0
    assert "per_image" not in detection_loss(out, loc_t, cls_t)


def test_type2_loss_equals_direct_float64_mixture_likelihood(rng):
    n, k, c = 11, 4, 6
    logits = rng.normal(scale=3.0, size=(n, k, c))
    w_logits = rng.normal(size=(n, k))
    targets = rng.integers(0, c, size=n)
    got = mixture_class_nll(torch.tensor(logits, dtype=torch.float32), torch.tensor(w_logits, dtype=torch.float32), torch.tensor(targets))
    pi = _softmax(w_logits, axis=1)
    p = _softmax(logits, axis=2)[np.arange(n), :, targets]  # (n, k): each component's probability of the target
    expected = -np.log((pi * p).sum(1))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_type2_loss_is_finite_where_every_component_underflows():
    logits = torch.tensor([[[200.0, -200.0], [150.0, -150.0]]])  # target 1 has probability ~e-400 everywhere
    got = mixture_class_nll(logits, torch.zeros(1, 2), torch.tensor([1]))
    assert torch.isfinite(got).all() and got.item() > 299


def test_eq5_charges_a_spread_mixture_more_than_type2_and_equals_it_when_collapsed(rng):
    # Jensen: -log sum_k pi_k p_k <= sum_k pi_k (-log p_k). The gap is what Eq. 5 charges for
    # spreading the weight over components that disagree, and it is 0 only once one component
    # holds all the weight: Eq. 5 pushes towards collapse, Type-2 does not.
    n, k, c = 50, 4, 5
    logits = torch.tensor(rng.normal(scale=2.0, size=(n, k, c)))
    targets = torch.tensor(rng.integers(0, c, size=n))
    spread = torch.tensor(rng.normal(size=(n, k)))
    gap = mixture_cross_entropy(logits, spread, targets) - mixture_class_nll(logits, spread, targets)
    assert (gap >= -1e-9).all() and gap.mean() > 0.1
    collapsed = torch.full((n, k), -60.0, dtype=torch.float64)
    collapsed[:, 2] = 60.0
    torch.testing.assert_close(mixture_cross_entropy(logits, collapsed, targets), mixture_class_nll(logits, collapsed, targets))


def test_type2_gradient_reaches_the_mixture_weights_and_every_class_output():
    out = _outputs(2, 40, 4, 6, requires_grad=True)
    cls_t = torch.zeros(2, 40, dtype=torch.long)
    cls_t[0, :3] = torch.tensor([1, 2, 5])
    cls_t[1, 10] = 4
    sum(detection_loss(out, torch.randn(2, 40, 4), cls_t, cls_loss="type2").values()).backward()
    for name in ("cls_weight_logits", "cls_means", "cls_var_logits"):
        grad = out[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_type2_detection_loss_matches_eq6_by_hand():
    torch.manual_seed(0)
    out = _outputs(1, 20, 3, 4, eff=True)
    loc_t = torch.randn(1, 20, 4)
    cls_t = torch.zeros(1, 20, dtype=torch.long)
    cls_t[0, [2, 5]] = torch.tensor([1, 3])
    got = detection_loss(out, loc_t, cls_t, neg_to_pos_ratio=3, cls_loss="type2")
    fg = cls_t[0] > 0
    nll = mixture_class_nll(out["cls_means"][0], out["cls_weight_logits"][0], cls_t[0])
    # negatives are ranked by the same Type-2 loss
    expected = (nll[fg].sum() + nll.masked_fill(fg, -1).topk(6).values.sum()) / 2
    torch.testing.assert_close(got["loss_classification"], expected)


def test_unknown_class_loss_is_one_clear_error():
    with pytest.raises(ValueError, match="eq5, type2"):
        class_loss_function("type3")


@pytest.mark.parametrize("cls_loss", ["eq5", "type2"])
def test_loss_on_the_selected_anchors_equals_the_masked_loss_over_all_anchors(cls_loss):
    # The loss ranks every anchor without a graph and evaluates only positives and mined
    # negatives: value and gradient must equal the plain masked sum over all anchors.
    out = _outputs(2, 50, 3, 5, requires_grad=True)
    cls_t = torch.zeros(2, 50, dtype=torch.long)
    cls_t[0, [3, 9]] = torch.tensor([2, 4])
    cls_t[1, 20] = 1
    got = detection_loss(out, torch.randn(2, 50, 4), cls_t, cls_loss=cls_loss, generator=torch.Generator().manual_seed(5))
    grad = torch.autograd.grad(got["loss_classification"], [out["cls_means"], out["cls_var_logits"], out["cls_weight_logits"]])

    noise = torch.randn(out["cls_means"].shape, generator=torch.Generator().manual_seed(5))
    per_anchor = class_loss_function(cls_loss)(perturbed_class_logits(out["cls_means"], out["cls_var_logits"], noise), out["cls_weight_logits"], cls_t)
    selected = (cls_t > 0) | hard_negative_mask(per_anchor, cls_t > 0, 3)
    expected = (per_anchor * selected).sum() / 3
    torch.testing.assert_close(got["loss_classification"], expected)
    for g, e in zip(grad, torch.autograd.grad(expected, [out["cls_means"], out["cls_var_logits"], out["cls_weight_logits"]])):
        torch.testing.assert_close(g, e)


def test_the_loss_defaults_to_the_documented_class_loss():
    """Issue 21: detection_loss defaulted to Eq. 5 while the documented default (and every
    builder's) is Type-2."""
    import inspect

    from almdn.registry import DEFAULT_CLS_LOSS

    assert DEFAULT_CLS_LOSS == "type2"
    assert inspect.signature(detection_loss).parameters["cls_loss"].default == DEFAULT_CLS_LOSS
    torch.manual_seed(0)
    out = _outputs(1, 20, 3, 4)
    loc_t, cls_t = torch.randn(1, 20, 4), torch.zeros(1, 20, dtype=torch.long)
    cls_t[0, [2, 5]] = torch.tensor([1, 3])
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    default = detection_loss(out, loc_t, cls_t, generator=gen())
    assert torch.equal(default["loss_classification"], detection_loss(out, loc_t, cls_t, generator=gen(), cls_loss="type2")["loss_classification"])
