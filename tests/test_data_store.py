"""The on-disk store shared by the prepared cache and the automatic segmentation cache: round trips
for both tasks, truncated and damaged files, caches written by earlier versions."""

import json
import logging

import numpy as np
import pytest
import torch
from dermfake import make_isic2019

from fedml_prr.data.cache import load_cache
from fedml_prr.data.layout import prepare_layout
from fedml_prr.data.segmentation_cache import cache_folder, load_or_build
from fedml_prr.data.store import open_store, read_store_meta, write_federation_store
from fedml_prr.data.synthetic_derm import make_synthetic_dermoscopy
from fedml_prr.data.synthetic_prostate import make_synthetic_prostate

SPLITS = ("train", "valid", "test")
REBUILD = "rebuild it"


def assert_same(a, b):
    assert (a.name, a.class_names, [c.name for c in a.clients]) == (b.name, b.class_names, [c.name for c in b.clients])
    for ca, cb in zip(a.clients, b.clients):
        for split in SPLITS:
            x, y = ca.split(split), cb.split(split)
            assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)
            assert x.labels.dtype == y.labels.dtype


@pytest.mark.parametrize("make", [
    lambda: make_synthetic_prostate(seed=1, image_size=16, cases=(1, 1, 1), slices_per_case=4, sites=2),
    lambda: make_synthetic_dermoscopy(seed=1, image_size=8, scale=0.01),
], ids=["segmentation", "classification"])
def test_round_trip_of_both_tasks(tmp_path, make):
    federation = make()
    write_federation_store(tmp_path / "s", federation, {"dataset": "x"})
    meta = read_store_meta(tmp_path / "s", rebuild=REBUILD)
    assert meta["task"] == federation.task and meta["num_images"] == sum(len(c.split(s)) for c in federation.clients
                                                                         for s in SPLITS)
    assert [c["class_counts"]["train"] for c in meta["clients"]] == \
        [c.train.class_counts(federation.num_classes).tolist() for c in federation.clients]  # pixels for masks
    assert_same(open_store(tmp_path / "s", meta, rebuild=REBUILD), federation)


@pytest.fixture
def prepared(tmp_path):
    return prepare_layout("isic2019", make_isic2019(tmp_path / "isic"), tmp_path / "cache", 8)


@pytest.mark.parametrize("name", ["images.npy", "labels.npy"])
def test_a_truncated_array_names_the_file_and_how_to_rebuild(prepared, name):
    data = (prepared / name).read_bytes()
    (prepared / name).write_bytes(data[:-5])
    with pytest.raises(ValueError, match=rf"cache file .*{name} is truncated: {len(data) - 5} of {len(data)} bytes; "
                                         r"prepare it again: fedml-prr prepare isic2019 --root .* --size 8"):
        load_cache(prepared)
    (prepared / name).write_bytes(data[:20])  # inside the .npy header
    with pytest.raises(ValueError, match=rf"cache file .*{name} is truncated or damaged: .*prepare it again"):
        load_cache(prepared)
    (prepared / name).unlink()
    with pytest.raises(FileNotFoundError, match=rf"cache file .*{name} is missing; prepare it again"):
        load_cache(prepared)


def test_arrays_that_contradict_the_meta_are_an_error(prepared):
    np.save(prepared / "labels.npy", np.zeros((3, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"labels.npy: labels must be int64 .*prepare it again"):
        load_cache(prepared)


def test_a_cache_written_before_masks_were_supported_still_loads(prepared):
    expected = load_cache(prepared)
    meta = json.loads((prepared / "meta.json").read_text())
    old_keys = ("format", "version", "dataset", "image_size", "options", "class_names", "clients", "num_images",
                "source_root", "resize")  # exactly what the first cache writer wrote
    (prepared / "meta.json").write_text(json.dumps({k: meta[k] for k in old_keys}, indent=1))
    assert meta["version"] == 1 and "task" in meta
    assert_same(load_cache(prepared), expected)


def test_the_automatic_cache_is_a_store_folder_rebuilt_when_truncated(tmp_path, caplog):
    calls = []

    def build():
        calls.append(1)
        return make_synthetic_prostate(seed=2, image_size=16, cases=(1, 1, 1), slices_per_case=4, sites=2)

    key = {"loader": "test", "files": [["a", 1, 2]]}
    first = load_or_build(tmp_path, "prostate_synthetic", key, build)
    folder = cache_folder(tmp_path, "prostate_synthetic", key)
    assert sorted(p.name for p in folder.iterdir()) == ["images.npy", "labels.npy", "meta.json"]
    (tmp_path / f"{folder.name}.pt").write_bytes(b"an old single-file cache")  # never looked at
    assert_same(load_or_build(tmp_path, "prostate_synthetic", key, build), first)
    assert len(calls) == 1
    size = (folder / "images.npy").stat().st_size
    (folder / "images.npy").write_bytes((folder / "images.npy").read_bytes()[: size // 2])
    with caplog.at_level(logging.WARNING):
        again = load_or_build(tmp_path, "prostate_synthetic", key, build)
    assert len(calls) == 2 and "images.npy is truncated" in caplog.text and "rebuilding it" in caplog.text
    assert_same(again, first)
    assert (folder / "images.npy").stat().st_size == size
    assert_same(load_or_build(tmp_path, "prostate_synthetic", key, build), first)
    assert len(calls) == 2
    load_or_build(tmp_path, "prostate_synthetic", {**key, "files": [["a", 1, 3]]}, build)  # a changed file: new key
    assert len(calls) == 3
