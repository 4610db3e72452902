"""The embedded ``derm_synthetic`` federation: counts, imbalance, client shift, determinism."""

import pytest
import torch

from fedml_prr.data import DATASETS, Federation, build_federation
from fedml_prr.data.synthetic_derm import make_synthetic_dermoscopy


@pytest.fixture(scope="module")
def fed():
    return make_synthetic_dermoscopy(seed=0)


def counts(fed, client, split):
    c = next(c for c in fed.clients if c.name == client)
    return getattr(c, split).class_counts(fed.num_classes).tolist()


def test_layout(fed):
    assert [c.name for c in fed.clients] == ["A", "B", "C", "D"]
    assert fed.class_names == ("nv", "bkl", "mel") and fed.image_size == 32
    images = fed.clients[0].train.images
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)


def test_counts_are_the_prr_table_quartered_with_at_least_one(fed):
    assert counts(fed, "A", "train") == [321, 83, 119]  # 1282/4 = 320.5 rounds up
    assert counts(fed, "B", "train") == [651, 22, 4]
    assert counts(fed, "B", "valid") == [93, 3, 1]  # 2 mel / 4 = 0.5 -> 1
    assert counts(fed, "B", "test") == [186, 6, 1]  # 5 / 4 = 1.25 -> 1
    assert counts(fed, "D", "test") == [69, 13, 19]
    assert counts(make_synthetic_dermoscopy(scale=0.01, image_size=8), "B", "valid") == [4, 1, 1]


def test_client_specific_imbalance(fed):
    nv_share = {c: counts(fed, c, "train")[0] / sum(counts(fed, c, "train")) for c in "ABCD"}
    assert nv_share["B"] > 0.9
    assert max(nv_share["A"], nv_share["C"], nv_share["D"]) < 0.75
    assert counts(fed, "C", "train")[1] > counts(fed, "C", "train")[2]  # C is bkl-rich


def test_each_client_has_its_own_colour_cast(fed):
    means = torch.stack([c.train.images.float().mean((0, 2, 3)) for c in fed.clients])
    distances = torch.cdist(means, means)
    assert distances[~torch.eye(4, dtype=torch.bool)].min() > 5
    blue_over_red = means[:, 2] / means[:, 0]
    assert blue_over_red[2] > blue_over_red[0] > blue_over_red[1]  # C cool, B warm


def test_images_are_lesions_with_class_dependent_appearance(fed):
    images = torch.cat([c.train.images for c in fed.clients]).float()
    labels = torch.cat([c.train.labels for c in fed.clients])
    assert images.amax((1, 2, 3)).min() - images.amin((1, 2, 3)).max() > 50  # real contrast
    centre = images[:, :, 12:20, 12:20].mean((1, 2, 3))
    border = torch.cat([images[:, :, :4], images[:, :, -4:]], 2).mean((1, 2, 3))
    assert (centre < border).float().mean() > 0.95  # the lesion is darker than the skin
    centre_by_class = [centre[labels == k].mean() for k in range(3)]
    assert centre_by_class[1] > centre_by_class[0] and centre_by_class[1] > centre_by_class[2]  # bkl lighter


def test_same_seed_bit_identical_other_seed_different():
    a, b = (make_synthetic_dermoscopy(seed=3, image_size=16, scale=0.02) for _ in range(2))
    c = make_synthetic_dermoscopy(seed=4, image_size=16, scale=0.02)
    for x, y, z in zip(a.clients, b.clients, c.clients):
        for split in ("train", "valid", "test"):
            assert torch.equal(getattr(x, split).images, getattr(y, split).images)
            assert torch.equal(getattr(x, split).labels, getattr(y, split).labels)
        assert not torch.equal(x.train.images, z.train.images)


def test_registry_builds_it_and_rejects_unknowns():
    assert "derm_synthetic" in DATASETS
    fed = build_federation("derm_synthetic", seed=0, image_size=16, scale=0.02)
    assert isinstance(fed, Federation) and fed.image_size == 16
    with pytest.raises(KeyError, match="known datasets:.*derm_synthetic"):
        build_federation("derm_synthtic", seed=0, image_size=16)
    with pytest.raises(TypeError, match="colour"):
        build_federation("derm_synthetic", seed=0, image_size=16, colour=True)
    with pytest.raises(ValueError, match="scale"):
        make_synthetic_dermoscopy(scale=0)
