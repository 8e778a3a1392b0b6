"""Eq. 1 and Eq. 8 against an independent float64 evaluation, and their invariants."""

import numpy as np
import pytest
import torch

from almdn.models.uncertainty import (
    classification_uncertainty,
    entropy,
    localization_uncertainty,
    mixture_class_probabilities,
)


@pytest.fixture
def rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)  # fresh inputs every run
    print("seed", seed)
    return np.random.default_rng(seed)


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_localization_uncertainty_matches_float64_loop(rng):
    n, k = 7, 5
    pi = _softmax(rng.normal(size=(n, k, 4)), axis=1)
    mu = rng.normal(size=(n, k, 4)) * 3
    var = rng.uniform(0.01, 1, size=(n, k, 4))
    al, ep = localization_uncertainty(*(torch.tensor(a, dtype=torch.float32) for a in (pi, mu, var)))
    for i in range(n):
        for b in range(4):
            mean = sum(pi[i, j, b] * mu[i, j, b] for j in range(k))
            exp_al = sum(pi[i, j, b] * var[i, j, b] for j in range(k))
            exp_ep = sum(pi[i, j, b] * (mu[i, j, b] - mean) ** 2 for j in range(k))
            assert al[i, b].item() == pytest.approx(exp_al, rel=1e-5, abs=1e-6)
            assert ep[i, b].item() == pytest.approx(exp_ep, rel=1e-4, abs=1e-5)


def test_classification_uncertainty_gmm_and_eff_match_float64(rng):
    n, k, c = 6, 4, 8
    pi = _softmax(rng.normal(size=(n, k)), axis=1)
    probs = _softmax(rng.normal(size=(n, k, c)) * 2, axis=2)
    var = rng.uniform(0.01, 1, size=(n, k, c))
    labels = rng.integers(0, c, size=n)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    al_gmm, ep = classification_uncertainty(t(pi), t(probs), torch.tensor(labels), t(var))
    al_eff, ep_eff = classification_uncertainty(t(pi), t(probs), torch.tensor(labels))
    for i in range(n):
        cls = labels[i]
        mixed = (pi[i, :, None] * probs[i]).sum(0)
        assert ep[i].item() == pytest.approx(sum(pi[i, j] * (probs[i, j, cls] - mixed[cls]) ** 2 for j in range(k)), abs=1e-6)
        assert al_gmm[i].item() == pytest.approx(float((pi[i] * var[i, :, cls]).sum()), rel=1e-5)
        # Eq. 8 literally: the C x C matrix sum_k pi_k (diag(p_k) - p_k p_k^T), read at (c, c).
        matrix = sum(pi[i, j] * (np.diag(probs[i, j]) - np.outer(probs[i, j], probs[i, j])) for j in range(k))
        assert al_eff[i].item() == pytest.approx(matrix[cls, cls], rel=1e-5, abs=1e-7)
    assert torch.equal(ep, ep_eff)


def test_epistemic_is_zero_when_all_component_means_are_equal(rng):
    pi = torch.softmax(torch.tensor(rng.normal(size=(3, 4, 4))), dim=1)
    mu = torch.tensor(rng.normal(size=(3, 1, 4))).expand(3, 4, 4)
    _, ep = localization_uncertainty(pi, mu, torch.rand(3, 4, 4, dtype=torch.float64))
    assert torch.allclose(ep, torch.zeros_like(ep), atol=1e-12)
    probs = torch.softmax(torch.tensor(rng.normal(size=(3, 1, 6))), -1).expand(3, 4, 6)
    _, ep_c = classification_uncertainty(pi[..., 0], probs, torch.tensor([0, 2, 5]))
    assert torch.allclose(ep_c, torch.zeros(3, dtype=torch.float64), atol=1e-12)


def test_aleatoric_equals_the_variance_of_a_component_with_weight_one(rng):
    var = torch.tensor(rng.uniform(0.1, 1, size=(2, 3, 4)))
    pi = torch.zeros(2, 3, 4, dtype=torch.float64)
    pi[:, 1] = 1.0
    al, ep = localization_uncertainty(pi, torch.tensor(rng.normal(size=(2, 3, 4))), var)
    assert torch.allclose(al, var[:, 1])
    assert torch.allclose(ep, torch.zeros_like(ep))
    cvar = torch.tensor(rng.uniform(0.1, 1, size=(2, 3, 5)))
    probs = torch.softmax(torch.tensor(rng.normal(size=(2, 3, 5))), -1)
    al_c, _ = classification_uncertainty(pi[..., 0], probs, torch.tensor([1, 4]), cvar)
    assert torch.allclose(al_c, cvar[[0, 1], 1, [1, 4]])


def test_mixture_class_probabilities_sum_to_one_and_entropy_bounds():
    pi = torch.softmax(torch.randn(5, 3), -1)
    probs = torch.softmax(torch.randn(5, 3, 7), -1)
    mixed = mixture_class_probabilities(pi, probs)
    assert torch.allclose(mixed.sum(-1), torch.ones(5))
    h = entropy(mixed)
    assert (h >= 0).all() and (h <= np.log(7) + 1e-6).all()
    assert entropy(torch.tensor([1.0, 0.0, 0.0])).item() == 0.0
