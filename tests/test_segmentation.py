"""Segmentation math, models and PFA roles on hand-checked tensors."""

import math

import pytest
import torch

from fedml_prr.core.cpa import seesaw_matrix
from fedml_prr.core.det import Stage, stage_losses
from fedml_prr.core.fourier import TensorRole, infer_tensor_roles, progressive_fourier_aggregate
from fedml_prr.core.prototypes import PrototypeAccumulator
from fedml_prr.core.segmentation import (ce_dice_loss, masked_feature_sums, segmentation_cpa_loss,
                                         segmentation_metrics, slice_scores, soft_dice_loss,
                                         softmax_mse_distillation)
from fedml_prr.data.augment import augment_segmentation_batch
from fedml_prr.models import build_model, model_names, model_task

LOG2 = math.log(2.0)


def test_soft_dice_and_losses_on_uniform_logits():
    # zero logits: p = 0.5 everywhere; one foreground pixel of four
    logits = torch.zeros(1, 2, 2, 2)
    masks = torch.tensor([[[1, 0], [0, 0]]])
    # (2 * 0.5 + 1) / (4 * 0.5 + 1 + 1) = 0.5
    assert soft_dice_loss(logits, masks).item() == pytest.approx(0.5)
    assert ce_dice_loss(logits, masks).item() == pytest.approx(LOG2 + 0.5)
    ones = torch.ones(2, 2)
    assert segmentation_cpa_loss(logits, masks, ones).item() == pytest.approx(LOG2 + 0.5)
    # gamma scales each pixel's seesaw term by its class: (3 * 1 + 1 * 2) / 4 = 1.25
    gamma = torch.tensor([1.0, 2.0])
    expected = 0.5 * 1.25 * LOG2 + 0.5 * LOG2 + 0.5
    assert segmentation_cpa_loss(logits, masks, ones, gamma).item() == pytest.approx(expected)


def test_seesaw_from_pixel_counts_lowers_the_background_push_on_prostate_pixels():
    logits = torch.zeros(1, 2, 2, 2)
    masks = torch.tensor([[[1, 0], [0, 0]]])
    seesaw = seesaw_matrix(torch.tensor([386166134, 7688842]))  # the reference's global pixel counts
    # background pixels keep the plain CE; the prostate pixel is damped -> lower total than CE + Dice
    assert segmentation_cpa_loss(logits, masks, seesaw).item() < ce_dice_loss(logits, masks).item()


