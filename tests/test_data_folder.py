"""The ``image_folder`` loader on tiny fake layouts, and every error it promises."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from fedml_prr.data import build_federation
from fedml_prr.data.folder import load_image_folder_federation

COLOURS = {"bkl": (0, 200, 0), "mel": (200, 0, 0), "nv": (0, 0, 200)}


def write_images(folder: Path, cls: str, n: int, ext: str = ".png") -> None:
    folder = folder / cls
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (12, 10), COLOURS[cls]).save(folder / f"img{i}{ext}")


@pytest.fixture
def layout(tmp_path):
    """site_b: train nv 2 + mel 1, valid nv 1, test mel 1; site_a: train bkl 2 + nv 1 (jpg), no mel."""
    root = tmp_path / "derm"
    for split in ("train", "valid", "test"):
        (root / "site_b" / split).mkdir(parents=True)
        (root / "site_a" / split).mkdir(parents=True)
    write_images(root / "site_b" / "train", "nv", 2)
    write_images(root / "site_b" / "train", "mel", 1)
    write_images(root / "site_b" / "valid", "nv", 1)
    write_images(root / "site_b" / "test", "mel", 1)
    write_images(root / "site_a" / "train", "bkl", 2)
    write_images(root / "site_a" / "train", "nv", 1, ext=".JPG")
    write_images(root / "site_a" / "test", "bkl", 1)
    (root / "site_a" / "train" / "nv" / "notes.txt").write_text("ignored")
    (root / ".cache").mkdir()
    return root


def test_loads_clients_classes_counts_and_labels(layout):
    fed = load_image_folder_federation(layout, image_size=8)
    assert [c.name for c in fed.clients] == ["site_a", "site_b"]
    assert fed.class_names == ("bkl", "mel", "nv") and fed.image_size == 8
    site_a, site_b = fed.clients
    assert site_a.train.class_counts(3).tolist() == [2, 0, 1]
    assert site_b.train.class_counts(3).tolist() == [0, 1, 2]
    assert len(site_a.valid) == 0 and site_b.test.labels.tolist() == [1]
    for part in (site_a.train, site_b.train):
        assert part.images.shape[1:] == (3, 8, 8) and part.images.dtype == torch.uint8
        for image, label in zip(part.images, part.labels):
            expected = COLOURS[fed.class_names[label]]
            assert (image[:, 4, 4].int() - torch.tensor(expected)).abs().max() <= 3  # jpg is lossy


def test_registry_factory(layout):
    fed = build_federation("image_folder", seed=0, image_size=8, root=layout)
    assert len(fed.clients) == 2
    with pytest.raises(ValueError, match="needs the option root="):
        build_federation("image_folder", seed=0, image_size=8)


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        load_image_folder_federation(tmp_path / "nowhere", image_size=8)


def test_no_client_folders(tmp_path):
    with pytest.raises(ValueError, match="no client folders in"):
        load_image_folder_federation(tmp_path, image_size=8)


def test_missing_split_folder(layout):
    (layout / "site_a" / "valid").rmdir()
    with pytest.raises(FileNotFoundError, match="missing split folder .*site_a.valid"):
        load_image_folder_federation(layout, image_size=8)


def test_empty_client(layout):
    for path in (layout / "site_a" / "train").rglob("*.*"):
        path.unlink()
    with pytest.raises(ValueError, match="empty client: .*site_a.train has no images"):
        load_image_folder_federation(layout, image_size=8)


def test_corrupt_image_is_named(layout):
    (layout / "site_b" / "test" / "mel" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        load_image_folder_federation(layout, image_size=8)


def test_no_images_at_all(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / "only" / split / "nv").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images with extensions"):
        load_image_folder_federation(tmp_path, image_size=8)


def test_mismatched_classes(layout):
    write_images(layout / "site_a" / "valid", "mel", 1)  # fine: site_b trains on mel
    load_image_folder_federation(layout, image_size=8)
    (layout / "site_b" / "test" / "scc").mkdir()
    with pytest.raises(ValueError, match="mismatched classes: .*'scc'"):
        load_image_folder_federation(layout, image_size=8)
