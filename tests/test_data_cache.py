"""The prepared image cache: round trip, memory mapping, mismatch errors, ``fedml-prr prepare``,
training from a cache, the shipped dataset configs, and augmentation of cached images."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from dermfake import make_isic2019, make_prr4

from fedml_prr.api import federation_for, make_config, run
from fedml_prr.cli import main
from fedml_prr.data import build_federation
from fedml_prr.data.augment import augment_batch
from fedml_prr.data.cache import load_cache, read_cache_meta
from fedml_prr.data.layout import LAYOUTS, layout_options, prepare_layout

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "valid", "test")


def assert_same_federation(a, b):
    assert a.class_names == b.class_names and [c.name for c in a.clients] == [c.name for c in b.clients]
    for ca, cb in zip(a.clients, b.clients):
        for split in SPLITS:
            assert torch.equal(ca.split(split).images, cb.split(split).images)
            assert torch.equal(ca.split(split).labels, cb.split(split).labels)


@pytest.fixture
def isic(tmp_path):
    return make_isic2019(tmp_path / "isic")


def test_cache_round_trip_equals_decoding_from_the_layout(tmp_path, isic):
    out = prepare_layout("isic2019", isic, tmp_path / "cache", 12, valid_fraction=0.3, workers=2)
    direct = build_federation("isic2019", seed=0, image_size=12, root=isic, valid_fraction=0.3)
    cached = build_federation("isic2019", seed=5, image_size=12, cache=out)  # options come from the cache
    assert_same_federation(direct, cached)
    meta = read_cache_meta(out)
    assert meta["dataset"] == "isic2019" and meta["image_size"] == 12 and meta["version"] == 1
    assert meta["options"]["valid_fraction"] == 0.3 and meta["options"]["split"] == "reference"
    assert [c["class_counts"]["train"] for c in meta["clients"]] == \
        [c.train.class_counts(8).tolist() for c in direct.clients]
    n = sum(len(c.split(s)) for c in direct.clients for s in SPLITS)
    assert np.load(out / "images.npy", mmap_mode="r").shape == (n, 3, 12, 12)
    assert len((out / "splits.csv").read_text().splitlines()) == n + 1


def test_cache_is_memory_mapped_and_never_written(tmp_path, isic):
    out = prepare_layout("isic2019", isic, tmp_path / "cache", 8)
    before = (out / "images.npy").read_bytes()
    fed = load_cache(out)
    fed.clients[0].train.images.fill_(7)  # copy-on-write: the run's copy changes, the file does not
    assert (out / "images.npy").read_bytes() == before
    assert not torch.equal(load_cache(out).clients[0].train.images, fed.clients[0].train.images)


def test_splits_csv_of_a_cache_is_a_split_file(tmp_path):
    root = make_prr4(tmp_path / "prr")
    out = prepare_layout("derm_prr4", root, tmp_path / "cache", 8, split="lesion", split_seed=2)
    again = build_federation("derm_prr4", seed=0, image_size=8, root=root, split_file=str(out / "splits.csv"))
    assert_same_federation(load_cache(out), again)


@pytest.mark.parametrize("kwargs,message", [
    ({"name": "derm_prr4"}, r"prepared with dataset 'isic2019' \(the run asks for 'derm_prr4'\)"),
    ({"image_size": 16}, r"prepared with image size 8 \(the run asks for 16: prr_image_size\)"),
    ({"valid_fraction": 0.2}, r"prepared with option valid_fraction=0.1 \(the run asks for 0.2\)"),
    ({"splitt": "lesion"}, r"unknown option\(s\) \['splitt'\] of dataset 'isic2019'"),
])
def test_cache_mismatch_is_an_error(tmp_path, isic, kwargs, message):
    out = prepare_layout("isic2019", isic, tmp_path / "cache", 8)
    name = kwargs.pop("name", "isic2019")
    size = kwargs.pop("image_size", 8)
    with pytest.raises(ValueError, match=message):
        build_federation(name, seed=0, image_size=size, cache=out, **kwargs)
    build_federation("isic2019", seed=0, image_size=8, cache=out, valid_fraction=0.1)  # a matching option is fine


def test_cache_version_missing_and_existing_folders(tmp_path, isic):
    with pytest.raises(FileNotFoundError, match=r"no prepared cache in .*nothing \(missing meta.json\)"):
        load_cache(tmp_path / "nothing")
    out = prepare_layout("isic2019", isic, tmp_path / "cache", 8)
    with pytest.raises(FileExistsError, match="not empty; choose a new folder or pass --overwrite"):
        prepare_layout("isic2019", isic, out, 8)
    prepare_layout("isic2019", isic, out, 10, overwrite=True)
    assert read_cache_meta(out)["image_size"] == 10
    meta = json.loads((out / "meta.json").read_text())
    meta["version"] = 0
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="has format version 0, this fedml_prr reads version 1; prepare"):
        load_cache(out)


def test_cli_prepare_prints_the_counts_and_reports_errors(tmp_path, capsys):
    root = make_prr4(tmp_path / "prr")
    assert main(["prepare", "derm_prr4", "--root", str(root), "--out", str(tmp_path / "c"), "--size", "8",
                 "--option", "split=lesion", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "derm_prr4: 4 clients, 3 classes, images 8x8" in printed and "prr_dataset_options: {cache:" in printed
    assert read_cache_meta(tmp_path / "c")["options"]["split"] == "lesion"
    assert main(["prepare", "derm_prr4", "--root", str(tmp_path / "none"), "--out", str(tmp_path / "d"),
                 "--no-progress"]) == 1
    assert "missing folder" in capsys.readouterr().err


def test_training_reads_the_cache(tmp_path):
    out = prepare_layout("derm_prr4", make_prr4(tmp_path / "prr"), tmp_path / "cache", 32)
    config = make_config(ROOT / "configs" / "prr_derm_prr4.yaml", algorithm="FedAvg", overrides={
        "comm_round": 1, "epochs": 1, "batch_size": 4, "prr_model_options": {"width": 0.25}, "prr_image_size": 32,
        "prr_dataset_options": {"cache": str(out)}, "prr_results_dir": str(tmp_path / "run"), "prr_threads": 1})
    assert_same_federation(federation_for(config), load_cache(out))
    result = run(config)
    assert list(result.summary["selected"]["clients"]) == ["A", "B", "C", "D"]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_shipped_configs_are_valid(name):
    for kind in ("prr", "compare"):
        config = make_config(ROOT / "configs" / f"{kind}_{name}.yaml")
        assert config.dataset == name and config.options.image_size == 128
        options = dict(config.options.dataset_options)
        assert "cache" in options
        layout_options(name, {k: v for k, v in options.items() if k not in ("root", "cache", "workers")})


def test_augmentation_of_cached_images_is_seeded(tmp_path, isic):
    images = load_cache(prepare_layout("isic2019", isic, tmp_path / "cache", 16)).clients[0].train.images
    same = [augment_batch(images, torch.Generator().manual_seed(11)) for _ in range(2)]
    assert torch.equal(same[0], same[1])
    assert torch.equal(same[0], augment_batch(images.clone(), torch.Generator().manual_seed(11)))
    assert not torch.equal(same[0], augment_batch(images, torch.Generator().manual_seed(12)))
