"""The data model: ImageSplit / Federation validation and federation_from_datasets."""

import numpy as np
import pytest
import torch
from PIL import Image

from fedml_prr.data import ClientData, Federation, ImageSplit, federation_from_datasets


def split(labels, size=4):
    labels = torch.tensor(labels, dtype=torch.int64)
    return ImageSplit(torch.zeros(len(labels), 3, size, size, dtype=torch.uint8), labels)


def client(name, train=(0, 1), valid=(0,), test=(1,), size=4):
    return ClientData(name, split(train, size), split(valid, size), split(test, size))


def test_image_split_rejects_bad_tensors():
    with pytest.raises(ValueError, match="uint8"):
        ImageSplit(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        ImageSplit(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="int64"):
        ImageSplit(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        ImageSplit(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


def test_class_counts_and_to():
    s = split([2, 0, 2, 2])
    assert s.class_counts(4).tolist() == [1, 0, 3, 0]
    assert len(s) == 4
    moved = s.to("cpu")
    assert torch.equal(moved.labels, s.labels) and moved.images.device.type == "cpu"
    with pytest.raises(ValueError, match="outside"):
        s.class_counts(2)


def test_federation_properties_and_describe():
    fed = Federation("toy", ["a", "b"], [client("x"), client("y", train=(1, 1, 1))])
    assert fed.num_classes == 2 and fed.image_size == 4
    assert isinstance(fed.clients, tuple) and isinstance(fed.class_names, tuple)
    table = fed.describe()
    assert "toy" in table
    row = next(line for line in table.splitlines() if line.startswith("y") and "train" in line)
    assert row.split()[2:] == ["0", "3", "3"]


def test_federation_validation_names_the_client():
    with pytest.raises(ValueError, match="client 'y' has an empty train split"):
        Federation("toy", ["a", "b"], [client("x"), client("y", train=())])
    with pytest.raises(ValueError, match="client 'y' test has labels in \\[0, 2\\]"):
        Federation("toy", ["a", "b"], [client("x"), client("y", test=(0, 2))])
    with pytest.raises(ValueError, match="client 'y' train images are \\(8, 8\\)"):
        Federation("toy", ["a", "b"], [client("x"), client("y", size=8)])
    with pytest.raises(ValueError, match="unique"):
        Federation("toy", ["a", "b"], [client("x"), client("x")])
    with pytest.raises(ValueError, match="no clients"):
        Federation("toy", ["a", "b"], [])


def rgb(value, h=6, w=6):
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_federation_from_datasets_round_trip():
    pil = Image.fromarray(rgb(10))
    uint8_tensor = torch.from_numpy(rgb(200)).permute(2, 0, 1)
    float_tensor = torch.full((3, 6, 6), 0.5)
    clients = {
        "h2": {"train": [(pil, 1), (rgb(30), 0)], "valid": [(uint8_tensor, 1)], "test": [(float_tensor, 0)]},
        "h1": {"train": [(rgb(50), 0)], "valid": [], "test": []},
    }
    fed = federation_from_datasets(clients, ["neg", "pos"], image_size=6, name="mine")
    assert [c.name for c in fed.clients] == ["h2", "h1"] and fed.name == "mine"
    h2 = fed.clients[0]
    assert h2.train.labels.tolist() == [1, 0]
    assert h2.train.images[:, 0, 0, 0].tolist() == [10, 30]
    assert h2.valid.images[0, 0, 0, 0] == 200 and h2.test.images[0, 0, 0, 0] == 128
    assert len(fed.clients[1].valid) == 0


def test_federation_from_datasets_resizes():
    image = np.zeros((20, 10, 3), dtype=np.uint8)
    image[:, :5] = 255
    fed = federation_from_datasets({"c": {"train": [(image, 0)], "valid": [], "test": []}}, ["a"], image_size=8)
    out = fed.clients[0].train.images
    assert out.shape == (1, 3, 8, 8) and out.dtype == torch.uint8
    assert out[0, :, :, :3].min() > 200 and out[0, :, :, -3:].max() < 50


@pytest.mark.parametrize(
    "splits, error, message",
    [
        ({"train": [(rgb(1), 0)], "test": []}, KeyError, "client 'c'.*missing \\['valid'\\]"),
        ({"train": [(rgb(1), 0)], "valid": [], "test": [], "extra": []}, KeyError, "unknown \\['extra'\\]"),
        ({"train": [], "valid": [], "test": []}, ValueError, "client 'c' train split is empty"),
        ({"train": [(rgb(1), 0)], "valid": [], "test": [(rgb(1), 5)]}, ValueError, "client 'c' test item 0: label 5"),
        ({"train": [(np.zeros((6, 6, 4), np.uint8), 0)], "valid": [], "test": []}, ValueError,
         "client 'c' train item 0.*H x W x 3"),
        ({"train": [(torch.zeros(1, 6, 6), 0)], "valid": [], "test": []}, ValueError, "3 colour channels"),
        ({"train": [(torch.full((3, 6, 6), 2.0), 0)], "valid": [], "test": []}, ValueError, "\\[0, 1\\]"),
    ],
)
def test_federation_from_datasets_errors(splits, error, message):
    with pytest.raises(error, match=message):
        federation_from_datasets({"c": splits}, ["a", "b"], image_size=6)