def test_perfect_prediction_has_near_zero_dice_loss():
    masks = torch.tensor([[[1, 0], [0, 1]]])
    logits = torch.stack([(1 - masks) * 20.0, masks * 20.0], dim=1).float()
    assert soft_dice_loss(logits, masks).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_iou_accuracy_recall_on_hand_checked_masks():
    truth = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 0]], [[0, 0], [0, 0]]])
    pred = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]], [[0, 0], [1, 0]]])
    per_slice = slice_scores(pred, truth, 2)
    assert per_slice["dice"][0].item() == pytest.approx(2 / 3)  # 2 TP / (|P| + |G|) = 2 / 3
    assert per_slice["iou"][0].item() == pytest.approx(1 / 2)
    assert math.isnan(per_slice["dice"][1].item())  # both empty: left out
    assert per_slice["dice"][2].item() == 0.0  # a false positive on an empty slice
    m = segmentation_metrics(pred, truth, 2)
    assert m["dice"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["iou"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["accuracy"] == pytest.approx(10 / 12)
    assert m["recall"] == pytest.approx(1.0)
    assert m["dice_global"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 0))


def test_empty_split_conventions():
    empty = torch.zeros(2, 3, 3, dtype=torch.long)
    m = segmentation_metrics(empty, empty, 2)
    assert m["dice"] == 1.0 and m["iou"] == 1.0 and m["dice_global"] == 1.0
    assert math.isnan(m["recall"]) and m["accuracy"] == 1.0
    missed = segmentation_metrics(empty, torch.ones_like(empty), 2)
    assert missed["dice"] == 0.0 and missed["recall"] == 0.0


def test_masked_mean_prototypes_cover_small_structures():
    features = torch.tensor([[[[1.0, 3.0]]]])  # [1, D=1, h=1, w=2]: left cell 1, right cell 3
    masks = torch.tensor([[[1, 1, 0, 0], [0, 0, 1, 0]]])  # [1, 2, 4]: cells cover columns 0-1 and 2-3
    sums, counts = masked_feature_sums(features, masks, 2)
    assert counts.tolist() == [5, 3]
    acc = PrototypeAccumulator(2, 1)
    acc.add_sums(sums, counts)
    protos, n = acc.prototypes()
    assert protos[1].item() == pytest.approx((2 * 1 + 3) / 3)  # 2 prostate pixels on the left cell, 1 on the right
    assert protos[0].item() == pytest.approx((2 * 1 + 3 * 3) / 5)
    assert n.tolist() == [5, 3]


def test_softmax_mse_distillation_detaches_the_teacher():
    student = torch.randn(2, 2, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 2, 4, 4, requires_grad=True)
    assert softmax_mse_distillation(student, student.detach()).item() == 0.0
    loss_p, loss_d = stage_losses(Stage.EXCHANGE, student, teacher, torch.zeros(()), torch.zeros(()),
                                  weight=10.0, distillation=softmax_mse_distillation)
    loss_p.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    expected = 10 * ((student.softmax(1) - teacher.softmax(1)) ** 2).mean()
    assert loss_p.item() == pytest.approx(expected.item())


def test_segmentation_augmentation_moves_mask_with_image_and_is_seeded():
    images = torch.zeros(6, 3, 16, 16, dtype=torch.uint8)
    images[:, :, 2:6, 3:9] = 255  # a bright box
    masks = torch.zeros(6, 16, 16, dtype=torch.uint8)
    masks[:, 2:6, 3:9] = 1  # exactly under the box
    x1, y1 = augment_segmentation_batch(images, masks, torch.Generator().manual_seed(3))
    x2, y2 = augment_segmentation_batch(images, masks, torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert y1.dtype == torch.int64 and set(y1.unique().tolist()) <= {0, 1}
    moved = [i for i in range(6) if not torch.equal(y1[i], masks[i].long())]
    assert moved, "no geometric transform drawn"
    for i in range(6):  # the mask still marks the bright region: mean brightness inside >> outside
        inside, outside = x1[i, 0][y1[i] == 1], x1[i, 0][y1[i] == 0]
        assert inside.mean() - outside.mean() > 1.0


@pytest.mark.parametrize("name,options,size", [("deeplab_resnet18", {}, 32), ("deeplab_resnet18", {"small_input": True}, 32),
                                               ("unet_small", {"base": 8}, 32)])
def test_segmentation_model_contract_and_pfa_roles(name, options, size):
    torch.manual_seed(0)
    assert model_task(name) == "segmentation" and name in model_names("segmentation")
    model = build_model(name, num_classes=2, **options)
    logits, features = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 2, size, size)
    assert features.shape[:2] == (2, model.feature_dim) and (features >= 0).all()
    state = model.state_dict()
    classifier = state[model.classifier_key]  # a 1x1 conv; U-Net's acts on its top decoder level, not the bottleneck
    assert classifier.shape[0] == 2 and classifier.shape[2:] == (1, 1)
    roles = infer_tensor_roles(state)
    assert roles[model.classifier_key] is TensorRole.CLASSIFIER
    assert all(roles[k] is TensorRole.CONV for k, v in state.items() if v.dim() == 4 and k != model.classifier_key)
    assert all(roles[k] is TensorRole.LOCAL for k in state if "running_mean" in k)


def test_pfa_on_a_segmentation_net_identity_and_classifier_rows():
    torch.manual_seed(0)
    a = build_model("unet_small", num_classes=2, base=4, depth=1).state_dict()
    same = progressive_fourier_aggregate([a, a], 0.8)
    assert all(torch.allclose(same[0][k].float(), a[k].float(), atol=1e-5) for k in a)
    torch.manual_seed(1)
    b = build_model("unet_small", num_classes=2, base=4, depth=1).state_dict()
    mixed = progressive_fourier_aggregate([a, b], 0.8)
    # the 1x1 classifier is mixed row by row: its low band (incl. DC) is shared, so each row's mean is shared
    row_means = [m["classifier.weight"].flatten(1).mean(1) for m in mixed]
    assert torch.allclose(row_means[0], row_means[1], atol=1e-5)
    assert not torch.allclose(mixed[0]["classifier.weight"], mixed[1]["classifier.weight"])


def test_unknown_model_lists_segmentation_models_too():
    with pytest.raises(KeyError, match="deeplab_resnet18"):
        build_model("segnet", num_classes=2)
