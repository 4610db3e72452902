"""The Dirichlet label partition: deterministic, conserves every image, the same class shares in
every split, more skew for smaller alpha, clear errors."""

import numpy as np
import pytest
import torch

from fedml_prr.data import build_federation
from fedml_prr.data.federation import SPLITS, ClientData, Federation, ImageSplit
from fedml_prr.data.partition import client_dirichlet_partition, dirichlet_partition, largest_remainder

CLASSES = ("a", "b", "c", "d")


def identified_split(offset, n, gen):
    """``n`` images whose pixels encode a unique id (``offset + i``) and a random label."""
    ids = torch.arange(offset, offset + n)
    images = torch.zeros(n, 3, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0], images[:, 1, 0, 0] = (ids // 256).to(torch.uint8), (ids % 256).to(torch.uint8)
    return ImageSplit(images, torch.randint(0, len(CLASSES), (n,), generator=gen))


def image_ids(split):
    return (split.images[:, 0, 0, 0].long() * 256 + split.images[:, 1, 0, 0].long()).tolist()


@pytest.fixture(scope="module")
def balanced():
    gen = torch.Generator().manual_seed(0)
    clients, offset = [], 0
    for name, n in (("A", 400), ("B", 300), ("C", 500)):
        parts = {}
        for split, size in zip(SPLITS, (n, n // 4, n // 2)):
            parts[split] = identified_split(offset, size, gen)
            offset += size
        clients.append(ClientData(name, **parts))
    return Federation("balanced", CLASSES, tuple(clients))


def counts(federation, split):
    return np.stack([c.split(split).class_counts(federation.num_classes).numpy() for c in federation.clients])


def test_largest_remainder_is_exact_and_proportional():
    out = largest_remainder(10, np.array([0.26, 0.26, 0.48]))
    assert out.tolist() == [3, 2, 5] and out.sum() == 10  # remainders .6 .6 .8: the largest first, ties by index
    assert largest_remainder(0, np.array([0.5, 0.5])).tolist() == [0, 0]


def test_partition_is_deterministic_for_a_seed(balanced):
    a = dirichlet_partition(balanced, alpha=0.5, clients=5, seed=3)
    b = dirichlet_partition(balanced, alpha=0.5, clients=5, seed=3)
    c = dirichlet_partition(balanced, alpha=0.5, clients=5, seed=4)
    for x, y in zip(a.clients, b.clients):
        for s in SPLITS:
            assert torch.equal(x.split(s).images, y.split(s).images) and torch.equal(x.split(s).labels, y.split(s).labels)
    assert not np.array_equal(counts(a, "train"), counts(c, "train"))
    assert [cl.name for cl in a.clients] == ["P0", "P1", "P2", "P3", "P4"]


def test_every_image_lands_in_exactly_one_client(balanced):
    out = dirichlet_partition(balanced, alpha=0.3, clients=4, seed=0, min_train_images=8)
    for s in SPLITS:
        original = sorted(i for c in balanced.clients for i in image_ids(c.split(s)))
        spread = sorted(i for c in out.clients for i in image_ids(c.split(s)))
        assert spread == original  # conserved, no duplicate
        pooled = sum(c.split(s).class_counts(4) for c in balanced.clients)
        assert torch.equal(sum(c.split(s).class_counts(4) for c in out.clients), pooled)  # every class covered
        for c in out.clients:  # labels travel with their images
            lookup = {i: int(l) for cl in balanced.clients for i, l in zip(image_ids(cl.split(s)), cl.split(s).labels)}
            assert all(lookup[i] == int(l) for i, l in zip(image_ids(c.split(s)), c.split(s).labels))


def test_test_distribution_follows_the_training_one(balanced):
    out = dirichlet_partition(balanced, alpha=0.3, clients=4, seed=1, min_train_images=8)
    train, valid, test = (counts(out, s) for s in SPLITS)
    for other in (valid, test):
        # share of class c given to client k, per split: equal up to the rounding of each split
        tolerance = 1 / other.sum(0) + 1 / train.sum(0)
        assert (np.abs(train / train.sum(0) - other / other.sum(0)) <= tolerance + 1e-12).all()
    assert (train.sum(1) >= 8).all() and (valid.sum(1) >= 1).all() and (test.sum(1) >= 1).all()


def mean_max_class_share(federation):
    train = counts(federation, "train")
    return float((train.max(1) / train.sum(1)).mean())


def test_smaller_alpha_gives_more_skew(balanced):
    skew = {alpha: np.mean([mean_max_class_share(dirichlet_partition(balanced, alpha=alpha, clients=4, seed=s,
                                                                     min_train_images=4)) for s in range(5)])
            for alpha in (0.1, 1.0, 100.0)}
    assert skew[0.1] > skew[1.0] > skew[100.0]
    assert skew[100.0] < 0.35 and skew[0.1] > 0.6  # near balanced (1/4) vs dominated by one class


def test_errors_are_clear(balanced):
    with pytest.raises(ValueError, match="raise alpha or lower clients"):
        dirichlet_partition(balanced, alpha=0.05, clients=60, seed=0, max_draws=5)
    with pytest.raises(ValueError, match="alpha > 0"):
        dirichlet_partition(balanced, alpha=0.0, seed=0)
    with pytest.raises(ValueError, match="add partition: dirichlet"):
        build_federation("derm_synthetic", seed=0, image_size=16, scale=0.02, alpha=0.3)
    with pytest.raises(ValueError, match="unknown partition 'iid'"):
        build_federation("derm_synthetic", seed=0, image_size=16, scale=0.02, partition="iid", alpha=0.3)
    with pytest.raises(ValueError, match="needs alpha"):
        build_federation("derm_synthetic", seed=0, image_size=16, scale=0.02, partition="dirichlet")
    with pytest.raises(ValueError, match="classification dataset; .* is segmentation"):
        build_federation("prostate_synthetic", seed=0, image_size=16, cases=(2, 1, 1), slices_per_case=4, sites=2,
                         partition="dirichlet", alpha=1.0)


def test_build_federation_partitions_a_registered_dataset():
    options = dict(scale=0.1, partition="dirichlet", alpha=0.3, clients=3, min_train_images=8)
    fed = build_federation("derm_synthetic", seed=0, image_size=16, **options)
    original = build_federation("derm_synthetic", seed=0, image_size=16, scale=0.1)
    assert len(fed.clients) == 3 and fed.class_names == original.class_names
    for s in SPLITS:
        assert torch.equal(sum(c.split(s).class_counts(3) for c in fed.clients),
                           sum(c.split(s).class_counts(3) for c in original.clients))
    table = fed.describe()
    assert "dirichlet(alpha=0.3, seed=0)" in table and "\nP2        train" in table
    explicit = build_federation("derm_synthetic", seed=1, image_size=16, partition_seed=0, **options)
    reseeded = build_federation("derm_synthetic", seed=1, image_size=16, **options)
    assert np.array_equal(counts(explicit, "train"), counts(fed, "train"))  # partition_seed defaults to the run seed
    assert not np.array_equal(counts(reseeded, "train"), counts(fed, "train"))
    assert len(build_federation("derm_synthetic", seed=0, image_size=16, scale=0.1, partition="dirichlet",
                                alpha=5.0).clients) == 4  # clients default to the dataset's


# --------------------------------------------------------------------------- many clients: per-client Dirichlet
def test_client_dirichlet_gives_100_clients_equal_shares_of_every_image(balanced):
    fed = client_dirichlet_partition(balanced, alpha=0.1, clients=100, seed=0, min_train_images=8)
    assert [c.name for c in fed.clients] == [f"P{k}" for k in range(100)]
    for s in SPLITS:
        ids = [i for c in fed.clients for i in image_ids(c.split(s))]
        pooled = [i for c in balanced.clients for i in image_ids(c.split(s))]
        assert sorted(ids) == sorted(pooled)  # every image in exactly one client
        sizes = [len(c.split(s)) for c in fed.clients]
        assert max(sizes) - min(sizes) <= 1  # equal shares (largest remainder)
    again = client_dirichlet_partition(balanced, alpha=0.1, clients=100, seed=0, min_train_images=8)
    assert np.array_equal(counts(again, "train"), counts(fed, "train"))
    assert not np.array_equal(counts(client_dirichlet_partition(balanced, alpha=0.1, clients=100, seed=1,
                                                                min_train_images=8), "train"), counts(fed, "train"))


def test_client_dirichlet_skew_grows_as_alpha_falls_and_test_follows_train(balanced):
    def dominant_share(alpha):
        c = counts(client_dirichlet_partition(balanced, alpha=alpha, clients=20, seed=0), "train")
        return (c.max(1) / c.sum(1)).mean()
    assert dominant_share(0.1) > dominant_share(1.0) > dominant_share(100.0)
    fed = client_dirichlet_partition(balanced, alpha=0.1, clients=20, seed=0)
    train, test = counts(fed, "train"), counts(fed, "test")
    assert (train.argmax(1) == test.argmax(1)).mean() >= 0.8


def test_client_dirichlet_names_the_numbers_when_clients_would_get_too_few_images(balanced):
    with pytest.raises(ValueError, match="1200 train images .* would get 6 each, fewer than 16"):
        client_dirichlet_partition(balanced, alpha=0.1, clients=200, seed=0)
    fed = build_federation("derm_synthetic", seed=0, image_size=16, scale=0.1, partition="client_dirichlet",
                           alpha=0.1, clients=12, min_train_images=8)
    assert len(fed.clients) == 12 and "client_dirichlet(alpha=0.1, seed=0)" in fed.describe()
