"""Metrics against scikit-learn (an independent oracle) and hand-checked examples."""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from fedml_prr.core.metrics import (
    balanced_accuracy,
    classification_metrics,
    confusion_matrix,
    macro_auc_ovr,
    macro_f1,
)


def _random_case(seed):
    generator = torch.Generator().manual_seed(seed)
    num_classes = int(torch.randint(2, 7, (1,), generator=generator))
    n = int(torch.randint(5, 80, (1,), generator=generator))
    # Skewed label distribution so some classes are often absent from y_true or y_pred.
    weights = torch.rand(num_classes, generator=generator) ** 3
    y_true = torch.multinomial(weights, n, replacement=True, generator=generator)
    y_pred = torch.multinomial(weights.flip(0), n, replacement=True, generator=generator)
    scores = torch.rand(n, num_classes, generator=generator)
    if seed % 2:  # coarse scores create ties
        scores = (scores * 4).round() / 4
    return y_true, y_pred, scores, num_classes


def _sklearn_auc(y_true, scores, num_classes):
    aucs = [
        skm.roc_auc_score(y_true == c, scores[:, c])
        for c in range(num_classes)
        if 0 < (y_true == c).sum() < len(y_true)
    ]
    return float(np.mean(aucs)) if aucs else math.nan


@pytest.mark.parametrize("seed", range(8))
def test_against_sklearn(seed):
    y_true, y_pred, scores, num_classes = _random_case(seed)
    t, p, s = y_true.numpy(), y_pred.numpy(), scores.numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about classes missing from y_true
        expected_bacc = skm.balanced_accuracy_score(t, p)

    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred, num_classes).numpy(),
        skm.confusion_matrix(t, p, labels=range(num_classes)),
    )
    expected_f1 = skm.f1_score(t, p, average="macro")
    assert macro_f1(y_true, y_pred, num_classes) == pytest.approx(expected_f1)
    assert balanced_accuracy(y_true, y_pred, num_classes) == pytest.approx(expected_bacc)
    expected_auc = _sklearn_auc(t, s, num_classes)
    assert macro_auc_ovr(y_true, scores, num_classes) == pytest.approx(expected_auc)


@pytest.mark.parametrize("seed", range(4))
def test_auc_matches_sklearn_multiclass_ovr_when_all_classes_present(seed):
    generator = torch.Generator().manual_seed(seed)
    y_true = torch.cat([torch.arange(4), torch.randint(0, 4, (40,), generator=generator)])
    probabilities = torch.softmax(torch.randn(44, 4, generator=generator), dim=1)
    expected = skm.roc_auc_score(
        y_true.numpy(), probabilities.numpy(), multi_class="ovr", average="macro"
    )
    assert macro_auc_ovr(y_true, probabilities, 4) == pytest.approx(expected)


def test_perfect_predictions_score_one():
    y_true = torch.tensor([0, 1, 2, 2, 1, 0])
    probabilities = torch.nn.functional.one_hot(y_true, 4).float()
    result = classification_metrics(y_true, probabilities, 4)
    assert result == {"accuracy": 1.0, "balanced_accuracy": 1.0, "macro_f1": 1.0, "auc": 1.0}
    assert all(type(v) is float for v in result.values())


def test_class_missing_from_y_true_hand_checked():
    y_true = torch.tensor([0, 0, 1, 1])
    y_pred = torch.tensor([0, 2, 1, 1])
    # F1: class 0 = 2/3, class 1 = 1, class 2 (predicted only) = 0; class 3 absent -> excluded.
    assert macro_f1(y_true, y_pred, 4) == pytest.approx(5 / 9)
    # Recall over classes in y_true only: (1/2 + 1) / 2.
    assert balanced_accuracy(y_true, y_pred, 4) == pytest.approx(0.75)


def test_auc_ties_reversal_and_undefined():
    y_true = torch.tensor([0, 1, 2, 0, 1, 2])
    assert macro_auc_ovr(y_true, torch.full((6, 3), 0.3), 3) == 0.5
    one_hot = torch.nn.functional.one_hot(y_true, 3).float()
    assert macro_auc_ovr(y_true, -one_hot, 3) == 0.0
    assert math.isnan(macro_auc_ovr(torch.zeros(5, dtype=torch.long), torch.rand(5, 3), 3))


def test_empty_inputs():
    empty = torch.zeros(0, dtype=torch.long)
    assert macro_f1(empty, empty, 3) == 0.0
    result = classification_metrics(empty, torch.zeros(0, 3), 3)
    assert result["accuracy"] == 0.0 and math.isnan(result["auc"])


def test_inputs_are_not_mutated():
    y_true, y_pred, scores, num_classes = _random_case(3)
    copies = [y_true.clone(), y_pred.clone(), scores.clone()]
    confusion_matrix(y_true, y_pred, num_classes)
    macro_f1(y_true, y_pred, num_classes)
    balanced_accuracy(y_true, y_pred, num_classes)
    macro_auc_ovr(y_true, scores, num_classes)
    classification_metrics(y_true, scores, num_classes)
    for original, copy in zip([y_true, y_pred, scores], copies):
        assert torch.equal(original, copy)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="outside"):
        macro_f1(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="integer"):
        macro_f1(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="scores"):
        macro_auc_ovr(torch.tensor([0, 1]), torch.rand(2, 4), 3)


def test_absent_classes_raise_no_warnings():
    y_true = torch.tensor([0, 0, 1, 1])
    y_pred = torch.tensor([0, 2, 1, 1])  # class 2 predicted, absent from y_true; class 3 absent everywhere
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        balanced_accuracy(y_true, y_pred, 4)
        macro_f1(y_true, y_pred, 4)
        classification_metrics(y_true, torch.nn.functional.one_hot(y_pred, 4).float(), 4)
        classification_metrics(torch.zeros(3, dtype=torch.long), torch.rand(3, 4), 4)  # AUC undefined: NaN
        one_class = torch.full((5,), 2)
        assert balanced_accuracy(one_class, one_class, 4) == macro_f1(one_class, one_class, 4) == 1.0
        classification_metrics(one_class, torch.nn.functional.one_hot(one_class, 4).float(), 4)
    assert [str(w.message) for w in caught] == []
