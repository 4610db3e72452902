"""Batched, seeded augmentation: determinism, ranges, device, and that it changes images."""

import pytest
import torch

from fedml_prr.data.augment import augment_batch, to_model_input


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(123)
    base = torch.rand(1, 3, 4, 4, generator=g)
    smooth = torch.nn.functional.interpolate(base, size=(24, 24), mode="bilinear")
    return (smooth.repeat(32, 1, 1, 1) * 255).round().to(torch.uint8)


def test_to_model_input_maps_to_minus_one_one():
    x = torch.tensor([0, 255, 128], dtype=torch.uint8).view(1, 3, 1, 1)
    out = to_model_input(x)
    assert out.dtype == torch.float32
    assert out.flatten().tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(x.float())


def test_same_generator_state_same_output(images):
    a = augment_batch(images, torch.Generator().manual_seed(7))
    b = augment_batch(images, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_generator_advances_and_seeds_differ(images):
    g = torch.Generator().manual_seed(7)
    first, second = augment_batch(images, g), augment_batch(images, g)
    other = augment_batch(images, torch.Generator().manual_seed(8))
    assert not torch.equal(first, second) and not torch.equal(first, other)


def test_shape_range_and_input_untouched(images):
    before = images.clone()
    out = augment_batch(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    assert torch.equal(images, before)


def test_changes_most_images_and_treats_samples_independently(images):
    out = augment_batch(images, torch.Generator().manual_seed(0))
    changed = (out - to_model_input(images)).abs().flatten(1).amax(1) > 0.02
    assert changed.float().mean() > 0.8
    # identical inputs get different augmentations
    assert len({tuple(o.flatten()[:64].tolist()) for o in out}) > 20


def test_rejects_bad_inputs(images):
    with pytest.raises(ValueError, match="uint8"):
        augment_batch(images.float(), torch.Generator())


def test_output_on_the_input_device(images):
    assert augment_batch(images, torch.Generator().manual_seed(0)).device == images.device


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_for_the_same_generator_state(images):
    cpu = augment_batch(images, torch.Generator().manual_seed(3))
    gpu = augment_batch(images.cuda(), torch.Generator().manual_seed(3))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


def test_median_blur_is_the_median_of_each_reflected_3x3_neighbourhood():
    from fedml_prr.data.augment import _median_blur3

    g = torch.Generator().manual_seed(5)
    x = (torch.rand(3, 3, 9, 14, generator=g) * 8).round() / 8  # many ties
    neighbours = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect").unfold(2, 3, 1).unfold(3, 3, 1)
    assert torch.equal(_median_blur3(x), neighbours.reshape(*x.shape, 9).median(dim=-1).values)
