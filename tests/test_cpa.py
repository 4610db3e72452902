"""CPA loss on hand-checked examples (spec section 3) and prototypes."""

import math

import pytest
import torch
import torch.nn.functional as F

from fedml_prr.core.cpa import cpa_loss, prototype_factor, seesaw_matrix
from fedml_prr.core.prototypes import PrototypeAccumulator, global_prototype


def test_seesaw_matrix_by_hand():
    s = seesaw_matrix(torch.tensor([100, 10, 1]), beta=1.0)
    expected = torch.tensor([[1.0, 0.1, 0.01], [1.0, 1.0, 0.1], [1.0, 1.0, 1.0]])
    assert torch.allclose(s, expected)
    assert torch.allclose(seesaw_matrix(torch.tensor([100, 10, 1]), beta=0.0), torch.ones(3, 3))
    half = seesaw_matrix(torch.tensor([4, 1]), beta=0.5)
    assert half[0, 1].item() == pytest.approx(0.5)


def test_cpa_loss_hand_checked():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    s = seesaw_matrix(torch.tensor([100, 10, 1]), beta=1.0)
    # label 0: p = e^2 / (e^2 + 0.1 e^1 + 0.01 e^0)
    p = math.exp(2) / (math.exp(2) + 0.1 * math.exp(1) + 0.01)
    assert cpa_loss(logits, torch.tensor([0]), s).item() == pytest.approx(-math.log(p), rel=1e-5)
    # label 2 (rarest): plain softmax
    assert cpa_loss(logits, torch.tensor([2]), s).item() == pytest.approx(
        F.cross_entropy(logits, torch.tensor([2])).item(), rel=1e-5)
    gamma = torch.tensor([1.5, 1.0, 1.0])
    assert cpa_loss(logits, torch.tensor([0]), s, gamma).item() == pytest.approx(-1.5 * math.log(p), rel=1e-5)


def test_cpa_equals_cross_entropy_with_ones_and_is_stable():
    logits = torch.randn(8, 4) * 3
    y = torch.randint(0, 4, (8,))
    assert torch.allclose(cpa_loss(logits, y, torch.ones(4, 4)), F.cross_entropy(logits, y), atol=1e-6)
    big = torch.tensor([[1000.0, -1000.0, 0.0]])
    assert math.isfinite(cpa_loss(big, torch.tensor([1]), seesaw_matrix(torch.tensor([5, 3, 1]))).item())


def test_prototype_factor_range_and_missing_class():
    g = torch.rand(3, 8)
    assert torch.allclose(prototype_factor(g.clone(), g, tau=3.0), torch.ones(3), atol=1e-6)
    gamma = prototype_factor(-g, g, tau=3.0)
    assert torch.allclose(gamma, torch.full((3,), 2.0), atol=1e-6)
    masked = prototype_factor(-g, g, tau=3.0, present=torch.tensor([True, False, True]))
    assert masked[1].item() == 1.0 and masked[0].item() == pytest.approx(2.0)


def test_prototype_accumulator_means_and_missing_class():
    acc = PrototypeAccumulator(3, 2)
    acc.add(torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]]), torch.tensor([0, 0, 2]))
    protos, counts = acc.prototypes()
    assert counts.tolist() == [2, 0, 1]
    assert torch.allclose(protos, torch.tensor([[2.0, 3.0], [1.0, 1.0], [10.0, 0.0]]))


def test_global_prototype_mean_skips_clients_without_the_class():
    protos = torch.tensor([[[1.0, 1.0], [5.0, 5.0]], [[3.0, 3.0], [9.0, 9.0]]])
    counts = torch.tensor([[4, 0], [2, 3]])
    g = global_prototype(protos, counts, method="mean")
    assert torch.allclose(g, torch.tensor([[2.0, 2.0], [9.0, 9.0]]))
    none = global_prototype(protos, torch.zeros(2, 2, dtype=torch.long), method="mean")
    assert torch.allclose(none, torch.ones(2, 2))


def test_global_prototype_gaussian_noise_scale_at_least_one():
    k, c, d = 4, 2, 4000
    protos = torch.zeros(k, c, d)
    protos[:, 1] = torch.arange(k, dtype=torch.float32)[:, None] * 4  # std over clients ~ 4.47
    gen = torch.Generator().manual_seed(0)
    g = global_prototype(protos, torch.ones(k, c, dtype=torch.long), generator=gen)
    assert g[0].std().item() == pytest.approx(1.0, rel=0.05)  # std 0 -> noise scale 1
    assert g[1].std().item() == pytest.approx(math.sqrt(20.0), rel=0.05)
    assert g[1].mean().item() == pytest.approx(6.0, abs=0.3)
