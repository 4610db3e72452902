"""Model registry and the (logits, features) forward contract."""

import pytest
import torch
from torch import nn

from fedml_prr.models import (
    MODELS,
    VGG16Slim,
    build_model,
    check_image_size,
    min_image_size,
    model_names,
    model_options,
    model_task,
)

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


@pytest.mark.parametrize("name", model_names("classification"))
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


@pytest.mark.parametrize("name", model_names("classification"))
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


@pytest.mark.parametrize("name", model_names("classification"))
def test_backward_reaches_first_layer(name):
    options = {"width": 0.25} if name == "vgg16_slim" else {}
    model = build_model(name, num_classes=NUM_CLASSES, **options)
    logits, _ = model(torch.randn(2, 3, 32, 32))
    logits.sum().backward()
    first = next(p for p in model.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_one_registry_carries_each_models_task():
    assert set(model_names()) == set(MODELS.names()) == {"vgg16_slim", "resnet18", "deeplab_resnet18", "unet_small"}
    assert model_names("segmentation") == ["deeplab_resnet18", "unet_small"]
    for name in model_names():
        spec = MODELS.get(name)
        assert model_task(name) == spec.task and model_options(name) == list(spec.options)
        small = {"width": 0.25} if name == "vgg16_slim" else {"base": 4} if name == "unet_small" else {}
        logits, _ = build_model(name, num_classes=3, **small).eval()(torch.randn(1, 3, 32, 32))
        assert logits.dim() == (4 if spec.task == "segmentation" else 2)  # the task matches the output


def test_unknown_model_option_is_a_one_line_value_error():
    with pytest.raises(ValueError) as info:
        build_model("vgg16_slim", num_classes=NUM_CLASSES, widht=0.5)
    assert str(info.value) == ("unknown option(s) ['widht'] of model 'vgg16_slim'; its options are in_channels, "
                               "width, feature_dim")
    with pytest.raises(ValueError, match=r"\['deph'\] of model 'unet_small'; its options are base, depth"):
        min_image_size("unet_small", deph=2)


# (model, options, expected smallest side, side multiple): every registered model at least once
SIZE_CASES = [
    ("vgg16_slim", {"width": 0.25}, 32, 1),
    ("resnet18", {}, 1, 1),
    ("resnet18", {"small_input": True}, 1, 1),
    ("deeplab_resnet18", {"feature_dim": 8}, 1, 1),
    ("deeplab_resnet18", {"feature_dim": 8, "small_input": True}, 1, 1),
    ("unet_small", {"base": 4, "depth": 1}, 2, 2),
    ("unet_small", {"base": 4, "depth": 3}, 8, 8),
]


def test_size_cases_cover_every_model():
    assert {name for name, *_ in SIZE_CASES} == set(model_names())


def forward(name, options, size):
    model = build_model(name, num_classes=2, **options).train()
    logits, _ = model(torch.randn(2, 3, size, size))
    return logits


@pytest.mark.parametrize("name,options,smallest,multiple", SIZE_CASES)
def test_min_image_size_is_the_smallest_input_the_architecture_accepts(name, options, smallest, multiple):
    assert min_image_size(name, **options) == smallest
    forward(name, options, smallest)  # the smallest size works ...
    check_image_size(name, smallest, **options)
    forward(name, options, smallest + multiple)  # ... so does the next valid size ...
    below = smallest + multiple - 1  # ... and one pixel below the next valid size does not
    for size in {smallest - 1, below} - {smallest}:
        with pytest.raises(ValueError, match=rf"model '{name}' .*needs an image size at least {smallest} px"):
            check_image_size(name, size, **options)
        if size >= 1:
            with pytest.raises((RuntimeError, ValueError)):
                forward(name, options, size)
