"""Model registry and the (logits, features) forward contract."""

import pytest
import torch
from torch import nn

from fedml_prr.models import MODELS, VGG16Slim, build_model

NUM_CLASSES = 5


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_registry_lists_both_models():
    assert {"vgg16_slim", "resnet18"} <= set(MODELS.names())


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(KeyError, match="vgg16_slim") as info:
        build_model("vgg17", num_classes=NUM_CLASSES)
    assert "resnet18" in str(info.value)


def test_unknown_option_is_a_type_error_naming_valid_options():
    with pytest.raises(TypeError, match="width"):
        build_model("vgg16_slim", num_classes=NUM_CLASSES, widht=0.5)
    with pytest.raises(TypeError, match="small_input"):
        build_model("resnet18", num_classes=NUM_CLASSES, width=0.5)


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("size", [32, 64])
def test_forward_contract(name, size):
    options = {"width": 0.25} if name == "vgg16_slim" else {"small_input": size == 32}
    model = build_model(name, num_classes=NUM_CLASSES, **options)
    logits, features = model(torch.randn(3, 3, size, size))

    assert logits.shape == (3, NUM_CLASSES)
    assert features.shape == (3, model.feature_dim) == (3, 64)
    assert (features >= 0).all() and (features > 0).any()
    classifier = model.state_dict()[model.classifier_key]
    assert classifier.shape == (NUM_CLASSES, model.feature_dim)
    torch.testing.assert_close(logits, features @ classifier.T)


@pytest.mark.parametrize("name", MODELS.names())
def test_feature_dim_option_and_batchnorm_head(name):
    model = build_model(name, num_classes=NUM_CLASSES, feature_dim=16)
    assert model.feature_dim == 16
    assert model.state_dict()[model.classifier_key].shape == (NUM_CLASSES, 16)
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    assert model.fc2.bias is None


def test_vgg16_slim_layout():
    model = VGG16Slim(NUM_CLASSES)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.bias is None for c in convs)
    assert [c.out_channels for c in convs] == [32, 32, 64, 64] + [128] * 6 + [256] * 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5
    assert model.fc1.in_features == 256 and model.fc1.bias is None


def test_vgg16_slim_parameter_count_is_about_2_4_million():
    count = sum(p.numel() for p in VGG16Slim(7).parameters())
    assert count == 2_370_912 + 64 * 7
    half = sum(p.numel() for p in VGG16Slim(7, width=0.5).parameters())
    assert 0.2 * count < half < 0.3 * count


def test_vgg16_slim_width_floor_input_channels_and_large_images():
    model = VGG16Slim(3, width=0.01, in_channels=1).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert {c.out_channels for c in convs} == {8}
    logits, features = model(torch.randn(2, 1, 128, 128))
    assert logits.shape == (2, 3) and features.shape == (2, 64)


def test_resnet18_small_input_stem():
    model = build_model("resnet18", num_classes=NUM_CLASSES, small_input=True)
    assert model.backbone.conv1.kernel_size == (3, 3) and model.backbone.conv1.stride == (1, 1)
    assert isinstance(model.backbone.maxpool, nn.Identity)
    default = build_model("resnet18", num_classes=NUM_CLASSES)
    assert default.backbone.conv1.kernel_size == (7, 7)


@pytest.mark.parametrize("name", MODELS.names())
def test_backward_reaches_first_layer(name):
    options = {"width": 0.25} if name == "vgg16_slim" else {}
    model = build_model(name, num_classes=NUM_CLASSES, **options)
    logits, _ = model(torch.randn(2, 3, 32, 32))
    logits.sum().backward()
    first = next(p for p in model.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
